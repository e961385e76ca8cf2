"""Export of every task: parity with PyTorch at every shape, the manifest, and loading in optimum and onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, BertForQuestionAnswering, BertForSequenceClassification

from helpers import WORDS, squad_data, tiny, tiny_tagger, token_data
from tinyship.export import ExportConfig, export
from tinyship.export.onnx_export import max_positions, parity_inputs
from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.data import DataConfig


def pairs_data(directory):
    lines = ["premise,hypothesis,label"] + [f"{w} is here {i},{v} is there,{'same' if w == v else 'other'}"
                                            for i, (w, v) in enumerate(zip(WORDS * 6, WORDS[::-1] * 6))]
    (directory / "pairs.csv").write_text("\n".join(lines) + "\n")
    return DataConfig(train_file=str(directory / "pairs.csv"), text_column="premise", text_pair_column="hypothesis")


def scores_data(directory):
    lines = ["text,score"] + [f"{w} is here {i},{(i % 5) / 4}" for i, w in enumerate(WORDS * 6)]
    (directory / "scores.csv").write_text("\n".join(lines) + "\n")
    return DataConfig(train_file=str(directory / "scores.csv"), label_column="score")


TASKS = {
    # task: (model builder, data builder, manifest task, outputs, optimum class, metric)
    "pairs": (lambda p, t: tiny(BertForSequenceClassification, p, t, num_labels=2, id2label={0: "other", 1: "same"},
                                label2id={"other": 0, "same": 1}),
              pairs_data, "text-classification", ["logits"], "ORTModelForSequenceClassification", "accuracy"),
    "regression": (lambda p, t: tiny(BertForSequenceClassification, p, t, num_labels=1, problem_type="regression"),
                   scores_data, "text-regression", ["logits"], "ORTModelForSequenceClassification", "mse"),
    "token-classification": (tiny_tagger, token_data, "token-classification", ["logits"],
                             "ORTModelForTokenClassification", "accuracy"),
    "question-answering": (lambda p, t: tiny(BertForQuestionAnswering, p, t), squad_data, "question-answering",
                           ["start_logits", "end_logits"], "ORTModelForQuestionAnswering", "exact_match"),
}


@pytest.mark.parametrize("name", TASKS)
def test_every_task_exports_with_parity_and_loads_in_optimum_and_onnxruntime(name, minilm_dir, tmp_path):
    import optimum.onnxruntime

    build, data, manifest_task, outputs, optimum_class, metric = TASKS[name]
    model_dir = build(tmp_path / "model", minilm_dir)
    bundle = export(ExportConfig(model=str(model_dir), output=str(tmp_path / "bundle"), data=data(tmp_path),
                                 quantize="dynamic", optimize=False))
    manifest = read_manifest(bundle)
    assert manifest["task"] == manifest_task and manifest["outputs"] == outputs
    windows = ({"strategy": "only_second", "stride": 32} if name == "question-answering"
               else {"strategy": "longest_first", "stride": 0})
    assert manifest["truncation"] == windows and manifest["pairs"] == (name in ("pairs", "question-answering"))
    parity = manifest["metrics"]["parity_max_abs_diff"]
    assert {"b1_s1", "b3_s17_padded", "b8_s128", "b8_s128_padded"} <= set(parity) and max(parity.values()) <= 1e-4
    candidates = manifest["metrics"]["candidates"]
    assert manifest["metrics"]["metric"] == metric and candidates["int8-dynamic"][metric] >= 0
    fp32, shipped = candidates["fp32"][metric], candidates[manifest["variant"]][metric]
    assert (shipped <= fp32 + 0.01) if metric == "mse" else (shipped >= fp32 - 0.01)  # what ships is within the budget

    tokenizer = AutoTokenizer.from_pretrained(str(bundle))
    encoded = tokenizer("alice visited paris", "bob wrote", return_tensors="np")
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    bare = session.run(None, {n: encoded[n].astype(np.int64) for n in manifest["inputs"]})
    loaded = getattr(optimum.onnxruntime, optimum_class).from_pretrained(bundle)
    result = loaded(**{k: torch.from_numpy(v) for k, v in encoded.items()})
    for output, expected in zip(outputs, bare):
        np.testing.assert_allclose(result[output].numpy(), expected, atol=1e-6)
    if name == "regression":  # the runtime serves what export writes
        single = tokenizer("alice visited paris", return_tensors="np")
        expected = session.run(None, {n: single[n].astype(np.int64) for n in manifest["inputs"]})[0][0, 0]
        assert load(bundle)("alice visited paris")["score"] == pytest.approx(float(expected), abs=1e-5)


def test_parity_inputs_cover_batches_lengths_and_padding(tiny_model_dir):
    config = AutoConfig.from_pretrained(tiny_model_dir)
    shapes = parity_inputs(config, ["input_ids", "attention_mask"])
    assert shapes["b8_s128"]["input_ids"].shape == (8, 128) and shapes["b8_s128"]["attention_mask"].all()
    padded = shapes["b8_s128_padded"]["attention_mask"]
    assert padded[0].sum() == 128 and padded[-1].sum() == 64 and len(set(padded.sum(1))) == 8
    assert shapes["b1_s17_padded"]["attention_mask"].sum() == 12  # three quarters of a lone row is real
    assert "b1_s1_padded" not in shapes and set(shapes["b3_s1"]) == {"input_ids", "attention_mask"}
    assert (shapes["b1_s1"]["input_ids"] < config.vocab_size).all()


def test_models_with_offset_positions_have_a_shorter_maximum():
    assert max_positions(AutoConfig.for_model("mpnet", max_position_embeddings=514)) == 512
    assert max_positions(AutoConfig.for_model("bert", max_position_embeddings=512)) == 512


def test_architectures_optimum_lacks_go_through_torch_onnx(tiny_model_dir, small_data, tmp_path, monkeypatch, capsys):
    from tinyship.export import onnx_export
    from tinyship.runtime.errors import TinyshipError

    def unsupported(*args):
        raise ValueError("Trying to export a bert model, that is a custom or unsupported architecture")

    monkeypatch.setattr(onnx_export, "_optimum_export", unsupported)
    config = ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=small_data, quantize="none",
                          optimize=False)
    bundle = export(config)
    assert "optimum has no ONNX config for bert: exporting with torch.onnx" in capsys.readouterr().out
    assert max(read_manifest(bundle)["metrics"]["parity_max_abs_diff"].values()) <= 1e-4
    with pytest.raises(TinyshipError, match="optimum cannot export this bert model: Trying to export"):
        export(ExportConfig(**{**config.__dict__, "output": str(tmp_path / "c"), "exporter": "optimum"}))

    def untraceable(*args):
        raise RuntimeError("cannot trace this\ndetails")

    monkeypatch.setattr(onnx_export, "_torch_export", untraceable)
    with pytest.raises(TinyshipError, match=r"torch.onnx failed \(cannot trace this\) and optimum's exporter supports "
                                            r"albert, .*bert, .*mpnet, .* for classification"):
        export(ExportConfig(**{**config.__dict__, "output": str(tmp_path / "d")}))


def test_a_head_pruned_model_exports_with_parity(tiny_model_dir, small_data, tmp_path):
    """Heads removed with transformers' prune_heads: config.json records them and the exporter rebuilds the slimmer
    layers."""
    model = BertForSequenceClassification.from_pretrained(tiny_model_dir)
    model.prune_heads({0: [0, 1], 2: [3]})
    model.save_pretrained(tmp_path / "pruned")
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(tmp_path / "pruned")
    bundle = export(ExportConfig(model=str(tmp_path / "pruned"), output=str(tmp_path / "b"), data=small_data,
                                 quantize="dynamic", optimize=False))
    manifest = read_manifest(bundle)
    assert max(manifest["metrics"]["parity_max_abs_diff"].values()) <= 1e-4
    import onnx

    shapes = {t.name: list(t.dims) for t in onnx.load(str(bundle / "model.onnx")).graph.initializer}
    assert any(dims == [32, 16] or dims == [16, 32] for dims in shapes.values())  # layer 0 keeps 2 of 4 heads of 8
