import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.runtime import TextClassifier, load
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.predictor import pad, run_rows

TEXTS = [
    "a gripping, funny and moving film",
    "dull",
    "the plot wanders, the acting is wooden, and the two hours feel like four",
    "not bad at all",
    "an absolute triumph of style over substance , and i loved every minute of it",
]


def torch_logits(model_dir, inputs, max_length=64):
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    first, second = zip(*inputs) if isinstance(inputs[0], tuple) else (inputs, None)
    rows = []
    with torch.inference_mode():
        for i in range(len(first)):  # one at a time: no padding on the PyTorch side
            enc = tokenizer(first[i], second[i] if second else None, truncation=True, max_length=max_length,
                            return_tensors="pt")
            rows.append(model(**enc).logits[0].numpy())
    return np.stack(rows)


def test_logits_match_pytorch_in_input_order(fp32_bundle, tiny_model_dir):
    classify = load(fp32_bundle, batch_size=2)  # several length-sorted, padded batches
    np.testing.assert_allclose(classify.logits(TEXTS), torch_logits(tiny_model_dir, TEXTS), atol=1e-4)


def test_pairs_match_pytorch(fp32_bundle, tiny_model_dir):
    pairs = [(t, TEXTS[-1 - i]) for i, t in enumerate(TEXTS)]
    with pytest.raises(TinyshipError, match="input 0 is tuple: each input must be a str"):
        load(fp32_bundle).logits(pairs)  # its manifest says it was trained on single texts
    either = TextClassifier(fp32_bundle / "model.onnx", fp32_bundle / "tokenizer.json", ["negative", "positive"])
    np.testing.assert_allclose(either.logits(pairs), torch_logits(tiny_model_dir, pairs), atol=1e-4)


def test_labels_and_probabilities(fp32_bundle):
    classify = load(fp32_bundle)
    results = classify(TEXTS, top_k=2)
    assert len(results) == len(TEXTS)
    for result in results:
        assert set(result["scores"]) == {"negative", "positive"}
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["score"] == max(result["scores"].values())
        assert result["label"] == max(result["scores"], key=result["scores"].get)
    single = classify(TEXTS[0])
    assert single["label"] == results[0]["label"] and len(single["scores"]) == 1


def test_long_input_is_truncated_not_dropped(fp32_bundle):
    classify = load(fp32_bundle)  # max_length 64
    long_text = " ".join(f"w{i % 7}" if i % 2 else "good" for i in range(5000))
    encoding = classify.tokenizer.encode(long_text)
    assert len(encoding.ids) == 64
    kept = long_text[: encoding.offsets[-2][1]]  # the text the 62 tokens between [CLS] and [SEP] cover
    assert classify.tokenizer.encode(kept).ids == encoding.ids
    np.testing.assert_allclose(classify.logits([long_text, "ok"])[0], classify.logits(kept)[0], atol=1e-6)
    flagged = classify([long_text, kept, "good " * 200_000])  # a 1 MB text too: truncated, flagged, answered
    assert [r["truncated"] for r in flagged] == [True, False, True]


def test_bad_settings_get_clear_errors(fp32_bundle):
    with pytest.raises(TinyshipError, match="top_k -1"):
        load(fp32_bundle)("text", top_k=-1)
    with pytest.raises(TinyshipError, match="batch_size 0"):
        load(fp32_bundle, batch_size=0)
    with pytest.raises(TinyshipError, match="optimization_level 'max': use one of disable, basic, extended, all"):
        load(fp32_bundle, optimization_level="max")
    with pytest.raises(TinyshipError, match="execution provider CUDAExecutionProvider is not in this onnxruntime"):
        load(fp32_bundle, providers=["CUDAExecutionProvider"])
    for level in ("disable", "all"):  # the same logits whatever the graph optimizations
        np.testing.assert_allclose(load(fp32_bundle, optimization_level=level).logits(TEXTS),
                                   load(fp32_bundle).logits(TEXTS), atol=1e-5)


@pytest.mark.parametrize("bad", [[], None, [1, "a"], ["a", None], [("a",)], 3.5, "", ["fine", "  "]])
def test_bad_inputs_get_clear_errors(fp32_bundle, bad):
    with pytest.raises(TinyshipError, match="input"):
        load(fp32_bundle)(bad)


@pytest.mark.parametrize("escaped", [r"\ud800", r"fine \udfff then", r"\udc00\ud800"])
def test_lone_surrogates_are_refused_by_check_with_the_input_index(fp32_bundle, escaped):
    """JSON escapes of lone surrogates decode to strings that tokenizers refuses with a bare TypeError."""
    classify = load(fp32_bundle)
    text = json.loads(f'"{escaped}"')
    for call in (classify, classify.logits, classify.check):
        with pytest.raises(TinyshipError, match=r"input 1 is not valid Unicode \(a lone surrogate.*send UTF-8 text"):
            call(["fine", text])
    assert classify(["fine", json.loads(r'"\ud83d\ude00"')])  # a whole pair decodes to one valid character


