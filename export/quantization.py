"""Quantization recipes, by name: each a small function (fp32 .onnx, output .onnx) -> None,
tagged with the precision it produces."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

QUANTIZERS: dict[str, Callable[[Path, Path], None]] = {}


def register(name: str, precision: str):
    def add(fn):
        fn.precision = precision
        QUANTIZERS[name] = fn
        return fn

    return add


def precision_of(name: str) -> str:
    """The number format a candidate named by its quantizer (or "fp32", the unquantized model) computes in."""
    return QUANTIZERS[name].precision if name in QUANTIZERS else "fp32"


@register("dynamic", precision="int8")
def dynamic_u8s8(fp32: Path, out: Path) -> None:
    """INT8 dynamic: int8 weights, uint8 activations quantized at run time (u8s8, the fast path on x86 VNNI)."""
    import onnx
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared = out.with_name(out.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(
            prepared,
            out,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        prepared.unlink(missing_ok=True)
