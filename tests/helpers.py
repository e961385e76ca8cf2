"""Tiny models with each task head and tiny data for each task, shared by the compress and export tests."""

from __future__ import annotations

import json

from tinyship.runtime.data import DataConfig

WORDS = ["alice", "visited", "paris", "with", "bob", "in", "june", "tinyship", "ships", "models"]
TAGS = {"alice": "PER", "bob": "PER", "paris": "LOC"}
TAG_NAMES = ["LOC", "O", "PER"]


def tiny(model_class, path, tokenizer_dir, **config):
    """A randomly initialised 4-layer, 32-wide BERT with the given head class and MiniLM's tokenizer, saved to path."""
    import torch
    from transformers import AutoTokenizer, BertConfig

    torch.manual_seed(0)
    shape = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=128)
    model_class(BertConfig(**shape, **config)).save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return path


def tiny_tagger(path, tokenizer_dir):
    from transformers import BertForTokenClassification

    return tiny(BertForTokenClassification, path, tokenizer_dir, num_labels=len(TAG_NAMES),
                id2label=dict(enumerate(TAG_NAMES)), label2id={n: i for i, n in enumerate(TAG_NAMES)})


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def token_data(directory) -> DataConfig:
    """60 sentences of WORDS, tagged PER, LOC or O, as JSONL."""
    rows = [{"tokens": [WORDS[(i + k) % len(WORDS)] for k in range(3 + i % 5)]} for i in range(60)]
    for row in rows:
        row["tags"] = [TAGS.get(w, "O") for w in row["tokens"]]
    return DataConfig(train_file=write_jsonl(directory / "ner.jsonl", rows), text_column="tokens", label_column="tags")


def squad_rows(count):
    rows = []
    for i in range(count):
        name = WORDS[i % len(WORDS)]
        context = f"in the year {1900 + i} {name} wrote a long letter about the weather and the sea."
        rows.append({"question": f"who wrote in {1900 + i}?", "context": context,
                     "answers": {"text": [name], "answer_start": [context.index(name)]}})
    return rows


def squad_data(directory, count=40, **kwargs) -> DataConfig:
    return DataConfig(train_file=write_jsonl(directory / "qa.jsonl", squad_rows(count)), text_column="question",
                      text_pair_column="context", label_column="answers", **kwargs)
