import json

import numpy as np
import pytest
from transformers import AutoTokenizer, BertConfig, BertForMaskedLM

from tinyship.compress import AugmentConfig, augment
from tinyship.compress.augmentation import read_vectors, vector_neighbours
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError

VECTORS = {"good": [1, 0.1], "great": [1, 0.2], "fine": [1, 0.3], "bad": [-1, 0.1], "awful": [-1, 0.2], "film": [0, 1]}


def test_neighbours_are_the_nearest_by_cosine():
    words, vectors = list(VECTORS), np.array(list(VECTORS.values()), dtype=np.float32)
    near = vector_neighbours(words, vectors, ["good", "awful", "unknown"], count=2)
    assert near == {"good": ["great", "fine"], "awful": ["bad", "film"]}


def write(path, text):
    path.write_text(text)
    return str(path)


def test_vector_files_are_read_and_bad_ones_named(tmp_path):
    words, vectors = read_vectors(write(tmp_path / "v.txt", "2 2\ngood 1 0.5\nbad -1 0.5\n"))  # word2vec header skipped
    assert words == ["good", "bad"] and vectors.shape == (2, 2)
    with pytest.raises(TinyshipError, match="line 2: 1 numbers, expected 2"):
        read_vectors(write(tmp_path / "w.txt", "good 1 2\nbad 1\n"))
    with pytest.raises(TinyshipError, match="not found"):
        read_vectors(str(tmp_path / "missing.txt"))


@pytest.fixture
def train_file(tmp_path):
    rows = [{"text": "Good film", "label": "pos"}, {"text": "awful film!", "label": "neg"},
            {"text": "fine", "label": "pos"}]
    return write(tmp_path / "train.jsonl", "\n".join(map(json.dumps, rows)) + "\n")


def augmented_rows(tmp_path, train_file, **settings):
    vectors = write(tmp_path / "vectors.txt", "".join(f"{w} {x} {y}\n" for w, (x, y) in VECTORS.items()))
    data = DataConfig(train_file=train_file, validation_file=train_file)
    out = augment(AugmentConfig(output=str(tmp_path / "aug.jsonl"), data=data, vectors=vectors, force=True, **settings))
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_every_word_with_candidates_is_replaced_at_probability_one(tmp_path, train_file):
    rows = augmented_rows(tmp_path, train_file, copies=3, probability=1.0, candidates=2)
    assert len(rows) == 3 * (1 + 3)
    assert rows[0] == {"text": "Good film", "label": "pos"}  # the original first, then its copies
    near = vector_neighbours(list(VECTORS), np.array(list(VECTORS.values())), list(VECTORS), 2)
    for row in rows[1:4]:
        first, second = row["text"].split()
        assert first in near["good"] and second in near["film"] and row["label"] == "pos"
    assert {r["text"].split()[-1] for r in rows[5:8]} == {"!"}  # no vector: kept
    assert all(r["label"] == "neg" for r in rows[4:8])


def test_probability_zero_copies_the_words(tmp_path, train_file):
    rows = augmented_rows(tmp_path, train_file, copies=2, probability=0.0)
    assert [r["text"] for r in rows[:3]] == ["Good film", "good film", "good film"]  # words as the model sees them


def test_a_masked_lm_gives_candidates_for_single_piece_words(tmp_path, train_file, minilm_dir):
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    BertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    tokenizer.save_pretrained(tmp_path / "mlm")
    rows = augmented_rows(tmp_path, train_file, copies=2, probability=1.0, mlm=str(tmp_path / "mlm"))
    for row in rows[1:3]:
        words = row["text"].split()
        assert len(words) == 2 and words != ["good", "film"]
        # whole words from the MLM's vocabulary
        assert all(len(tokenizer.tokenize(w)) == 1 and w.isalpha() for w in words)


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(TinyshipError, match="probability 1.5: use a value from 0 to 1"):
        AugmentConfig(probability=1.5)
    with pytest.raises(TinyshipError, match="copies and candidates must be at least 1"):
        AugmentConfig(copies=0)
