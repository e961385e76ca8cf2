"""The candidate variants of an exported model, by name, and the INT8 presets per instruction set.

Each variant is a small function (source .onnx, output .onnx, Recipe) -> None that builds one candidate from
another (fp32 -> fused, fp32 -> int8, ...). Export builds the ones its config selects and the accuracy gate
picks among them. Static INT8 quantizes the inputs of MatMuls and stores the embedding tables as int8 (one scale
per row; like dynamic INT8's, dequantized after the lookup); LayerNorm, GELU, the residual and bias Adds and the
logits stay fp32, where their outliers are kept exact. QDQ has no fused Attention kernel, so static
variants start from the unfused graph; dynamic INT8 turns a fused Attention into QAttention, so it is built
from both graphs and measured.
"""

from __future__ import annotations

import io
import platform
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable

QUANTIZE_MODES = ("auto", "dynamic", "static", "none")
CALIBRATIONS = ("minmax", "entropy", "percentile")
STATIC_OPS = ["MatMul"]
STATIC_EMBEDDINGS = "int8, one scale per row, dequantized after the lookup"  # what static INT8 does to them


@dataclass(frozen=True)
class QuantPreset:
    """How INT8 is laid out for one instruction set; activations are always uint8 (signed ones take a slow path)."""

    weights: str  # "int8" or "uint8"
    per_channel: bool  # one scale per output channel: more accurate, a little larger
    why: str
    reduce_range: bool = False  # 7-bit weights, for CPUs whose 8-bit multiply-add saturates


PRESETS = {
    "avx512_vnni": QuantPreset("int8", per_channel=False, why="u8s8: VNNI multiplies uint8 by int8 without saturation"),
    "avx2": QuantPreset("uint8", per_channel=False,
                        why="u8u8: AVX2's u8s8 multiply-add (VPMADDUBSW) can saturate, u8u8 cannot"),
    "arm64": QuantPreset("int8", per_channel=True,
                         why="u8s8: as fast as u8u8 on large ARM64 cores, faster on small ones"),
}


def detect_preset(cpu_flags: Iterable[str] | None = None, machine: str | None = None) -> str:
    """The preset for this CPU (or for the given /proc/cpuinfo flags and platform.machine())."""
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if cpu_flags is None:
        from tinyship.runtime.bench import machine

        cpu_flags = machine()["flags"]
    flags = set(cpu_flags)
    return "avx512_vnni" if flags & {"avx512_vnni", "avx_vnni"} else "avx2"


@dataclass
class Recipe:
    """What the variant builders need beyond their input and output files."""

    preset: QuantPreset
    per_channel: bool
    calibration: Callable[[], object]  # -> a fresh onnxruntime CalibrationDataReader over task examples
    num_heads: int
    hidden_size: int


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # fused, dynamic, static or fp16: which config setting selects it
    precision: str
    source: str  # the variant it is built from
    build: Callable[[Path, Path, Recipe], None]
    batch_invariant: bool = True  # an input's outputs do not depend on what shares its batch (else served one per run)


VARIANTS: dict[str, Variant] = {}


def register(name: str, kind: str, precision: str, source: str = "fp32", batch_invariant: bool = True):
    def add(fn):
        VARIANTS[name] = Variant(name, kind, precision, source, fn, batch_invariant)
        return fn

    return add


def precision_of(name: str) -> str:
    """The number format a candidate computes in ("fp32" for the plain export)."""
    return VARIANTS[name].precision if name in VARIANTS else "fp32"


def batch_invariant_of(name: str) -> bool:
    """Whether a candidate gives each input the same outputs alone and in any batch (True for the plain export)."""
    return VARIANTS[name].batch_invariant if name in VARIANTS else True


