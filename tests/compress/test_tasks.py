import json

import pytest
import torch
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertForQuestionAnswering,
    BertForSequenceClassification,
)

from helpers import WORDS, squad_data, tiny, tiny_tagger, write_jsonl
from helpers import token_data as make_token_data
from tinyship.compress import DistillConfig, Phase, distill
from tinyship.compress.losses import LOSSES
from tinyship.compress.tasks import TASKS
from tinyship.runtime.data import DataConfig, load_span_examples, load_token_examples
from tinyship.runtime.errors import TinyshipError

PHASES = [Phase({"hidden": 1, "attention": 1}, 1), Phase({"prediction": 1, "labels": 0.5}, 1)]


@pytest.fixture
def token_data(tmp_path):
    return make_token_data(tmp_path)


def test_token_tags_go_on_each_words_first_piece(token_data, tiny_model_dir):
    examples = load_token_examples(token_data, "train")
    assert examples.label_names == ["LOC", "O", "PER"]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    index = next(i for i, words in enumerate(examples.words) if "tinyship" in words)
    row = TASKS["token-classification"].encode(examples, tokenizer, 64)[index]
    pieces = tokenizer.convert_ids_to_tokens(row["input_ids"])
    tagged = [(p, label) for p, label in zip(pieces, row["labels"]) if label != -100]
    assert [p for p, _ in tagged] == [tokenizer.tokenize(w)[0] for w in examples.words[index]]
    assert [label for _, label in tagged] == examples.tags[index]
    assert row["labels"][0] == -100 and row["labels"][-1] == -100  # [CLS] and [SEP]
    assert len(tokenizer.tokenize("tinyship")) > 1  # so some piece above was skipped


def test_token_classification_distils(token_data, tiny_model_dir, tmp_path):
    teacher = tiny_tagger(tmp_path / "teacher", tiny_model_dir)
    out = distill(DistillConfig(min_steps=0, teacher=str(teacher), output_dir=str(tmp_path / "s"), data=token_data,
                                batch_size=16, phases=PHASES))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["task"] == "token-classification" and 0 <= stage["validation"]["eval_accuracy"] <= 1
    assert AutoModelForTokenClassification.from_pretrained(out).config.num_hidden_layers == 2


def test_answer_spans_point_at_the_answer_or_at_the_first_token(tmp_path, tiny_model_dir):
    data = squad_data(tmp_path)
    examples = load_span_examples(data, "train")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = TASKS["question-answering"].encode(examples, tokenizer, 64)
    for row, (answer, _) in zip(rows, examples.answers):
        start, end = row["labels"]
        assert tokenizer.decode(row["input_ids"][start : end + 1]) == answer
    windows = TASKS["question-answering"].encode(examples, tokenizer, 16)  # short windows: most lack the answer
    assert len(windows) > len(examples) and any(w["labels"] == [0, 0] for w in windows)
    for w in windows:
        if w["labels"] != [0, 0]:
            start, end = w["labels"]
            assert tokenizer.decode(w["input_ids"][start : end + 1]) in WORDS


def test_question_answering_distils(tmp_path, tiny_model_dir):
    data = squad_data(tmp_path, max_length=64)
    teacher = tiny(BertForQuestionAnswering, tmp_path / "teacher", tiny_model_dir)
    out = distill(DistillConfig(min_steps=0, teacher=str(teacher), output_dir=str(tmp_path / "s"), data=data,
                                batch_size=8, phases=PHASES))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["task"] == "question-answering" and 0 <= stage["validation"]["eval_exact_match"] <= 1
    assert AutoModelForQuestionAnswering.from_pretrained(out).config.num_hidden_layers == 2


def test_regression_and_sentence_pairs_distil(tmp_path, tiny_model_dir):
    lines = ["premise,hypothesis,score"] + [f"{w} is here {i},{v} is there,{(i % 5) / 4}" for i, (w, v) in
                                              enumerate(zip(WORDS * 6, reversed(WORDS * 6)))]
    (tmp_path / "sts.csv").write_text("\n".join(lines) + "\n")
    data = DataConfig(train_file=str(tmp_path / "sts.csv"), text_column="premise", text_pair_column="hypothesis",
                      label_column="score")
    teacher = tiny(BertForSequenceClassification, tmp_path / "teacher", tiny_model_dir, num_labels=1,
                   problem_type="regression")
    out = distill(DistillConfig(min_steps=0, teacher=str(teacher), output_dir=str(tmp_path / "s"), data=data,
                                batch_size=16, phases=PHASES))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["task"] == "regression" and stage["validation"]["eval_mse"] >= 0
    assert AutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 1


