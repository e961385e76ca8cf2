import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tinyship.export import ExportConfig, bundling, export
from tinyship.export.quantization import VARIANTS, Variant
from tinyship.runtime import load
from tinyship.runtime.bundle import batch_invariant, read_manifest
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.predictor import TextClassifier

TEXTS = ["a gripping, funny and moving film", "dull", "the plot wanders and the acting is wooden", "not bad"]
ALL_VARIANTS = {"fp32", "fp32-fused", "int8-dynamic", "int8-dynamic-fused", "int8-static-minmax", "int8-static-entropy",
                "int8-static-percentile", "fp16"}


@pytest.fixture(scope="module")
def auto_bundle(tiny_model_dir, small_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("auto")
    config = ExportConfig(model=str(tiny_model_dir), output=str(work / "bundle"), data=small_data, fp16=True,
                          candidates_dir=str(work / "candidates"))
    return export(config), work / "candidates"


def test_auto_measures_every_variant_and_ships_the_fastest_within_budget(auto_bundle):
    bundle, candidates = auto_bundle
    manifest = read_manifest(bundle)
    measured = manifest["metrics"]["candidates"]
    assert set(measured) == ALL_VARIANTS and sorted(p.name for p in candidates.iterdir()) == sorted(ALL_VARIANTS)
    fp32 = measured["fp32"]["accuracy"]
    for name, m in measured.items():
        assert m["passed"] == (fp32 - m["accuracy"] <= 0.01 + 1e-12)
        assert (m["size_bytes"] == (candidates / name / "model.onnx").stat().st_size
                and m["p99_ms"] >= m["median_ms"] > 0)
    winner = manifest["variant"]
    passed = [n for n in measured if measured[n]["passed"]]
    fastest = min(measured[n]["median_ms"] for n in passed)
    as_fast = [n for n in passed
               if measured[n]["median_ms"] <= (1 + manifest["metrics"]["gate"]["noise_band"]) * fastest]
    assert winner == min(as_fast, key=lambda n: (measured[n]["size_bytes"], measured[n]["median_ms"]))
    assert manifest["metrics"]["gate"]["winner"] == winner and manifest["precision"] == measured[winner]["precision"]
    assert (bundle / "model.onnx").read_bytes() == (candidates / winner / "model.onnx").read_bytes()
    assert manifest["metrics"]["validation"] == measured[winner]["accuracy"]
    assert (manifest["quantization"]["mode"] == "auto"
            and manifest["quantization"]["preset"] in ("avx512_vnni", "avx2", "arm64"))


def test_parity_is_checked_at_every_shape(auto_bundle):
    parity = read_manifest(auto_bundle[0])["metrics"]["parity_max_abs_diff"]
    expected = {f"b{b}_s{s}{p}" for b in (1, 3, 8) for s in (1, 17, 128) for p in ("", "_padded") if s > 1 or not p}
    assert set(parity) == expected  # the tiny model's maximum is 128
    assert all(0 <= diff <= 1e-4 for diff in parity.values())


def test_dynamic_int8_is_u8s8_smaller_and_close_to_fp32(auto_bundle):
    candidates = auto_bundle[1]
    graph = onnx.load(str(candidates / "int8-dynamic" / "model.onnx")).graph
    weights = {t.name: t.data_type for t in graph.initializer}
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    matmuls = [node for node in graph.node if node.op_type == "MatMulInteger"]
    assert len(matmuls) >= 6 * 4  # q, k, v, output, two FFN projections in each of 4 layers
    for node in matmuls:  # u8s8: uint8 activations quantized at run time, int8 weights
        assert made_by[node.input[0]] == "DynamicQuantizeLinear"
        assert weights[node.input[1]] == onnx.TensorProto.INT8
    fp32, int8 = (candidates / name / "model.onnx" for name in ("fp32", "int8-dynamic"))
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    tokenizer = candidates.parent / "bundle" / "tokenizer.json"
    logits = [TextClassifier(path, tokenizer, ["negative", "positive"]).logits(TEXTS) for path in (fp32, int8)]
    np.testing.assert_allclose(logits[0], logits[1], atol=0.05)


def test_static_int8_quantizes_matmul_inputs_only(auto_bundle):
    """LayerNorm, GELU, the residual and bias Adds, the embeddings and the logits read fp32 tensors."""
    graph = onnx.load(str(auto_bundle[1] / "int8-static-entropy" / "model.onnx")).graph
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    dequantized = [out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output]
    assert dequantized and {op for out in dequantized for op in consumers[out]} == {"MatMul"}
    quantized_matmuls = {node.name for node in graph.node
                         if node.op_type == "MatMul" and set(node.input) & set(dequantized)}
    assert len(quantized_matmuls) >= 8 * 4  # q, k, v, scores, context, output and two FFN projections per layer
    int8_weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 6 * 4


def test_bundle_loads_in_optimum_and_bare_onnxruntime(auto_bundle):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer

    bundle = auto_bundle[0]
    manifest = read_manifest(bundle)
    tokenizer = AutoTokenizer.from_pretrained(str(bundle))
    encoded = tokenizer(TEXTS, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    bare = session.run(None, {n: encoded[n].astype(np.int64) for n in manifest["inputs"]})[0]
    optimum = ORTModelForSequenceClassification.from_pretrained(bundle)
    np.testing.assert_allclose(optimum(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy(), bare,
                               atol=1e-5)
    if not batch_invariant(manifest):  # dynamic INT8: the runtime runs each text alone, as it was measured
        alone = [tokenizer([text], return_tensors="np") for text in TEXTS]
        bare = np.concatenate([session.run(None, {n: e[n].astype(np.int64) for n in manifest["inputs"]})[0]
                               for e in alone])
    np.testing.assert_allclose(load(bundle).logits(TEXTS), bare, atol=1e-5)


def negated(source, out, recipe):
    """A deliberately bad variant: the fp32 graph with its logits negated (every prediction flips)."""
    model = onnx.load(str(source))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{o}_raw" if o == output else o for o in node.output]
    model.graph.node.append(onnx.helper.make_node("Neg", [f"{output}_raw"], [output]))
    onnx.save(model, str(out))


def test_gate_refuses_a_bad_variant_and_says_why(tiny_model_dir, small_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(VARIANTS, "int8-negated", Variant("int8-negated", "dynamic", "int8", "fp32", negated))
    for name in [n for n in VARIANTS if n.startswith("int8-") and n != "int8-negated"]:
        monkeypatch.delitem(VARIANTS, name)
    bundle = export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=small_data,
                                 quantize="dynamic", optimize=False))
    manifest = read_manifest(bundle)
    bad = manifest["metrics"]["candidates"]["int8-negated"]
    assert bad["accuracy"] == pytest.approx(1 - manifest["metrics"]["candidates"]["fp32"]["accuracy"])
    assert not bad["passed"] and manifest["variant"] == "fp32" and manifest["precision"] == "fp32"
    assert "int8-negated (accuracy" in manifest["metrics"]["gate"]["reason"]
    assert "no quantized variant kept accuracy within the budget: shipping fp32" in capsys.readouterr().out


def test_a_variant_that_cannot_be_built_is_recorded_not_fatal(tiny_model_dir, small_data, tmp_path, monkeypatch):
    def broken(source, out, recipe):
        raise RuntimeError("no kernel for this graph\nsecond line")

    monkeypatch.setitem(VARIANTS, "int8-dynamic", Variant("int8-dynamic", "dynamic", "int8", "fp32", broken))
    bundle = export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=small_data,
                                 quantize="dynamic"))
    candidates = read_manifest(bundle)["metrics"]["candidates"]
    assert candidates["int8-dynamic"] == {"error": "not built: no kernel for this graph", "passed": False}
    assert "int8-dynamic-fused" in candidates


