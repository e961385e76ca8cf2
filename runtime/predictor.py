"""Predictors with onnxruntime and tokenizers alone. The base class owns the session, the tokenizer, input checks
and encoding; run_rows() batches (the export gate scores through it too); TextClassifier turns logits into labels
and probabilities."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from tinyship.runtime.errors import TinyshipError

PAD_TOKENS = ("[PAD]", "<pad>")
BATCH_SIZE = 32  # inputs per model run, unless told otherwise
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
    batch_invariant: whether the model gives an input the same outputs whatever shares its batch. False (dynamic
    INT8, whose activation scales span the whole padded batch) runs each input alone, so that an answer never
    depends on the other inputs.
    """

    per_token = False  # whether the model's outputs have a row per token (trimmed to each input's length)
    pairs: bool | None = None  # inputs are (text, pair) tuples: True; texts: False; either: None

    def __init__(
        self,
        model_path: str | Path,
        tokenizer_path: str | Path,
        labels: list[str],
        max_length: int = 128,
        threads: int | None = None,
        batch_size: int = BATCH_SIZE,
        disabled_optimizers: list[str] | tuple = (),
        providers: list[str] | None = None,
        optimization_level: str = "all",
        pairs: bool | None = None,
        truncation: dict | None = None,
        batch_invariant: bool = True,
    ):
        if batch_size < 1:
            raise TinyshipError(f"batch_size {batch_size}: give a positive number of inputs per batch")
        self.session = open_session(model_path, threads, providers, optimization_level, disabled_optimizers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.tokenizer, self.pad_id = load_tokenizer(tokenizer_path, max_length)
        self.truncation = {**self.default_truncation(max_length), **(truncation or {})}
        try:
            self.tokenizer.enable_truncation(max_length, **self.truncation)
        except Exception as e:  # tokenizers raises bare exceptions for unknown strategies
            raise TinyshipError(f"truncation {self.truncation}: {e}") from None
        self.labels = list(labels)
        self.max_length = max_length
        self.batch_size = batch_size
        self.batch_invariant = batch_invariant
        if self.pairs is None:
            self.pairs = pairs

    @staticmethod
    def default_truncation(max_length: int) -> dict:
        """How inputs over max_length tokens are cut, in training as at serving time (a manifest may say otherwise)."""
        return {"strategy": "longest_first", "stride": 0}

    def check(self, inputs) -> list:
        """The inputs as a non-empty list, each a non-empty text (or pair) of the kind this model takes, in valid
        Unicode. The one validation path: predictors and the server call it before anything is tokenized."""
        kinds = {None: "a str or a (str, str) tuple", True: "a (str, str) tuple", False: "a str"}
        if isinstance(inputs, (str, tuple)):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise TinyshipError(f"inputs must be {kinds[self.pairs]}, or a non-empty list of them")
        for i, item in enumerate(inputs):
            is_pair = isinstance(item, tuple) and len(item) == 2 and all(isinstance(t, str) for t in item)
            if not (isinstance(item, str) and self.pairs is not True or is_pair and self.pairs is not False):
                raise TinyshipError(f"input {i} is {type(item).__name__}: each input must be {kinds[self.pairs]}")
            for text in item if is_pair else (item,):
                if not text.strip():
                    raise TinyshipError(f"input {i} is empty: give it some text")
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as e:  # a lone surrogate (JSON "\ud800" makes one): tokenizers refuses it
                    raise TinyshipError(f"input {i} is not valid Unicode (a lone surrogate, {text[e.start]!r}, at "
                                        f"character {e.start}): send UTF-8 text, with characters outside the Basic "
                                        "Multilingual Plane as whole surrogate pairs") from None
        return inputs

    @cached_property
    def counter(self) -> Tokenizer:
        """The tokenizer without truncation, to count a text's tokens."""
        counter = Tokenizer.from_str(self.tokenizer.to_str())
        counter.no_truncation()
        return counter

    def encode(self, inputs: list) -> list[Encoding]:
        """The encodings of inputs that passed check(). A pair the truncation cannot fit (a first text, such as a
        question, that leaves no room for the rest) is a TinyshipError; tokenizers raises bare exceptions, or panics."""
        strategy = self.truncation["strategy"]
        if strategy in ("only_first", "only_second") and inputs and isinstance(inputs[0], tuple):
            # tokenizers panics (a Rust backtrace on stderr) when the text it keeps whole leaves no more room than the
            # stride for the one it cuts
            kept, which = (0, "first text (the question)") if strategy == "only_second" else (1, "second text")
            room = self.max_length - self.tokenizer.num_special_tokens_to_add(True) - self.truncation["stride"]
            counts = self.counter.encode_batch([pair[kept] for pair in inputs], add_special_tokens=False)
            for i, count in enumerate(counts):
                if len(count.ids) >= room:
                    raise TinyshipError(f"input {i}'s {which} leaves no room for the other within {self.max_length} "
                                        f"tokens: shorten it to under {room} tokens")
        try:
            return self.tokenizer.encode_batch(inputs)
        except BaseException as e:  # a bare Exception, or pyo3's PanicException, which is a BaseException
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            raise TinyshipError(f"an input cannot be cut to {self.max_length} tokens with truncation {self.truncation} "
                                f"({e}): shorten its first text") from None

    def _run(self, encodings: list[Encoding]) -> list[list[np.ndarray]]:
        """Each encoding's rows of every model output, in the order given; one encoding per run unless the model is
        batch-invariant."""
        rows = [{"input_ids": e.ids, "attention_mask": e.attention_mask, "token_type_ids": e.type_ids}
                for e in encodings]
        return run_rows(self.session, rows, self.pad_id, self.batch_size if self.batch_invariant else 1, self.per_token)


class SequencePredictor(Predictor):
    """A predictor whose model's first output has one row per input (classification, regression)."""

    def _first_output(self, inputs) -> tuple[list[Encoding], np.ndarray]:
        """The checked inputs' encodings, and the model's first output for them, a row per input in input order."""
        encodings = self.encode(self.check(inputs))
        return encodings, np.stack([rows[0] for rows in self._run(encodings)])


class TextClassifier(SequencePredictor):
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
        encodings, logits = self._first_output(inputs)
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
        return self._first_output(inputs)[1]


class TextRegressor(SequencePredictor):
    """A number for each text or (text, pair) tuple: the model's single output."""

    def __call__(self, inputs):
        """For one input a dict, for a list a list of dicts: score, and whether the input was truncated."""
        single = isinstance(inputs, (str, tuple))
        encodings, scores = self._first_output(inputs)
        results = [{"score": float(score[0]), "truncated": bool(encoding.overflowing)}
                   for score, encoding in zip(scores, encodings)]
        return results[0] if single else results


def open_session(model_path: str | Path, threads: int | None = None, providers: list[str] | None = None,
                 optimization_level: str = "all", disabled_optimizers: list[str] | tuple = ()) -> ort.InferenceSession:
    """An onnxruntime session on the model (CPU unless providers say otherwise), or a TinyshipError saying why not."""
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
        return ort.InferenceSession(str(model_path), options, providers=providers,
                                    disabled_optimizers=list(disabled_optimizers))
    except Exception as e:  # onnxruntime raises its own untyped errors for unreadable models
        raise TinyshipError(f"cannot load {model_path}: {e}") from None


def run_rows(session: ort.InferenceSession, rows: list[dict], pad_id: int, batch_size: int,
             per_token: bool) -> list[list[np.ndarray]]:
    """Each row's part of every model output, in the order given. Rows (model input name -> ids) run batch_size
    at a time, sorted by length and padded to each batch's longest; per-token outputs are cut to the row's length.
    The runtime and export's accuracy gate both run models through here, so the gate measures what is served."""
    names = [i.name for i in session.get_inputs()]
    order = np.argsort([len(row["input_ids"]) for row in rows], kind="stable")
    results: list[list[np.ndarray]] = [[] for _ in rows]
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        outputs = session.run(None, pad([rows[i] for i in batch], names, pad_id))
        for k, i in enumerate(batch):
            length = len(rows[i]["input_ids"])
            results[i] = [output[k, :length] if per_token else output[k] for output in outputs]
    return results


def pad(rows: list[dict], names: list[str], pad_id: int) -> dict[str, np.ndarray]:
    """The rows as one feed of the named inputs, padded to the longest row: pad_id in input_ids, 0 elsewhere (and
    0 throughout an input a row lacks, such as token types from a tokenizer without them)."""
    length = max(len(row["input_ids"]) for row in rows)
    feed = {}
    for name in names:
        array = np.full((len(rows), length), pad_id if name == "input_ids" else 0, dtype=np.int64)
        for k, row in enumerate(rows):
            values = row.get(name, ())
            array[k, : len(values)] = values
        feed[name] = array
    return feed


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