def selected(quantize: str, calibration: Iterable[str], optimize: bool, fp16: bool) -> list[str]:
    """The variants an export config asks for, in build order (each after the one it is built from)."""
    names = []
    for variant in VARIANTS.values():
        wanted = {
            "fused": optimize,
            "dynamic": quantize in ("auto", "dynamic"),
            "static": quantize in ("auto", "static") and variant.name.removeprefix("int8-static-") in calibration,
            "fp16": fp16,
        }[variant.kind]
        if wanted and (variant.source == "fp32" or variant.source in names):
            names.append(variant.name)
    return names


@register("fp32-fused", "fused", "fp32")
def fused(source: Path, out: Path, recipe: Recipe) -> None:
    """onnxruntime's transformer optimizer: attention, embedding LayerNorm and GELU fused. The residual Add stays
    apart from its LayerNorm: that fusion happens (or not) when a session loads the model, where the gate measures
    it (evaluation.LOAD_TIME_FUSIONS)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = False
    model = optimize_model(str(source), model_type="bert", num_heads=recipe.num_heads, hidden_size=recipe.hidden_size,
                           optimization_options=options)
    if not model.get_fused_operator_statistics().get("Attention"):
        raise ValueError("the transformer optimizer fused no attention block in this graph")
    model.save_model_to_file(str(out))
    _check_same_outputs(source, out)


def _check_same_outputs(source: Path, out: Path, atol: float = 1e-3) -> None:
    """Refuse a rewritten fp32 graph whose outputs differ from its source's (e.g. attention fused with a head count
    that does not fit a pruned layer)."""
    import numpy as np
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (source, out)]
    ids = np.random.default_rng(0).integers(1000, 2000, (2, 16))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    feed = {i.name: feed[i.name] for i in sessions[0].get_inputs()}
    expected, got = (s.run(None, feed) for s in sessions)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
    if worst > atol:
        raise ValueError(f"the fused graph's outputs differ from the export's by {worst:.2e}")


@register("int8-dynamic", "dynamic", "int8", batch_invariant=False)
@register("int8-dynamic-fused", "dynamic", "int8", source="fp32-fused", batch_invariant=False)
def dynamic(source: Path, out: Path, recipe: Recipe) -> None:
    """INT8 dynamic: int8 (or uint8) weights, uint8 activations quantized at run time. Not batch-invariant: each
    activation's scale spans the whole padded batch, in the fused graph's QAttention and DynamicQuantizeMatMul too."""
    import onnx
    from onnxruntime.quantization import quantize_dynamic

    with _prepared(source, out) as prepared:
        quantize_dynamic(
            prepared,
            out,
            weight_type=_weight_type(recipe.preset),
            per_channel=recipe.per_channel,
            reduce_range=recipe.preset.reduce_range,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused graphs lack some type information
        )


def static(source: Path, out: Path, recipe: Recipe, method: str) -> None:
    """INT8 static QDQ: uint8 activations with scales fixed by calibration on task examples."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    with _prepared(source, out) as prepared, redirect_stdout(io.StringIO()):  # onnxruntime prints calibration chatter
        _int8_embeddings(prepared)  # first, so that calibration sees the activations the int8 tables give
        graph = onnx.load(str(prepared), load_external_data=False).graph
        outputs = {o.name for o in graph.output}
        heads = [node.name for node in graph.node if outputs & set(node.output)]  # logits stay fp32, not 8-bit
        quantize_static(
            prepared,
            out,
            recipe.calibration(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=STATIC_OPS,
            nodes_to_exclude=heads,
            per_channel=recipe.per_channel,
            reduce_range=recipe.preset.reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=_weight_type(recipe.preset),
            calibrate_method=methods[method],
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                           "OpTypesToExcludeOutputQuantization": STATIC_OPS},
        )
    _unquantize_other_consumers(out)