def test_existing_bundle_is_refused_without_force(fp32_bundle, tiny_model_dir, small_data):
    before = json.loads((fp32_bundle / "tinyship.json").read_text())
    with pytest.raises(TinyshipError, match="already exists: pass --force"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(fp32_bundle), data=small_data))
    assert json.loads((fp32_bundle / "tinyship.json").read_text()) == before


def test_parity_failure_writes_no_bundle(tiny_model_dir, small_data, tmp_path):
    config = ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "bundle"), data=small_data, parity_atol=0.0,
                          quantize="none")
    with pytest.raises(TinyshipError, match=r"ONNX outputs differ from PyTorch by up to .* at \{'b1_s1': .*"
                                            "the bundle was not written"):
        export(config)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_export_leaves_no_bundle(tiny_model_dir, small_data, tmp_path, monkeypatch):
    copies = []

    def copy_then_interrupt(source, target):
        copies.append(target)
        if len(copies) == 2:
            raise KeyboardInterrupt
        return target.write_bytes(source.read_bytes())

    monkeypatch.setattr(bundling.shutil, "copyfile", copy_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "bundle"), data=small_data,
                            quantize="none"))
    assert len(copies) == 2 and list(tmp_path.iterdir()) == []


def test_torch_exporter_passes_the_same_parity_check(tiny_model_dir, small_data, tmp_path):
    bundle = export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=small_data,
                                 quantize="none", optimize=False, exporter="torch"))
    manifest = read_manifest(bundle)
    assert max(manifest["metrics"]["parity_max_abs_diff"].values()) <= 1e-4 and manifest["outputs"] == ["logits"]


