"""Vocabulary pruning: keep only the word pieces a task's text uses, and the embedding rows they index.

A small student's size is mostly its word embeddings (30,522 x 384 = 11.7M of a 3-layer MiniLM's 17.4M
parameters), and a task reads a small share of them. The kept pieces are the special tokens, every single
character and its "##" continuation (so any word can still be spelled), and every piece the given texts use. The
kept rows keep their old order; the WordPiece tokenizer is rewritten with the new ids and otherwise unchanged
(normalizer, pre-tokenizer, post-processor and decoder), so text made only of kept pieces maps to the same
vectors and the same logits, and any other word splits into kept pieces (more of them) instead of [UNK].
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer

from tinyship.compress.config import VocabularyConfig, settings
from tinyship.compress.evaluation import score
from tinyship.compress.pruning import load_model
from tinyship.compress.tasks import HEADS, describe, task_of
from tinyship.compress.tinyship_pruned import ffn_widths, read_config
from tinyship.compress.training import check_output, hf_tokenizer, parameter_count, save_model
from tinyship.runtime.data import load_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir

log = logging.getLogger(__name__)

CONTINUATION = "##"  # WordPiece's continuing-subword prefix, as BERT tokenizers write it


def prune_vocabulary(config: VocabularyConfig) -> Path:
    """Keep the pieces the training texts (or config.corpus) use; write the slimmer model directory, with the share
    of validation pieces that change and (for a task model) the validation metrics before and after."""
    out = check_output(config)
    model_dir = check_model_dir(config.model)
    definition = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    _check_wordpiece(definition, model_dir)  # before transformers reads it: a BERT wrapper fails on other models
    tokenizer = hf_tokenizer(model_dir)
    model = _load(model_dir)
    task = task_of(model.config) if _has_task(model.config) else None
    texts, source = _corpus(config.corpus) if config.corpus else _texts(_examples(config, task, model, "train"))
    validation = _examples(config, task, model, "validation")
    keep = kept_ids(definition, texts, required=_config_ids(model.config).values())
    parameters, metrics = parameter_count(model), _metrics(model, tokenizer, task, validation, config)
    new_tokenizer = slice_vocabulary(model, tokenizer, keep)
    vocabulary = len(definition["model"]["vocab"])
    record = {"config": settings(config), "source": str(model_dir), "texts": source,
              "vocabulary": {"before": vocabulary, "kept": len(keep), "share": len(keep) / vocabulary},
              "parameters": {"before": parameters, "after": parameter_count(model)},
              "pieces": changed_pieces(tokenizer.backend_tokenizer, new_tokenizer.backend_tokenizer,
                                       _texts(validation)[0])}
    if task:  # "validation" as every stage records it (the pruned model's), beside the source model's
        record["validation_before"] = metrics
        record["validation"] = _metrics(model, new_tokenizer, task, validation, config)
    _summarize(record)
    save_model(model, new_tokenizer, out, record)
    log.info(f"vocabulary-pruned model written to {out}")
    return out


def _summarize(record: dict) -> None:
    """Say what was kept, the parameters before and after, the pieces that change, and the metrics before and after."""
    kept, parameters = record["vocabulary"], record["parameters"]
    log.info(f"kept {kept['kept']} of {kept['before']} word pieces ({kept['share']:.1%}) used by {record['texts']}; "
          f"parameters {parameters['before'] / 1e6:.2f}M -> {parameters['after'] / 1e6:.2f}M; "
          f"{record['pieces']['changed_rate']:.2%} of the validation pieces change")
    if "validation" in record:
        log.info(f"on validation, before: {describe(record['validation_before'])}\n"
                 f"after: {describe(record['validation'])}")


def _check_wordpiece(definition: dict, model_dir: Path) -> None:
    kind = definition["model"].get("type")
    if kind != "WordPiece":
        raise TinyshipError(f"{model_dir}'s tokenizer is {kind}: vocabulary pruning supports only WordPiece "
                            "(BERT-family) tokenizers")


def _has_task(config) -> bool:
    """Whether the model has a task head tinyship knows (else it is, e.g., a masked LM or a bare encoder)."""
    return any(a.endswith(tuple(HEADS)) for a in config.architectures or [])


def _load(model_dir: Path):
    """The model with its head: a task model (plain or structurally pruned) as tinyship loads it, any other by its
    recorded architecture."""
    config = read_config(model_dir)
    if ffn_widths(config) or _has_task(config):
        return load_model(model_dir)
    architectures = config.architectures or []
    if not architectures or not hasattr(transformers, architectures[0]):
        raise TinyshipError(f"{model_dir}/config.json names no transformers architecture: re-save the model with "
                            "save_pretrained")
    return getattr(transformers, architectures[0]).from_pretrained(model_dir).eval()


def _corpus(path: str) -> tuple[list[str], str]:
    """A text file's non-empty lines, one document each."""
    path = Path(path)
    if not path.is_file():
        raise TinyshipError(f"no corpus file at {path}: give a text file, one document per line")
    texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise TinyshipError(f"{path} holds no text: give a file with one document per line")
    return texts, str(path)


