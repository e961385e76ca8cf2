"""`augment`: TinyBERT's data augmentation. Each copy of an example replaces every word, with probability p,
by one of its candidates: a masked LM's predictions for single-piece words when a masked LM is given,
otherwise the word's nearest neighbours in a word-vector space.

Without a masked LM (none ships offline), the neighbours come from the input embeddings of the model being
distilled (by default the built-in MiniLM): they cover exactly the vocabulary the student reads, need no
download and no training, and are the space in which the teacher itself tells words apart. Corpus-trained
vectors would be poor on a few thousand sentences; a GloVe-style file can be given instead.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoModelForMaskedLM

from tinyship.compress.config import AugmentConfig
from tinyship.compress.finetuning import quiet_transformers
from tinyship.compress.training import default_base_model, hf_tokenizer
from tinyship.runtime.data import load_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir, refuse_existing

log = logging.getLogger(__name__)


def augment(config: AugmentConfig) -> Path:
    """Write the train split plus config.copies augmented copies of each example to config.output (JSONL with
    the data's column names and label names, ready for `tinyship distill --augmented`); returns its path."""
    out = Path(config.output)
    refuse_existing(out, config.force)
    examples = load_examples(config.data, "train")
    model_dir = check_model_dir(config.model or default_base_model())
    words_of = WordSplitter(hf_tokenizer(model_dir))
    fields = [examples.texts] + ([examples.text_pairs] if examples.text_pairs is not None else [])
    split = [[words_of(text) for text in texts] for texts in fields]
    vocabulary = sorted({w for texts in split for words in texts for w in words})
    if config.vectors:
        neighbours = vector_neighbours(*read_vectors(config.vectors), vocabulary, config.candidates)
    else:
        neighbours = embedding_neighbours(model_dir, vocabulary, config.candidates)
    predict = MaskedLMCandidates(config.mlm, config.candidates, config.batch_size) if config.mlm else None
    rng = random.Random(config.seed)
    columns = [config.data.text_column] + ([config.data.text_pair_column] if examples.text_pairs is not None else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for i in tqdm(range(len(examples)), desc="augmenting", unit="example"):
            label = examples.label_names[examples.labels[i]]
            originals = [texts[i] for texts in fields]
            options = [
                [predict(words, j) if predict and predict.single_piece(w) else neighbours.get(w, [])
                 for j, w in enumerate(words)]
                for words in (texts[i] for texts in split)
            ]
            f.write(json.dumps({**dict(zip(columns, originals)), config.data.label_column: label}) + "\n")
            for _ in range(config.copies):
                copy = [replace_words(texts[i], opts, config.probability, rng) for texts, opts in zip(split, options)]
                f.write(json.dumps({**dict(zip(columns, copy)), config.data.label_column: label}) + "\n")
    os.replace(tmp, out)
    log.info(f"{len(examples)} examples and {len(examples) * config.copies} augmented copies from {examples.source}")
    return out


def replace_words(words: list[str], options: list[list[str]], probability: float, rng: random.Random) -> str:
    """words with each word that has candidates replaced, with probability `probability`, by a random one."""
    return " ".join(rng.choice(o) if o and rng.random() < probability else w for w, o in zip(words, options))


class WordSplitter:
    """Text to words the way a BERT-style tokenizer sees them (its normalizer and pre-tokenizer)."""

    def __init__(self, tokenizer):
        backend = tokenizer.backend_tokenizer
        self.normalizer, self.pre_tokenizer = backend.normalizer, backend.pre_tokenizer

    def __call__(self, text: str) -> list[str]:
        text = self.normalizer.normalize_str(text) if self.normalizer else text
        return [w for w, _ in self.pre_tokenizer.pre_tokenize_str(text)] if self.pre_tokenizer else text.split()


def is_word(token: str) -> bool:
    return token.isalpha() and not token.startswith("##")


def embedding_neighbours(model_dir, vocabulary: list[str], count: int) -> dict[str, list[str]]:
    """The count nearest whole-word tokens (cosine, input embeddings of model_dir) of each vocabulary word that
    is a single token of the model's vocabulary."""
    tokenizer = hf_tokenizer(model_dir)
    with quiet_transformers():  # only the embeddings are read: a missing pooler or head does not matter
        weights = AutoModel.from_pretrained(model_dir).get_input_embeddings().weight.detach().numpy()
    tokens = {t: i for t, i in tokenizer.get_vocab().items() if is_word(t) and i < len(weights)}
    candidates = sorted(tokens)
    return vector_neighbours(candidates, weights[[tokens[t] for t in candidates]], vocabulary, count)


def read_vectors(path: str) -> tuple[list[str], np.ndarray]:
    """Words and vectors of a GloVe or word2vec text file (a first line of two counts is skipped)."""
    words, rows = [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                parts = line.rstrip().split(" ")
                if number == 1 and len(parts) == 2:
                    continue
                if rows and len(parts) - 1 != len(rows[0]):
                    raise TinyshipError(f"{path} line {number}: {len(parts) - 1} numbers, expected {len(rows[0])}")
                words.append(parts[0])
                rows.append(np.asarray(parts[1:], dtype=np.float32))
    except FileNotFoundError:
        raise TinyshipError(f"word vectors {path} not found: give a GloVe-style text file, "
                            "or leave --vectors out") from None
    except ValueError:
        raise TinyshipError(f"{path} line {number}: not a word followed by numbers: "
                            "give a GloVe-style text file") from None
    if not rows:
        raise TinyshipError(f"{path} holds no vectors")
    return words, np.stack(rows)


def vector_neighbours(words: list[str], vectors: np.ndarray, vocabulary: list[str], count: int,
                      block: int = 1024) -> dict[str, list[str]]:
    """The count nearest (cosine) words of each vocabulary word found among words, itself excluded."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    index = {w: i for i, w in enumerate(words)}
    known = [w for w in vocabulary if w in index]
    count = min(count, len(words) - 1)
    result = {}
    if count < 1:
        return result
    for start in range(0, len(known), block):
        chunk = known[start : start + block]
        rows = np.array([index[w] for w in chunk])
        similarity = unit[rows] @ unit.T
        similarity[np.arange(len(chunk)), rows] = -np.inf
        nearest = np.argpartition(-similarity, count - 1, axis=1)[:, :count]
        for w, row, near in zip(chunk, similarity, nearest):
            result[w] = [words[j] for j in near[np.argsort(-row[near])]]
    return result


class MaskedLMCandidates:
    """A masked LM's top predictions for a word in its sentence, the word masked (TinyBERT's candidates)."""

    def __init__(self, model_dir: str, count: int, batch_size: int):
        model_dir = check_model_dir(model_dir)
        self.tokenizer = hf_tokenizer(model_dir)
        if self.tokenizer.mask_token is None:
            raise TinyshipError(f"{model_dir}: its tokenizer has no mask token, so it is not a masked LM")
        self.model = AutoModelForMaskedLM.from_pretrained(model_dir).eval()
        self.count, self.batch_size = count, batch_size
        self.sentence: list[str] | None = None
        self.predicted: dict[int, list[str]] = {}
        self.pieces: dict[str, bool] = {}  # word -> whether it is one piece of the MLM's vocabulary
        vocab = self.tokenizer.get_vocab()
        self.not_words = torch.tensor([i for token, i in vocab.items() if not is_word(token)])

    def single_piece(self, word: str) -> bool:
        if word not in self.pieces:
            self.pieces[word] = len(self.tokenizer.tokenize(word)) == 1
        return self.pieces[word]

    def __call__(self, words: list[str], position: int) -> list[str]:
        if words is not self.sentence:  # one batched pass per sentence: every single-piece word masked in turn
            self.sentence = words
            positions = [j for j, w in enumerate(words) if self.single_piece(w)]
            self.predicted = dict(zip(positions, self.predict(words, positions)))
        return self.predicted.get(position, [])

    @torch.no_grad()
    def predict(self, words: list[str], positions: list[int]) -> list[list[str]]:
        results = []
        mask = self.tokenizer.mask_token
        for start in range(0, len(positions), self.batch_size):
            chunk = positions[start : start + self.batch_size]
            texts = [" ".join(words[:j] + [mask] + words[j + 1 :]) for j in chunk]
            batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
            logits = self.model(**batch).logits
            rows, cols = (batch["input_ids"] == self.tokenizer.mask_token_id).nonzero(as_tuple=True)
            scores = logits[rows, cols]
            scores[:, self.not_words] = -torch.inf  # only whole words replace words
            top = dict(zip(rows.tolist(), scores.topk(self.count, dim=-1).indices.tolist()))
            for k, j in enumerate(chunk):  # a mask cut off by truncation has no predictions
                results.append([w for w in self.tokenizer.convert_ids_to_tokens(top.get(k, [])) if w != words[j]])
        return results
