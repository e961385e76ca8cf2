import json

import pytest

from tinyship.runtime.data import DataConfig, load_examples, split_of
from tinyship.runtime.errors import TinyshipError


@pytest.mark.parametrize(
    "dataset, sizes",
    [("rotten_tomatoes", (6799, 873, 858)), ("imdb", (19838, 2539, 2525))],  # 25,000 reviews less duplicates
)
def test_builtin_splits_are_fixed_disjoint_and_deduplicated(dataset, sizes):
    config = DataConfig(dataset=dataset)
    splits = {s: load_examples(config, s) for s in ("train", "validation", "test")}
    # these sizes are part of the contract: results are comparable only while they never change
    assert tuple(len(e) for e in splits.values()) == sizes
    texts = [set(e.texts) for e in splits.values()]
    assert sum(len(t) for t in texts) == len(set.union(*texts))
    assert all(len(set(e.texts)) == len(e) for e in splits.values())
    assert all(split_of(t) == "test" for t in splits["test"].texts)
    assert splits["test"].label_names == ["negative", "positive"]
    assert 0.4 < sum(splits["test"].labels) / len(splits["test"]) < 0.6


def test_builtin_labels_follow_the_models_names_in_any_order():
    plain = load_examples(DataConfig(limit=20), "test")
    swapped = load_examples(DataConfig(limit=20), "test", ["positive", "negative"])
    assert swapped.texts == plain.texts and swapped.labels == [1 - label for label in plain.labels]


def test_limit_must_be_positive():
    with pytest.raises(TinyshipError, match="limit 0"):
        load_examples(DataConfig(limit=0), "train")


def test_builtin_limit_is_a_fixed_mixed_sample_with_model_label_names():
    examples = load_examples(DataConfig(limit=40), "validation", ["neg", "pos"])
    assert len(examples) == 40 and examples.label_names == ["neg", "pos"]
    assert 10 <= sum(examples.labels) <= 30  # the file lists all positives first: a head cut would be one label
    assert load_examples(DataConfig(limit=40), "validation").texts == examples.texts
    with pytest.raises(TinyshipError, match="3 labels"):
        load_examples(DataConfig(), "test", ["a", "b", "c"])


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_user_csv_tsv_jsonl_with_custom_columns_and_pairs(tmp_path):
    csv_file = write(tmp_path / "d.csv", "sentence,other,y\n\"hi, there\",b,pos\nbye,c,neg\n")
    tsv_file = write(tmp_path / "d.tsv", "sentence\tother\ty\nhi\tb\tpos\n")
    jsonl_file = write(tmp_path / "d.jsonl", json.dumps({"sentence": "hi", "other": "b", "y": "neg"}) + "\n\n")
    columns = dict(text_column="sentence", text_pair_column="other", label_column="y")
    train = load_examples(DataConfig(train_file=csv_file, validation_file=tsv_file, test_file=jsonl_file, **columns),
                          "train")
    assert train.texts == ["hi, there", "bye"] and train.text_pairs == ["b", "c"]
    assert train.label_names == ["neg", "pos"] and train.labels == [1, 0]
    assert train.inputs() == [("hi, there", "b"), ("bye", "c")]
    test = load_examples(DataConfig(train_file=csv_file, validation_file=tsv_file, test_file=jsonl_file, **columns),
                         "test")
    assert test.texts == ["hi"] and test.labels == [0]


def test_test_file_without_validation_file(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(50)))
    test = write(tmp_path / "test.csv", "text,label\nx,1\n")
    examples = load_examples(DataConfig(train_file=train, test_file=test), "test")
    assert examples.texts == ["x"] and examples.source == test


def test_jsonl_text_may_hold_unicode_line_separators(tmp_path):
    path = write(tmp_path / "d.jsonl", json.dumps({"text": "a\u2028b", "label": "1"}, ensure_ascii=False) + "\n")
    assert load_examples(DataConfig(train_file=path, validation_file=path), "validation").texts == ["a\u2028b"]


def test_validation_held_out_from_train_file(tmp_path):
    rows = "".join(f"text number {i},{i % 2}\n" for i in range(200))
    config = DataConfig(train_file=write(tmp_path / "d.csv", "text,label\n" + rows))
    train, validation = load_examples(config, "train"), load_examples(config, "validation")
    assert len(train) + len(validation) == 200 and not set(train.texts) & set(validation.texts)
    assert 8 <= len(validation) <= 35
    assert load_examples(config, "test").texts == validation.texts
    assert "held-out" in validation.source


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "not found"),
        ("d.csv", "words,label\nhi,1\n", "no column 'text'.*--text-column"),
        ("d.csv", "text,label\n", "holds no examples"),
        ("d.csv", "text,label\nhi,\n", "line 2: empty 'label'"),
        ("d.jsonl", '{"text": "a", "label": "1"}\nnot json\n', "line 2: not valid JSON"),
        ("d.jsonl", '{"text": "a"}\n', "line 1: no 'label' field"),
        ("d.parquet", "", "unknown file type"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(TinyshipError, match=message):
        load_examples(DataConfig(train_file=str(path), validation_file=str(path)), "train")


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\nfine,1\ncaf\xe9,0\n")
    with pytest.raises(TinyshipError, match=r"d.csv line 3: byte 0xe9 is not UTF-8"):
        load_examples(DataConfig(train_file=str(path)), "train")


def test_label_outside_the_label_set_names_file_and_line(tmp_path):
    train = write(tmp_path / "train.csv", "text,label\na,pos\nb,neg\n")
    test = write(tmp_path / "test.csv", "text,label\nc,pos\nd,neutral\n")
    config = DataConfig(train_file=train, validation_file=train, test_file=test)
    with pytest.raises(TinyshipError,
                       match=r"test.csv line 3: label 'neutral' is not in the label set \['neg', 'pos'\]"):
        load_examples(config, "test")


def test_unknown_builtin_and_split():
    with pytest.raises(TinyshipError, match="unknown built-in data set 'sst2'"):
        load_examples(DataConfig(dataset="sst2"), "train")
    with pytest.raises(TinyshipError, match="unknown split"):
        load_examples(DataConfig(), "dev")