def test_bad_inputs(tiny_model_dir, small_data, tmp_path):
    with pytest.raises(TinyshipError, match="unknown quantize 'int4': use one of auto, dynamic, static, none"):
        ExportConfig(quantize="int4")
    with pytest.raises(TinyshipError, match="unknown calibration 'kl'"):
        ExportConfig(calibration=("minmax", "kl"))
    with pytest.raises(TinyshipError, match="static quantization needs at least one calibration method"):
        ExportConfig(quantize="static", calibration=())
    (tmp_path / "no_tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "no_tokenizer" / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(TinyshipError, match="has no tokenizer.json"):
        export(ExportConfig(model=str(tmp_path / "no_tokenizer"), output=str(tmp_path / "b"), data=small_data))
    with pytest.raises(TinyshipError, match="no model directory"):
        export(ExportConfig(model=str(tmp_path / "nothing"), output=str(tmp_path / "b")))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(TinyshipError, match="cannot create .*a_file.*choose another --out"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "a_file" / "b"), data=small_data))
    with pytest.raises(TinyshipError, match="is a classification model .*pass --task classification"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), task="question-answering",
                            data=small_data))
    config = json.loads((tmp_path / "no_tokenizer" / "config.json").read_text())
    (tmp_path / "no_tokenizer" / "config.json").write_text(json.dumps({**config, "id2label": {"0": "a", "5": "b"}}))
    (tmp_path / "no_tokenizer" / "tokenizer.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    with pytest.raises(TinyshipError, match=r"id2label must map ids 0..1"):
        export(ExportConfig(model=str(tmp_path / "no_tokenizer"), output=str(tmp_path / "b"), data=small_data))
    assert not (tmp_path / "b").exists()


def test_a_model_without_a_task_head_is_refused_with_what_is_supported(minilm_dir, tmp_path):
    with pytest.raises(TinyshipError, match=r"is a BertModel: tinyship exports models with a task head "
                                            r"\(\*ForSequenceClassification, \*ForTokenClassification, "
                                            r"\*ForQuestionAnswering\)"):
        export(ExportConfig(model=str(minilm_dir), output=str(tmp_path / "b")))


def test_calibration_data_must_exist_and_fit_the_task(tiny_model_dir, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    (tmp_path / "val.csv").write_text("text,label\ngood,positive\nbad,negative\n")
    data = DataConfig(train_file=str(empty), validation_file=str(tmp_path / "val.csv"), labels=("negative", "positive"))
    with pytest.raises(TinyshipError, match="empty.csv"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=data, quantize="static"))
    ner = tmp_path / "ner.jsonl"
    ner.write_text(json.dumps({"tokens": ["alice"], "tags": ["PER"]}) + "\n")
    with pytest.raises(TinyshipError, match="ner.jsonl"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"),
                            data=DataConfig(train_file=str(ner))))
    assert not (tmp_path / "b").exists()
