import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.runtime import TextClassifier, load
from tinyship.runtime.errors import TinyshipError

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
            enc = tokenizer(first[i], second[i] if second else None, truncation=True, max_length=max_length, return_tensors="pt")
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
        np.testing.assert_allclose(load(fp32_bundle, optimization_level=level).logits(TEXTS), load(fp32_bundle).logits(TEXTS),
                                   atol=1e-5)


@pytest.mark.parametrize("bad", [[], None, [1, "a"], ["a", None], [("a",)], 3.5, "", ["fine", "  "]])
def test_bad_inputs_get_clear_errors(fp32_bundle, bad):
    with pytest.raises(TinyshipError, match="input"):
        load(fp32_bundle)(bad)


def test_multi_label_bundles_score_each_label_alone(fp32_bundle, tmp_path):
    import json
    import shutil

    bundle = shutil.copytree(fp32_bundle, tmp_path / "bundle")
    manifest = json.loads((bundle / "tinyship.json").read_text())
    (bundle / "tinyship.json").write_text(json.dumps({**manifest, "multi_label": True}))
    classify = load(bundle)
    logits = classify.logits(TEXTS)
    for row, result in zip(logits, classify(TEXTS, top_k=None)):
        sigmoid = 1 / (1 + np.exp(-row))
        assert [result["scores"][name] for name in ("negative", "positive")] == pytest.approx(sigmoid.tolist(), abs=1e-6)
        assert result["labels"] == [name for name, p in sorted(result["scores"].items(), key=lambda kv: -kv[1]) if p >= 0.5]