def _int8_embeddings(path: Path) -> None:
    """Store each embedding table as int8 with one symmetric scale per row: the lookup gathers int8 rows and their
    scales, then multiplies. The word embeddings are most of a small model's file, and dequantizing after the lookup
    costs only the rows looked up (a DequantizeLinear before the Gather would expand the whole table on every run)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    for lookup, table in _embedding_lookups(graph):
        weights = numpy_helper.to_array(table)
        scales = np.maximum(np.abs(weights).max(axis=1, keepdims=True), 1e-12) / 127
        rows = np.round(weights / scales).astype(np.int8)
        name, ids, out = table.name, lookup.input[1], lookup.output[0]
        graph.initializer.remove(table)
        graph.initializer.extend([numpy_helper.from_array(rows, f"{name}_int8"),
                                  numpy_helper.from_array(scales.astype(np.float32), f"{name}_scale")])
        lookup.input[:] = [f"{name}_int8", ids]
        lookup.output[:] = [f"{out}_int8"]
        at = list(graph.node).index(lookup) + 1
        for offset, node in enumerate([
            helper.make_node("Gather", [f"{name}_scale", ids], [f"{out}_scale"], name=f"{lookup.name}_scale"),
            helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], to=TensorProto.FLOAT,
                             name=f"{lookup.name}_cast"),
            helper.make_node("Mul", [f"{out}_float", f"{out}_scale"], [out], name=f"{lookup.name}_dequantize"),
        ]):
            graph.node.insert(at + offset, node)
    onnx.save(model, str(path))


def _embedding_lookups(graph) -> list:
    """(Gather node, table) for each 2-D fp32 initializer that a Gather reads rows of and nothing else reads."""
    from collections import Counter

    from onnx import TensorProto

    tables = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) == 2}
    reads = Counter(name for node in graph.node for name in node.input)
    return [(node, tables[node.input[0]]) for node in graph.node
            if node.op_type == "Gather" and node.input[0] in tables and reads[node.input[0]] == 1
            and all(a.i == 0 for a in node.attribute if a.name == "axis")]


def _unquantize_other_consumers(path: Path) -> None:
    """Give every node but a MatMul back the fp32 tensor its quantize-dequantize pair stands in for.

    onnxruntime's QDQ quantizer hands one dequantized copy of a tensor to all its consumers, so a LayerNorm output
    that feeds a MatMul would reach the residual Add rounded to 8 bits as well."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    quantized_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    original = {n.output[0]: quantized_from[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in quantized_from}
    for node in graph.node:
        if node.op_type not in STATIC_OPS:
            node.input[:] = [original.get(name, name) for name in node.input]
    while True:  # drop the pairs nothing reads any more
        read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        unread = [n for n in graph.node
                  if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.output[0] not in read]
        if not unread:
            break
        for node in unread:
            graph.node.remove(node)
    onnx.save(model, str(path))


for _method in CALIBRATIONS:
    register(f"int8-static-{_method}", "static", "int8")(partial(static, method=_method))


@register("fp16", "fp16", "fp16", batch_invariant=False)
def fp16(source: Path, out: Path, recipe: Recipe) -> None:
    """Half-precision weights and compute, fp32 inputs and outputs (for targets with fast fp16). Not batch-invariant:
    padding changes how onnxruntime's CPU kernels round fp16 sums (measured on a tiny model: logits of about 0.7 moved
    by 1.4e-4 beside a long text, by 1e-3 with graph optimizations off)."""
    import onnx
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(keep_io_types=True)
    model.save_model_to_file(str(out))


def _weight_type(preset: QuantPreset):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8 if preset.weights == "int8" else QuantType.QUInt8


@contextmanager
def _prepared(source: Path, out: Path):
    """onnxruntime's pre-processing (shape inference, graph cleanup) into a scratch file beside out."""
    from onnxruntime.quantization import quant_pre_process

    path = out.with_name(out.stem + ".prepared.onnx")
    try:
        quant_pre_process(str(source), str(path), skip_symbolic_shape=True)
        yield path
    finally:
        path.unlink(missing_ok=True)