def test_token_and_span_prediction_losses_ignore_padding():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    real = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    expected = sum(LOSSES["prediction"](student[b, t][None], teacher[b, t][None]) for b, t in real) / len(real)
    torch.testing.assert_close(TASKS["token-classification"].prediction(student, teacher, mask, 1.0), expected)

    start_end_s, start_end_t = torch.randn(2, 4, 2), torch.randn(2, 4, 2)
    by_hand = []
    for k in (0, 1):
        for b, n in ((0, 3), (1, 2)):
            by_hand.append(LOSSES["prediction"](start_end_s[b, :n, k][None], start_end_t[b, :n, k][None]))
    expected = (sum(by_hand[:2]) / 2 + sum(by_hand[2:]) / 2) / 2
    torch.testing.assert_close(TASKS["question-answering"].prediction(start_end_s, start_end_t, mask, 1.0), expected)


def test_bad_task_data_is_named(tmp_path):
    rows = [{"tokens": ["a", "b"], "tags": ["O"]}]
    data = DataConfig(train_file=write_jsonl(tmp_path / "bad.jsonl", rows), validation_file=str(tmp_path / "bad.jsonl"),
                      text_column="tokens", label_column="tags")
    with pytest.raises(TinyshipError, match="line 1: 'tokens' and 'tags' must be lists of equal"):
        load_token_examples(data, "train")
    rows = [{"q": "who?", "c": "bob wrote", "a": {"text": ["bob"], "answer_start": [3]}}]
    data = DataConfig(train_file=write_jsonl(tmp_path / "qa.jsonl", rows), validation_file=str(tmp_path / "qa.jsonl"),
                      text_column="q", text_pair_column="c", label_column="a")
    with pytest.raises(TinyshipError, match="answer 'bob' is not at character 3"):
        load_span_examples(data, "train")
    with pytest.raises(TinyshipError, match="token classification needs your own JSONL data"):
        load_token_examples(DataConfig(), "train")


def test_class_metrics_on_hand_made_predictions():
    from tinyship.compress.tasks import class_metrics, macro_f1

    labels = [0, 0, 0, 0, 0, 0, 1, 1, 2, 2]
    predicted = [0, 0, 0, 0, 1, 2, 1, 0, 2, 2]
    # F1 per class, 2TP / (predicted + true): 0: 8/11, 1: 2/4, 2: 4/5; always 0: 12/16, 0, 0
    assert class_metrics(predicted, labels) == {
        "accuracy": pytest.approx(0.7), "macro_f1": pytest.approx((8 / 11 + 0.5 + 0.8) / 3),
        "majority_baseline": pytest.approx(0.6), "majority_macro_f1": pytest.approx(0.75 / 3), "majority_label": 0,
        "examples": 10,
    }
    assert macro_f1([1, 1], [1, 1]) == 1.0 and macro_f1([0, 1], [1, 0]) == 0.0
    assert macro_f1([0, 0, 3], [0, 0, 0]) == pytest.approx((2 * 2 / 5 + 0) / 2)  # a class only predicted counts too


def test_token_metrics_count_tagged_tokens_only_and_qa_has_no_classes():
    import numpy as np

    from tinyship.compress.tasks import TASKS, summarize

    logits = np.eye(3)[[[1, 1, 0, 2], [1, 0, 0, 0]]]  # predicted tags per token
    labels = np.array([[1, -100, 0, 0], [1, 1, -100, -100]])  # -100: a word's later pieces, padding
    metrics = summarize(TASKS["token-classification"], [(logits, labels)])
    assert metrics["examples"] == 5 and metrics["accuracy"] == pytest.approx(3 / 5)
    assert metrics["majority_baseline"] == pytest.approx(3 / 5) and metrics["majority_label"] == 1
    spans = np.zeros((2, 4, 2))
    spans[0, 1, 0] = spans[0, 2, 1] = spans[1, 0, :] = 1  # best start and end: (1, 2), then (0, 0)
    assert summarize(TASKS["question-answering"], [(spans, np.array([[1, 2], [3, 3]]))]) == {"exact_match": 0.5}


def test_a_teacher_must_beat_the_majority_class_clearly():
    from tinyship.compress.tasks import weakness

    big = {"majority_baseline": 0.6, "majority_macro_f1": 0.25, "examples": 10_000, "macro_f1": 0.5}
    assert weakness({**big, "accuracy": 0.63}) is None  # above 0.6 + 0.02 (two standard errors: 0.0098)
    assert "accuracy 0.610 against a majority-class baseline of 0.600 (clearly better is above 0.620" in weakness(
        {**big, "accuracy": 0.61})
    assert ("macro-F1 0.250 against the majority predictor's 0.250"
            in weakness({**big, "accuracy": 0.9, "macro_f1": 0.25}))
    small = {f"eval_{k}": v for k, v in {**big, "examples": 100, "accuracy": 0.69}.items()}  # as the Trainer keys them
    assert "clearly better is above 0.698" in weakness(small)  # two standard errors: 2 * sqrt(0.6 * 0.4 / 100)
    assert weakness({**small, "eval_accuracy": 0.7}) is None
    assert weakness({"eval_exact_match": 0.1}) is None  # no classes, no baseline