def _examples(config: VocabularyConfig, task, model, split: str):
    """One split of the data: as the model's task reads it, or as plain texts for a model without a task head."""
    if task is None:
        return load_examples(config.data, split)
    return task.load(config.data, split, [model.config.id2label[i] for i in range(model.config.num_labels)])


def _texts(examples) -> tuple[list[str], str]:
    """Every text of a split (pairs, words, questions and contexts included), and where they come from."""
    if hasattr(examples, "words"):
        texts = [" ".join(words) for words in examples.words]
    elif hasattr(examples, "questions"):
        texts = examples.questions + examples.contexts
    else:
        texts = examples.texts + (examples.text_pairs or [])
    if not texts:
        raise TinyshipError(f"{examples.source} has no texts: vocabulary pruning needs some (or give --corpus)")
    return texts, examples.source


def _metrics(model, tokenizer, task, examples, config: VocabularyConfig) -> dict | None:
    """The model's metrics on the validation examples, keyed eval_* (None without a task head)."""
    return None if task is None else score(model, tokenizer, task, examples, config.data.max_length)


def kept_ids(definition: dict, texts: list[str], required=()) -> list[int]:
    """The ids to keep, ascending: added and special tokens, the unknown token, `required` ids, every single
    character and its continuation, and every piece the texts encode to."""
    vocab = definition["model"]["vocab"]
    prefix = definition["model"].get("continuing_subword_prefix", CONTINUATION)
    keep = {token["id"] for token in definition["added_tokens"]} | {vocab[definition["model"]["unk_token"]]}
    keep |= set(required)
    keep |= {i for piece, i in vocab.items() if len(piece.removeprefix(prefix)) == 1}
    for encoding in _unpadded(json.dumps(definition)).encode_batch(texts, add_special_tokens=False):
        keep.update(encoding.ids)
    return sorted(keep)


def _unpadded(definition: str) -> Tokenizer:
    """The tokenizer of a tokenizer.json text, neither padding nor truncating: every piece of a text counts."""
    tokenizer = Tokenizer.from_str(definition)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def slice_vocabulary(model, tokenizer, keep: list[int]):
    """Cut the model's word embeddings (and a tied or untied output layer over the vocabulary) to the rows `keep`,
    in place, and return the tokenizer rewritten for the new ids. keep must hold every special token."""
    keep = sorted(set(keep))  # the kept rows stay in their old order
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    _check_wordpiece(definition, Path(tokenizer.name_or_path))
    new_id = {old: new for new, old in enumerate(keep)}
    vocab = definition["model"]["vocab"]
    special = {token["content"]: token["id"] for token in definition["added_tokens"]}
    special[definition["model"]["unk_token"]] = vocab[definition["model"]["unk_token"]]
    dropped = sorted(name for name, i in special.items() if i not in new_id)
    config_ids = _config_ids(model.config)
    dropped += [f"config.{name}" for name, i in config_ids.items() if i not in new_id]
    if dropped:
        raise TinyshipError(f"the kept pieces leave out the special token(s) {', '.join(dropped)}: keep every "
                            "special token")
    if keep[-1] >= model.get_input_embeddings().num_embeddings:
        raise TinyshipError(f"piece id {keep[-1]} is beyond the model's "
                            f"{model.get_input_embeddings().num_embeddings} embedding rows: the tokenizer does not "
                            "belong to this model")
    _slice_rows(model, keep)
    for name, old in config_ids.items():
        setattr(model.config, name, new_id[old])
    model.config.vocab_size = len(keep)
    backend = Tokenizer.from_str(json.dumps(_remap_definition(definition, new_id)))
    init = {k: v for k, v in tokenizer.init_kwargs.items()
            if k not in ("name_or_path", "added_tokens_decoder", "vocab_file", "tokenizer_file")}
    return type(tokenizer)(tokenizer_object=backend, **init)