def test_nul_characters_are_taken_as_the_tokenizer_takes_them(fp32_bundle):
    classify = load(fp32_bundle)
    # its normalizer drops NUL
    assert classify.tokenizer.encode("a\x00b").tokens == classify.tokenizer.encode("ab").tokens
    np.testing.assert_allclose(classify.logits(["dull\x00 film", "\x00"]), classify.logits(["dull film", "\x00"]),
                               atol=1e-6)


class SumSession:
    """An onnxruntime session stand-in: one output is each row's sum of input ids, the other the ids times ten."""

    def get_inputs(self):
        return [type("Input", (), {"name": "input_ids"})()]

    def run(self, _, feed):
        ids = feed["input_ids"]
        return [ids.sum(axis=1, keepdims=True), ids * 10]


class Recording:
    """A session that keeps every feed it runs."""

    def __init__(self, session):
        self.session, self.feeds = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def run(self, names, feed):
        self.feeds.append(feed)
        return self.session.run(names, feed)


def test_pad_fills_ids_with_pad_id_and_missing_inputs_with_zeros():
    rows = [{"input_ids": [1, 1, 1], "attention_mask": [1, 1, 1]}, {"input_ids": [1], "attention_mask": [1]}]
    feed = pad(rows, ["input_ids", "attention_mask", "token_type_ids"], pad_id=7)
    assert (feed["input_ids"].tolist() == [[1, 1, 1], [1, 7, 7]]
            and feed["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]])
    assert feed["token_type_ids"].tolist() == [[0, 0, 0], [0, 0, 0]]  # rows without token types get zeros


def test_run_rows_sorts_batches_pads_and_returns_rows_in_input_order():
    rows = [{"input_ids": [1] * n} for n in (5, 2, 9, 3)]
    session = Recording(SumSession())
    results = run_rows(session, rows, pad_id=0, batch_size=2, per_token=True)
    assert [feed["input_ids"].shape for feed in session.feeds] == [(2, 3), (2, 9)]  # (2, 3) and (5, 9) share runs
    assert [sums.tolist() for sums, _ in results] == [[5], [2], [9], [3]]
    assert [len(per_token) for _, per_token in results] == [5, 2, 9, 3]  # per-token rows cut to each input's length
    session.feeds.clear()
    run_rows(session, rows, pad_id=0, batch_size=1, per_token=False)
    assert [feed["input_ids"].shape for feed in session.feeds] == [(1, 2), (1, 3), (1, 5), (1, 9)]  # no padding


def test_a_predictor_that_is_not_batch_invariant_runs_each_input_alone(fp32_bundle):
    classify = TextClassifier(fp32_bundle / "model.onnx", fp32_bundle / "tokenizer.json", ["negative", "positive"],
                              max_length=64, batch_invariant=False)
    classify.session = Recording(classify.session)
    logits = classify.logits(TEXTS)
    assert len(classify.session.feeds) == len(TEXTS)
    assert all(f["input_ids"].shape[0] == 1 and f["attention_mask"].all() for f in classify.session.feeds)  # unpadded
    np.testing.assert_allclose(logits, load(fp32_bundle).logits(TEXTS), atol=1e-5)


@pytest.mark.parametrize("strategy, kept_whole", [("only_first", 1), ("only_second", 0)])
def test_a_pair_whose_whole_text_leaves_no_room_is_refused_without_a_panic(fp32_bundle, strategy, kept_whole, capfd):
    """tokenizers panics (a Rust backtrace on stderr) when the text it keeps leaves no more room than the stride."""
    classify = TextClassifier(fp32_bundle / "model.onnx", fp32_bundle / "tokenizer.json", ["negative", "positive"],
                              max_length=16, pairs=True, truncation={"strategy": strategy, "stride": 4})
    long, short = "word " * 9, "a fine film"  # 9 tokens: 16 - 3 special tokens - stride 4 leaves room for 8
    pair = [short, short]
    pair[kept_whole] = long
    with pytest.raises(TinyshipError, match="leaves no room for the other within 16 tokens: shorten it to under 9"):
        classify([tuple(pair)])
    pair[kept_whole] = "word " * 8
    assert classify(tuple(pair))["label"] in ("negative", "positive")  # 8 tokens leave room: the other is cut
    assert "panicked" not in capfd.readouterr().err
