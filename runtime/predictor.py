"""Predictors with onnxruntime and tokenizers alone. The base class owns the session, the tokenizer and the
batching; TextClassifier turns logits into labels and probabilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from tinyship.runtime.errors import TinyshipError

PAD_TOKENS = ("[PAD]", "<pad>")
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class Predictor:
    """An onnxruntime session and its tokenizer.

    Inputs are tokenized in one call, sorted by length and run in batches padded to their longest member
    (dynamic padding), and the outputs come back in input order. Inputs longer than max_length tokens are
    truncated, and the results say so.

    threads: onnxruntime intra-op threads (default: all cores). providers: onnxruntime execution providers
    (default: CPU). optimization_level: disable, basic, extended or all (default: all).
    disabled_optimizers: load-time fusions to skip (a bundle's manifest names those export measured slower).
    """

    per_token = False  # whether the model's outputs have a row per token (trimmed to each input's length)
    pairs: bool | None = None  # inputs are (text, pair) tuples: True; texts: False; either: None
    truncation = {"strategy": "longest_first", "stride": 0}  # how inputs over max_length are cut (a manifest may say)

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        labels: list[str],
        max_length: int = 128,
        threads: int | None = None,
        batch_size: int = 32,
        disabled_optimizers: list[str] | tuple = (),
        providers: list[str] | None = None,
        optimization_level: str = "all",
        pairs: bool | None = None,
        truncation: dict | None = None,
    ):
        if batch_size < 1:
            raise TinyshipError(f"batch_size {batch_size}: give a positive number of inputs per batch")
        if optimization_level not in OPTIMIZATION_LEVELS:
            raise TinyshipError(f"optimization_level {optimization_level!r}: use one of {', '.join(OPTIMIZATION_LEVELS)}")
        options = ort.SessionOptions()
        options.graph_optimization_level = OPTIMIZATION_LEVELS[optimization_level]
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = providers or ["CPUExecutionProvider"]
        unknown = [p for p in providers if p not in ort.get_available_providers()]
        if unknown:
            raise TinyshipError(f"execution provider {unknown[0]} is not in this onnxruntime: use one of "
                                f"{', '.join(ort.get_available_providers())}")
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers,
                                                disabled_optimizers=list(disabled_optimizers))
        except Exception as e:  # onnxruntime raises its own untyped errors for unreadable models
            raise TinyshipError(f"cannot load {model_path}: {e}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer, self.pad_id = load_tokenizer(tokenizer_path, max_length)
        self.truncation = {**self.truncation, **(truncation or {})}
        try:
            self.tokenizer.enable_truncation(max_length, **self.truncation)
        except Exception as e:  # tokenizers raises bare exceptions for unknown strategies
            raise TinyshipError(f"truncation {self.truncation}: {e}") from None
        self.labels = list(labels)
        self.max_length = max_length
        self.batch_size = batch_size
        if self.pairs is None:
            self.pairs = pairs

    def check(self, inputs) -> list:
        """The inputs as a non-empty list, each a non-empty text (or pair) of the kind this model takes."""
        kinds = {None: "a str or a (str, str) tuple", True: "a (str, str) tuple", False: "a str"}
        if isinstance(inputs, (str, tuple)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise TinyshipError(f"inputs must be {kinds[self.pairs]}, or a non-empty list of them")
        for i, item in enumerate(inputs):
            is_pair = isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, str) for t in item)
            if not (isinstance(item, str) and self.pairs is not True or is_pair and self.pairs is not False):
                raise TinyshipError(f"input {i} is {type(item).__name__}: each input must be {kinds[self.pairs]}")
            if not all(t.strip() for t in (item if is_pair else (item,))):
                raise TinyshipError(f"input {i} is empty: give it some text")
        return inputs

    def _run(self, encodings: list[Encoding]) -> list[list[np.ndarray]]:
        """Each encoding's rows of every model output, in the order given."""
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        rows: list[list[np.ndarray]] = [[] for _ in encodings]
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            outputs = self.session.run(None, self._feed([encodings[i] for i in batch]))
            for k, i in enumerate(batch):
                length = len(encodings[i].ids)
                rows[i] = [output[k, :length] if self.per_token else output[k] for output in outputs]
        return rows

    def _feed(self, encodings: list[Encoding]) -> dict[str, np.ndarray]:
        length = max(len(e.ids) for e in encodings)
        feed = {}
        for name, field in (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids")):
            if name in self.input_names:
                array = np.full((len(encodings), length), self.pad_id if name == "input_ids" else 0, dtype=np.int64)
                for row, e in enumerate(encodings):
                    values = getattr(e, field)
                    array[row, : len(values)] = values
                feed[name] = array
        return feed


class TextClassifier(Predictor):
    """Labels and probabilities for texts or (text, pair) tuples. A multi-label model scores each label on its own
    (sigmoid) and also returns every label at 0.5 or above; otherwise the scores are a softmax over the labels."""

    def __init__(self, *args, multi_label: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.multi_label = multi_label

    def __call__(self, inputs, top_k: int | None = 1):
        """For one input a dict, for a list a list of dicts: label, score, the top_k labels' probabilities, and
        whether the input was truncated to max_length tokens."""
        if top_k is not None and top_k < 1:
            raise TinyshipError(f"top_k {top_k}: give a positive number of labels, or None for all")
        single = isinstance(inputs, (str, tuple))
        encodings = self._encode([inputs] if single else inputs)
        logits = np.stack([rows[0] for rows in self._run(encodings)])
        probs = 1 / (1 + np.exp(-logits)) if self.multi_label else softmax(logits)
        results = []
        for row, encoding in zip(probs, encodings):
            order = np.argsort(-row)[: top_k or len(self.labels)]
            result = {
                "label": self.labels[order[0]],
                "score": float(row[order[0]]),
                "scores": {self.labels[i]: float(row[i]) for i in order},
                "truncated": bool(encoding.overflowing),
            }
            if self.multi_label:
                result["labels"] = [self.labels[i] for i in np.argsort(-row) if row[i] >= 0.5]
            results.append(result)
        return results[0] if single else results

    def logits(self, inputs) -> np.ndarray:
        """The model's logits, one row per input, in input order."""
        return np.stack([rows[0] for rows in self._run(self._encode(inputs))])

    def _encode(self, inputs) -> list[Encoding]:
        return self.tokenizer.encode_batch(self.check(inputs))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def load_tokenizer(path: str | Path, max_length: int) -> tuple[Tokenizer, int]:
    """The tokenizer, truncating to max_length and not padding (batches are padded here), and its pad id."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable files
        raise TinyshipError(f"cannot load tokenizer {path}: {e}") from None
    padding = tokenizer.padding  # a saved tokenizer.json may pad every input to a fixed length
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    if padding:
        return tokenizer, padding["pad_id"]
    pad_ids = [tokenizer.token_to_id(t) for t in PAD_TOKENS]
    return tokenizer, next((i for i in pad_ids if i is not None), 0)
