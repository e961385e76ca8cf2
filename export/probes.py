"""`tinyship probes`: write a probe pack, encoder graphs of many shapes for `tinyship bench --profile` to time on a
target device (runtime.profile fits the cost model from those timings).

Each probe is a randomly initialised BERT-shaped classifier, pruned to its shape's heads and FFN widths per layer,
exported as the bundles' variants are (fp32, fused, INT8 dynamic on both) for the target's INT8 preset. Its
weights are left out: every weight matrix points into a weights file that the device fills with seeded random values,
so a pack is a few megabytes whatever its shapes, and copying it to a phone or a board is cheap. The shapes spread
over the hidden sizes and head widths of the models tinyship compresses; a held-out set (other shapes, pruned
layers of unequal widths, the real models' shapes) checks the cost model's predictions.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tinyship.export.quantization import PRESETS, VARIANTS, Recipe, detect_preset
from tinyship.runtime.files import write_text_atomic
from tinyship.runtime.flags import POSITIVE, flag
from tinyship.runtime.profile import ALIGNMENT, PACK_FILE, PACK_FORMAT, Shape

log = logging.getLogger(__name__)

PROBE_VARIANTS = ("fp32-fused", "int8-dynamic", "int8-dynamic-fused")  # and the plain fp32 export
FAMILIES = ((128, 32), (256, 64), (384, 32), (384, 64), (512, 64), (768, 64))  # (hidden, head width)
NAMED = {  # held out: the shapes of the models tinyship ships most
    "minilm-l3": Shape(384, 32, 30522, (12,) * 3, (1536,) * 3),
    "minilm-l6": Shape(384, 32, 30522, (12,) * 6, (1536,) * 6),
    "bert-base": Shape(768, 64, 30522, (12,) * 12, (3072,) * 12),
}
STORED_TYPES = {1: "float32", 2: "uint8", 3: "int8"}  # onnx TensorProto types whose matrices the device fills


@dataclass
class ProbeConfig:
    """Write a probe pack: encoder graphs of many shapes, without weights, for `tinyship bench --profile`."""

    output: str = field(default="runs/probes", metadata=flag("the probe pack directory", "--out"))
    preset: str = field(default="auto", metadata=flag(
        "INT8 layout of the target device's instruction set; auto: this CPU's", choices=("auto", *PRESETS)))
    fitting: int = field(default=36, metadata=flag("random shapes the cost model is fitted on", type=POSITIVE))
    held_out: int = field(default=12, metadata=flag(
        "random shapes (besides the named models') that check its predictions", type=POSITIVE))
    seed: int = 0
    opset: int = 18


def shapes(count: int, seed: int, uneven: bool) -> list[Shape]:
    """count random shapes over FAMILIES: 1 to 6 layers; heads and FFN widths the same in every layer, or (uneven)
    drawn per layer as pruning leaves them."""
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(count):
        hidden, head_dim = FAMILIES[rng.integers(len(FAMILIES))]
        layers, full = int(rng.choice([1, 2, 3, 4, 6])), hidden // head_dim
        draws = layers if uneven else 1

        def per_layer(values):
            return tuple(int(v) for v in np.resize(values, layers))

        heads = per_layer(np.maximum(1, np.round(full * rng.choice([0.25, 0.5, 0.75, 1.0], draws))))
        ffn = per_layer(np.round(hidden * rng.choice([0.5, 1, 2, 3, 4], draws)).astype(int))
        drawn.append(Shape(hidden, head_dim, int(rng.choice([2048, 8192, 30522])), heads, ffn))
    return drawn


def probe_pack(config: ProbeConfig) -> Path:
    """Write the pack (resuming: probes already written are kept) and return its directory."""
    from tqdm.auto import tqdm

    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    preset_name = detect_preset() if config.preset == "auto" else config.preset
    plan = [(f"fit-{i:02d}", s, False) for i, s in enumerate(shapes(config.fitting, config.seed, uneven=False))]
    plan += [(f"held-{i:02d}", s, True) for i, s in enumerate(shapes(config.held_out, config.seed + 1, uneven=True))]
    plan += [(name, s, True) for name, s in NAMED.items()]
    probes = []
    for index, (name, shape, held_out) in enumerate(tqdm(plan, desc="probes", unit="probe")):
        record = out / name / "probe.json"
        if not record.is_file():
            graphs = _write_probe(out / name, shape, PRESETS[preset_name], config)
            write_text_atomic(record, json.dumps({"variants": graphs}) + "\n")
        variants = json.loads(record.read_text(encoding="utf-8"))["variants"]
        probes.append({"name": name, "shape": asdict(shape), "held_out": held_out, "seed": config.seed + index,
                       "variants": variants})
    import onnxruntime

    write_text_atomic(out / PACK_FILE, json.dumps({
        "format": PACK_FORMAT, "onnxruntime": onnxruntime.__version__, "preset": preset_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "probes": probes}, indent=1) + "\n")
    log.info(f"probe pack of {len(probes)} shapes written to {out}: copy it to the device and run "
             f"`tinyship bench --profile profile.json {out}` there")
    return out


def _write_probe(directory: Path, shape: Shape, preset, config: ProbeConfig) -> dict[str, dict]:
    """Export one random model of the shape as each probe variant, weights stripped, into directory; returns what
    the device needs of each variant: its graph, precision and weight layout."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tinyship.compress.tasks import TASKS
    from tinyship.compress.tinyship_pruned import set_ffn_widths
    from tinyship.export.onnx_export import to_onnx
    from tinyship.export.quantization import precision_of

    full = shape.hidden // shape.head_dim
    torch.manual_seed(config.seed)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=full,
        intermediate_size=max(shape.ffn), num_labels=2)).eval()
    model.prune_heads({i: list(range(h, full)) for i, h in enumerate(shape.heads) if h < full})
    set_ffn_widths(model, list(shape.ffn))
    shutil.rmtree(directory, ignore_errors=True)
    work = directory / "work"
    paths = {"fp32": to_onnx(model, TASKS["classification"], work / "fp32", config.opset)}
    uniform = not model.config.pruned_heads
    recipe = Recipe(preset=preset, per_channel=preset.per_channel, calibration=lambda: None,
                    num_heads=full if uniform else 0, hidden_size=shape.hidden if uniform else 0)
    for name in PROBE_VARIANTS:
        variant = VARIANTS[name]
        target = work / name / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            variant.build(paths[variant.source], target, recipe)
        except (KeyError, ValueError) as e:  # e.g. no attention block fused in a pruned graph: not a variant here
            log.info(f"{directory.name}: no {name} ({e})")
            continue
        paths[name] = target
    graphs = {name: {"file": f"{directory.name}/{name}.onnx", "weights": f"{name}.weights",
                     "precision": precision_of(name),
                     "tensors": _strip_weights(path, directory / f"{name}.onnx", f"{name}.weights")}
              for name, path in paths.items()}
    shutil.rmtree(work)
    return graphs


def _strip_weights(source: Path, out: Path, weights: str) -> list[list]:
    """Save source's graph to out with every float or 8-bit matrix moved to the external file `weights` (not
    written: the device fills it); returns where each lies: [offset, element count, type]."""
    import onnx
    from onnx.external_data_helper import set_external_data

    model = onnx.load(str(source))
    offset, tensors = 0, []
    for tensor in model.graph.initializer:
        if tensor.data_type not in STORED_TYPES or len(tensor.dims) < 2:
            continue  # shapes, axes, biases and norms stay in the graph: small, and some must keep their values
        length = int(np.prod(tensor.dims)) * np.dtype(STORED_TYPES[tensor.data_type]).itemsize
        if not tensor.HasField("raw_data"):
            tensor.raw_data = onnx.numpy_helper.to_array(tensor).tobytes()  # set_external_data() reads raw_data
        set_external_data(tensor, weights, offset, length)
        for kind in ("raw_data", "float_data", "int32_data"):
            tensor.ClearField(kind)
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensors.append([offset, int(np.prod(tensor.dims)), STORED_TYPES[tensor.data_type]])
        offset += -(-length // ALIGNMENT) * ALIGNMENT
    onnx.save(model, str(out))
    return tensors