def _config_ids(config) -> dict[str, int]:
    """The config's token ids (pad_token_id, bos_token_id, ...): they index the vocabulary too."""
    return {name: value for name, value in config.to_dict().items()
            if name.endswith("_token_id") and isinstance(value, int) and not isinstance(value, bool)}


def _slice_rows(model, keep: list[int]) -> None:
    """Keep the rows `keep` of the input embeddings and of the output layer's weight and bias, each parameter
    once: parameters shared by tying stay shared."""
    index = torch.tensor(keep)
    embeddings, output = model.get_input_embeddings(), model.get_output_embeddings()
    parameters = [embeddings.weight] + ([output.weight, output.bias] if output is not None else [])
    done = set()
    for parameter in parameters:
        if parameter is not None and id(parameter) not in done:
            parameter.data = parameter.data[index].clone()
            done.add(id(parameter))
    embeddings.num_embeddings = len(keep)
    if embeddings.padding_idx is not None:
        embeddings.padding_idx = keep.index(embeddings.padding_idx)
    if output is not None:
        output.out_features = len(keep)


def _remap_definition(definition: dict, new_id: dict[int, int]) -> dict:
    """A tokenizer.json definition for the kept pieces: the WordPiece vocab, added tokens, post-processor and padding
    with new ids; the normalizer, pre-tokenizer, decoder and truncation as they were."""
    vocab = definition["model"]["vocab"]
    definition["model"]["vocab"] = {piece: new_id[i] for piece, i in sorted(vocab.items(), key=lambda kv: kv[1])
                                    if i in new_id}
    for token in definition["added_tokens"]:
        token["id"] = new_id[token["id"]]
    if definition.get("padding"):
        definition["padding"]["pad_id"] = new_id[definition["padding"]["pad_id"]]
    if definition.get("post_processor"):
        _remap_processor(definition["post_processor"], new_id)
    return definition


def _remap_processor(processor: dict, new_id: dict[int, int]) -> None:
    kind = processor["type"]
    if kind == "TemplateProcessing":
        for token in processor["special_tokens"].values():
            token["ids"] = [new_id[i] for i in token["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for name in ("sep", "cls"):
            processor[name][1] = new_id[processor[name][1]]
    elif kind == "Sequence":
        for inner in processor["processors"]:
            _remap_processor(inner, new_id)
    elif kind != "ByteLevel":  # ByteLevel holds no ids
        raise TinyshipError(f"the tokenizer's {kind} post-processor is not supported by vocabulary pruning: use a "
                            "BERT-family (WordPiece) tokenizer")


def changed_pieces(old: Tokenizer, new: Tokenizer, texts: list[str]) -> dict:
    """How the new tokenizer splits texts compared with the old: the pieces of each word whose split changed
    (counted in the new encoding), as a share of the old encoding's pieces."""
    counts = {"texts": len(texts), "pieces_before": 0, "pieces_after": 0, "changed_pieces": 0}
    encodings = [_unpadded(t.to_str()).encode_batch(texts, add_special_tokens=False) for t in (old, new)]
    for before, after in zip(*encodings):
        counts["pieces_before"] += len(before.tokens)
        counts["pieces_after"] += len(after.tokens)
        old_words, new_words = _words(before), _words(after)
        counts["changed_pieces"] += sum(len(pieces) for word, pieces in new_words.items()
                                        if old_words.get(word) != pieces)
    counts["changed_rate"] = counts["changed_pieces"] / max(counts["pieces_before"], 1)
    return counts


def _words(encoding) -> dict[int, list[str]]:
    """Each word's pieces, by word index (the pre-tokenizer's words, the same for both tokenizers)."""
    words: dict[int, list[str]] = {}
    for word, piece in zip(encoding.word_ids, encoding.tokens):
        words.setdefault(word, []).append(piece)
    return words
