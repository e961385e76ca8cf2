"""Text classification with onnxruntime and tokenizers alone: texts in, labels and probabilities out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from tinyship.runtime.errors import TinyshipError

PAD_TOKENS = ("[PAD]", "<pad>")


class TextClassifier:
    """Labels and probabilities for texts or (text, pair) tuples.

    Inputs are tokenized in one call, sorted by length and run in batches padded to their
    longest member, then returned in input order. Longer inputs are truncated to max_length.
    disabled_optimizers: onnxruntime load-time fusions to skip (a bundle's manifest names those export
    measured slower on its machine).
    """

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        labels: list[str],
        max_length: int = 128,
        threads: int | None = None,
        batch_size: int = 32,
        disabled_optimizers: list[str] | tuple = (),
    ):
        if batch_size < 1:
            raise TinyshipError(f"batch_size {batch_size}: give a positive number of inputs per batch")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"],
                                                disabled_optimizers=list(disabled_optimizers))
        except Exception as e:  # onnxruntime raises its own untyped errors for unreadable models
            raise TinyshipError(f"cannot load {model_path}: {e}") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer, self.pad_id = load_tokenizer(tokenizer_path, max_length)
        self.labels = list(labels)
        self.max_length = max_length
        self.batch_size = batch_size

    def __call__(self, inputs, top_k: int | None = 1):
        """For one input a dict, for a list a list of dicts: label, score and the top_k labels' probabilities."""
        if top_k is not None and top_k < 1:
            raise TinyshipError(f"top_k {top_k}: give a positive number of labels, or None for all")
        single = isinstance(inputs, (str, tuple))
        probs = softmax(self.logits([inputs] if single else inputs))
        results = []
        for row in probs:
            order = np.argsort(-row)[: top_k or len(self.labels)]
            results.append(
                {
                    "label": self.labels[order[0]],
                    "score": float(row[order[0]]),
                    "scores": {self.labels[i]: float(row[i]) for i in order},
                }
            )
        return results[0] if single else results

    def logits(self, inputs) -> np.ndarray:
        """The model's logits, one row per input, in input order."""
        inputs = _check_inputs(inputs)
        encodings = self.tokenizer.encode_batch(inputs)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(inputs), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            out[batch] = self._run([encodings[i] for i in batch])
        return out

    def _run(self, encodings) -> np.ndarray:
        length = max(len(e.ids) for e in encodings)
        feed = {}
        for name, field in (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids")):
            if name in self.input_names:
                array = np.zeros((len(encodings), length), dtype=np.int64)
                if name == "input_ids":
                    array[:] = self.pad_id
                for row, e in enumerate(encodings):
                    values = getattr(e, field)
                    array[row, : len(values)] = values
                feed[name] = array
        return self.session.run(None, feed)[0]


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


def _check_inputs(inputs) -> list:
    if isinstance(inputs, (str, tuple)):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise TinyshipError("inputs must be a text, a (text, pair) tuple, or a non-empty list of them")
    for i, item in enumerate(inputs):
        ok = isinstance(item, str) or (
            isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, str) for t in item)
        )
        if not ok:
            raise TinyshipError(f"input {i} is {type(item).__name__}: each input must be a str or a (str, str) tuple")
    return inputs
