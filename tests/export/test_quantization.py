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
