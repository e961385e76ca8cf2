import onnx
import pytest

from tinyship.export import ExportConfig, export
from tinyship.export.quantization import PRESETS, VARIANTS, detect_preset, selected


def test_preset_follows_the_instruction_set():
    assert detect_preset({"avx2", "avx512f", "avx512_vnni"}, "x86_64") == "avx512_vnni"
    assert detect_preset({"avx2", "avx_vnni"}, "x86_64") == "avx512_vnni"  # VNNI on AVX2-only cores
    assert detect_preset({"avx2", "fma"}, "x86_64") == "avx2"
    assert detect_preset(set(), "aarch64") == "arm64"
    assert PRESETS["avx2"].weights == "uint8" and PRESETS["arm64"].per_channel


def test_selection_by_mode():
    everything = selected("auto", ("minmax", "entropy", "percentile"), optimize=True, fp16=True)
    assert everything == list(VARIANTS)
    assert selected("dynamic", ("minmax",), optimize=False, fp16=False) == ["int8-dynamic"]
    assert selected("static", ("entropy",), optimize=True, fp16=False) == ["fp32-fused", "int8-static-entropy"]
    assert selected("none", (), optimize=True, fp16=False) == ["fp32-fused"]
    for name in everything:  # each variant comes after the one it is built from
        source = VARIANTS[name].source
        assert source == "fp32" or everything.index(source) < everything.index(name)


@pytest.mark.parametrize("preset, weight_type, per_channel", [("avx2", onnx.TensorProto.UINT8, False),
                                                              ("arm64", onnx.TensorProto.INT8, True)])
def test_presets_shape_the_int8_graph(preset, weight_type, per_channel, tiny_model_dir, small_data, tmp_path):
    export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=small_data, quantize="dynamic",
                        optimize=False, preset=preset, candidates_dir=str(tmp_path / "c")))
    graph = onnx.load(str(tmp_path / "c" / "int8-dynamic" / "model.onnx")).graph
    initializers = {t.name: t for t in graph.initializer}
    matmuls = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert matmuls and all(initializers[n.input[1]].data_type == weight_type for n in matmuls)
    zero_points = [initializers[n.input[3]] for n in matmuls]  # one per output channel, or one for all
    assert all((len(z.dims) == 1 and z.dims[0] > 1) == per_channel for z in zero_points)


def test_static_int8_stores_the_embedding_tables_as_int8(tiny_model_dir, small_data, tmp_path):
    """Most of a small model is its word embeddings: static INT8 keeps them int8 (one scale per row), its file at
    most 40% of fp32's, its logits within 2% of fp32's largest, and every non-MatMul node still reads fp32."""
    import numpy as np
    import onnxruntime as ort

    export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "b"), data=small_data, quantize="static",
                        calibration=("minmax",), optimize=False, candidates_dir=str(tmp_path / "c")))
    fp32, static = (tmp_path / "c" / name / "model.onnx" for name in ("fp32", "int8-static-minmax"))
    assert static.stat().st_size <= 0.4 * fp32.stat().st_size
    graph = onnx.load(str(static)).graph
    initializers = {t.name: t for t in graph.initializer}
    tables = [initializers[n.input[0]] for n in graph.node if n.op_type == "Gather" and n.input[0] in initializers
              and len(initializers[n.input[0]].dims) == 2 and initializers[n.input[0]].dims[1] == 32]  # 32: hidden size
    assert len(tables) == 3 and all(t.data_type == onnx.TensorProto.INT8 for t in tables)  # word, position, token type
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert all(not dequantized & set(n.input) for n in graph.node if n.op_type != "MatMul")

    ids = np.random.default_rng(0).integers(1000, 20000, (4, 24))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    expected, got = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, feed)[0]
                     for p in (fp32, static))
    assert np.abs(got - expected).max() <= 0.02 * np.abs(expected).max()
