import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, BertForQuestionAnswering

from helpers import squad_data, tiny
from tinyship.export import ExportConfig, export
from tinyship.runtime import QuestionAnswerer, load
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.question_answering import best_spans

CONTEXT = "in the year 1907 alice wrote a long letter about the weather and the sea, and bob read it twice in june."
QUESTIONS = ["who wrote the letter?", "when did bob read it?", "what was the letter about?"]


@pytest.fixture(scope="module")
def reader(tmp_path_factory, minilm_dir):
    work = tmp_path_factory.mktemp("reader")
    model_dir = tiny(BertForQuestionAnswering, work / "model", minilm_dir)
    bundle = export(ExportConfig(model=str(model_dir), output=str(work / "bundle"),
                                 data=squad_data(work, max_length=64), quantize="none", optimize=False))
    return model_dir, bundle


def expected_best(model_dir, question, context, max_length, max_answer_length=30):
    """The best span by the documented rule, computed from the PyTorch model on transformers' tokenization."""
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForQuestionAnswering.from_pretrained(model_dir).eval()
    encoded = tokenizer(question, context, truncation="only_second", max_length=max_length, stride=max_length // 4,
                        return_overflowing_tokens=True, return_offsets_mapping=True, return_tensors="pt", padding=True)
    best = (0.0, 0, 0)
    with torch.inference_mode():
        out = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                    token_type_ids=encoded["token_type_ids"])
    for w in range(len(encoded["input_ids"])):
        context_tokens = [k for k, s in enumerate(encoded.sequence_ids(w)) if s == 1]
        start = torch.softmax(out.start_logits[w, context_tokens], -1).numpy()
        end = torch.softmax(out.end_logits[w, context_tokens], -1).numpy()
        for a in range(len(context_tokens)):
            for b in range(a, min(a + max_answer_length, len(context_tokens))):
                if start[a] * end[b] > best[0]:
                    offsets = encoded["offset_mapping"][w]
                    best = (float(start[a] * end[b]), int(offsets[context_tokens[a]][0]),
                            int(offsets[context_tokens[b]][1]))
    return best


@pytest.mark.parametrize("max_length", [64, 24])  # 24: the context is cut into overlapping windows
def test_answers_match_the_pytorch_model(reader, max_length, tmp_path):
    model_dir, bundle = reader
    answer = load(bundle)
    if max_length != 64:
        answer = QuestionAnswerer(bundle / "model.onnx", bundle / "tokenizer.json", [], max_length=max_length)
    results = answer([(q, CONTEXT) for q in QUESTIONS])
    for question, result in zip(QUESTIONS, results):
        score, start, end = expected_best(model_dir, question, CONTEXT, max_length)
        assert (result["start"], result["end"]) == (start, end) and result["score"] == pytest.approx(score, rel=1e-3)
        assert result["answer"] == CONTEXT[start:end]
        assert result["windows"] == (1 if max_length == 64 else len(AutoTokenizer.from_pretrained(str(model_dir))(
            question, CONTEXT, truncation="only_second", max_length=max_length, stride=max_length // 4,
            return_overflowing_tokens=True)["input_ids"]))
    assert results[0]["windows"] > 1 or max_length == 64


def test_best_spans_respect_order_length_and_context():
    start = np.array([9.0, 0.0, 5.0, 0.0, 0.0])
    end = np.array([9.0, 0.0, 0.0, 0.0, 5.0])
    sequence_ids = [None, 1, 1, 1, 1]  # position 0 is not context, so its large logits never count
    offsets = [(0, 0), (0, 2), (3, 5), (6, 8), (9, 11)]
    (score, first, last), = best_spans(start, end, sequence_ids, offsets, top_k=1, max_answer_length=3)
    assert (first, last) == (3, 11) and score > 0.5
    spans = best_spans(start, end, sequence_ids, offsets, top_k=3, max_answer_length=2)
    assert all(last - first <= 8 for _, first, last in spans)  # at most two tokens
    assert best_spans(start, end, [None, 0, 0, 0, 0], offsets, 1, 3) == []


def test_top_k_answers_and_bad_inputs(reader):
    answer = load(reader[1])
    result = answer((QUESTIONS[0], CONTEXT), top_k=3)
    scores = [a["score"] for a in result["answers"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and result["score"] == scores[0]
    # 300 words leave no room at all (tokenizers raises); 46 leave less than the stride of 16 (tokenizers panics)
    for words in (300, 46):
        with pytest.raises(TinyshipError, match="the question. leaves no room for the other within 64 tokens"):
            answer((" ".join(["why"] * words), CONTEXT))
    assert answer((" ".join(["why"] * 44), CONTEXT))["windows"] > 1  # one token more room than the stride
    for bad in ["just a string", [("q", "")], [], None, [("q",)]]:
        with pytest.raises(TinyshipError, match="must be a \\(str, str\\) tuple|input 0 is empty"):
            answer(bad)
    for pair in [(json.loads(r'"who\ud800?"'), CONTEXT), (QUESTIONS[0], CONTEXT + json.loads(r'"\udfff"'))]:
        # question or context: tokenizers refuses both
        with pytest.raises(TinyshipError, match="input 1 is not valid Unicode"):
            answer([(QUESTIONS[1], CONTEXT), pair])


def test_predict_command_answers_questions(reader, capsys):
    from tinyship.runtime.cli import main

    assert main(["predict", str(reader[1]), CONTEXT, "--question", QUESTIONS[0]]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["text"] == CONTEXT and line["answer"] == CONTEXT[line["start"] : line["end"]]
    assert main(["predict", str(reader[1]), CONTEXT]) == 2
    assert "needs --question" in capsys.readouterr().err
