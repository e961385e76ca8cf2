import json

import numpy as np
import onnx
import pytest

from tinyship.export import ExportConfig, export
from tinyship.export.onnx_export import check_parity
from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.errors import TinyshipError

TEXTS = ["a gripping, funny and moving film", "dull", "the plot wanders and the acting is wooden", "not bad"]


@pytest.fixture(scope="module")
def int8_bundle(tiny_model_dir, small_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("int8")
    config = ExportConfig(model=str(tiny_model_dir), output=str(work / "bundle"), data=small_data,
                          candidates_dir=str(work / "candidates"))
    return export(config), work / "candidates"


def test_int8_bundle_is_u8s8_smaller_and_close_to_fp32(int8_bundle, fp32_bundle):
    bundle, candidates = int8_bundle
    manifest = read_manifest(bundle)
    assert manifest["precision"] == "int8" and manifest["quantization"] == "dynamic"
    assert set(manifest["metrics"]["candidates"]) == {"fp32", "dynamic"}
    assert all(diff <= 1e-4 for diff in manifest["metrics"]["parity_max_abs_diff"].values())
    graph = onnx.load(str(bundle / "model.onnx")).graph
    weights = {t.name: t.data_type for t in graph.initializer}
    made_by = {out: node.op_type for node in graph.node for out in node.output}
    matmuls = [node for node in graph.node if node.op_type == "MatMulInteger"]
    assert len(matmuls) >= 6 * 4  # q, k, v, output, two FFN projections in each of 4 layers
    for node in matmuls:  # u8s8: uint8 activations quantized at run time, int8 weights
        assert made_by[node.input[0]] == "DynamicQuantizeLinear"
        assert weights[node.input[1]] == onnx.TensorProto.INT8
    assert (bundle / "model.onnx").stat().st_size < 0.5 * (fp32_bundle / "model.onnx").stat().st_size
    np.testing.assert_allclose(load(bundle).logits(TEXTS), load(fp32_bundle).logits(TEXTS), atol=0.05)
    assert sorted(p.name for p in candidates.iterdir()) == ["dynamic", "fp32"]


def test_rerun_into_the_same_candidates_dir_keeps_no_stale_candidate(int8_bundle, tiny_model_dir, small_data):
    bundle, candidates = int8_bundle
    export(ExportConfig(model=str(tiny_model_dir), output=str(bundle), quantize="none", data=small_data,
                        candidates_dir=str(candidates), force=True))
    assert sorted(p.name for p in candidates.iterdir()) == ["fp32"]
    assert read_manifest(bundle)["precision"] == "fp32"


def test_dynamic_axes_take_any_batch_and_length(fp32_bundle):
    classify = load(fp32_bundle, batch_size=8)
    for batch in (1, 3, 8):
        assert classify.logits([" ".join(["word"] * (5 * i + 1)) for i in range(batch)]).shape == (batch, 2)


def test_existing_bundle_is_refused_without_force(fp32_bundle, tiny_model_dir, small_data):
    before = json.loads((fp32_bundle / "tinyship.json").read_text())
    with pytest.raises(TinyshipError, match="already exists: pass --force"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(fp32_bundle), data=small_data))
    assert json.loads((fp32_bundle / "tinyship.json").read_text()) == before


def test_parity_failure_writes_no_bundle(tiny_model_dir, small_data, tmp_path):
    config = ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "bundle"), data=small_data, parity_atol=0.0)
    with pytest.raises(TinyshipError, match="ONNX logits differ from PyTorch.*the bundle was not written"):
        export(config)
    assert list(tmp_path.iterdir()) == []


def test_parity_reports_each_shape(fp32_bundle, tiny_model_dir):
    diffs = check_parity(tiny_model_dir, fp32_bundle / "model.onnx", TEXTS, max_length=64, atol=1e-4)
    assert len(diffs) == 2 and all(name.startswith(("batch1_seq", "batch3_padded_seq")) for name in diffs)


def test_bad_inputs(tiny_model_dir, small_data, tmp_path):
    with pytest.raises(TinyshipError, match="unknown quantize 'int4'"):
        export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), quantize="int4"))
    (tmp_path / "no_tokenizer").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "no_tokenizer" / name).write_bytes((tiny_model_dir / name).read_bytes())
    with pytest.raises(TinyshipError, match="has no tokenizer.json"):
        export(ExportConfig(model=str(tmp_path / "no_tokenizer"), output=str(tmp_path / "b"), data=small_data))
    with pytest.raises(TinyshipError, match="no model directory"):
        export(ExportConfig(model=str(tmp_path / "nothing"), output=str(tmp_path / "b")))
    config = json.loads((tmp_path / "no_tokenizer" / "config.json").read_text())
    (tmp_path / "no_tokenizer" / "config.json").write_text(json.dumps({**config, "id2label": {"0": "a", "5": "b"}}))
    (tmp_path / "no_tokenizer" / "tokenizer.json").write_bytes((tiny_model_dir / "tokenizer.json").read_bytes())
    with pytest.raises(TinyshipError, match=r"id2label must map ids 0..1"):
        export(ExportConfig(model=str(tmp_path / "no_tokenizer"), output=str(tmp_path / "b"), data=small_data))
