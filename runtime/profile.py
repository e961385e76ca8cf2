"""Device profiles: time a probe pack on the target device and fit a cost model that predicts any encoder's latency.

A probe pack (`tinyship probes`, on the development machine) holds encoder graphs of many shapes, fp32 and INT8,
without their weights: every large weight points into a file that `profile()` fills with seeded random values here,
so the pack stays small and the device needs only the base install. The cost model is linear in what an encoder
layer computes (COST_TERMS), fitted per precision, input length and thread count on the pack's fitting shapes and
checked on its held-out ones. A shape is a model's hidden size, head width, vocabulary and, per layer, its heads
and FFN neurons, so pruned models (layers of their own widths) are predicted as well.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyship.runtime.bench import machine, timed
from tinyship.runtime.errors import TinyshipError

PACK_FILE = "probes.json"
PACK_FORMAT = "tinyship-probes/1"
PROFILE_FORMAT = "tinyship-profile/1"
log = logging.getLogger(__name__)

WEIGHT_TYPES = {"float32": np.float32, "int8": np.int8, "uint8": np.uint8}
PROBE_TASK = "classification"  # the probes' head
ALIGNMENT = 4096  # external weights start on page boundaries, so onnxruntime may map them


@dataclass(frozen=True)
class Shape:
    """An encoder's shape: hidden size, width of one attention head, vocabulary, and per layer its heads and FFN
    neurons (a pruned model's layers differ)."""

    hidden: int
    head_dim: int
    vocab: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    @property
    def layers(self) -> int:
        return len(self.heads)

    @property
    def encoder_weights(self) -> int:
        """The encoder's weight count: Q, K, V and output projections and the two FFN matrices of every layer."""
        return sum(self.hidden * (4 * h * self.head_dim + 2 * f) for h, f in zip(self.heads, self.ffn))

    def describe(self) -> str:
        per_layer = (f"{self.heads[0]} heads, FFN {self.ffn[0]}" if len(set(zip(self.heads, self.ffn))) == 1
                     else f"heads {list(self.heads)}, FFN {list(self.ffn)}")
        layers = f"{self.layers} layer{'s' if self.layers > 1 else ''}"
        return f"{layers} x hidden {self.hidden} ({per_layer}, head width {self.head_dim}), vocab {self.vocab}"

    @classmethod
    def from_dict(cls, data: dict) -> Shape:
        return cls(int(data["hidden"]), int(data["head_dim"]), int(data["vocab"]), tuple(data["heads"]),
                   tuple(data["ffn"]))


def shape_of(config: dict) -> Shape:
    """The shape of a model from its config.json (a tinyship-pruned one included: pruned heads, FFN widths)."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    layers = config["num_hidden_layers"]
    pruned = {int(layer): len(gone) for layer, gone in (config.get("pruned_heads") or {}).items()}
    widths = (config.get("tinyship_pruning") or {}).get("intermediate_sizes") or [config["intermediate_size"]] * layers
    return Shape(hidden, hidden // heads, config["vocab_size"], tuple(heads - pruned.get(i, 0) for i in range(layers)),
                 tuple(widths))


# What one run of an encoder costs, term by term, at a fixed input length: the cost model's features.
COST_TERMS = {
    "fixed": lambda s: 1.0,  # session and head overhead
    "embeddings": lambda s: s.hidden,  # three lookups and a LayerNorm over hidden-wide rows
    "layers": lambda s: s.layers,  # per-layer operator overhead
    "layer_norms": lambda s: s.layers * s.hidden,  # residual Adds, LayerNorms, quantizing hidden-wide activations
    "projections": lambda s: sum(s.hidden * h * s.head_dim for h in s.heads),  # Q, K, V and output GEMMs
    "attention": lambda s: sum(h * s.head_dim for h in s.heads),  # scores and weighted sums: length^2 x width
    "softmax": lambda s: sum(s.heads),  # one length x length softmax per head
    "ffn": lambda s: sum(s.hidden * f for f in s.ffn),  # the two FFN GEMMs
    "activations": lambda s: sum(s.ffn),  # GELU and quantizing FFN-wide activations
}


def features(shape: Shape) -> np.ndarray:
    return np.array([term(shape) for term in COST_TERMS.values()], dtype=np.float64)


def fit(shapes: list[Shape], latencies_ms: list[float]) -> dict[str, float]:
    """Non-negative coefficients of COST_TERMS that minimise the relative squared error over the shapes: least
    squares, dropping the most negative term and refitting until none is (a cost is never negative)."""
    x = np.stack([features(s) for s in shapes]) / np.asarray(latencies_ms)[:, None]  # rows scaled: relative error
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1
    active = list(range(x.shape[1]))
    while True:
        solution, *_ = np.linalg.lstsq(x[:, active] / scale[active], np.ones(len(shapes)), rcond=None)
        if (solution >= 0).all():
            break
        active.pop(int(np.argmin(solution)))
    coefficients = np.zeros(x.shape[1])
    coefficients[active] = solution / scale[active]
    return dict(zip(COST_TERMS, coefficients.tolist()))


def predict_ms(coefficients: dict[str, float], shape: Shape) -> float:
    return float(features(shape) @ np.array([coefficients[name] for name in COST_TERMS]))


def profile(pack: str | Path, lengths=(128,), threads=(1,), repeat: int = 30) -> dict:
    """Time every probe of a pack at batch 1, each length and thread count, and fit the cost model per precision,
    length and thread count (a precision's latency: its fastest variant, as the accuracy gate would pick)."""
    pack = Path(pack)
    manifest = read_pack(pack)
    measurements = []
    with tempfile.TemporaryDirectory(prefix="tinyship-probe-") as scratch:
        for number, probe in enumerate(manifest["probes"], start=1):
            shape = Shape.from_dict(probe["shape"])
            for variant, graph in probe["variants"].items():
                model = materialise(pack, graph, Path(scratch), seed=probe["seed"])
                for count in threads:
                    session = _session(model, count)
                    for tokens in lengths:
                        feed = _feed(session, shape, tokens)
                        timing = timed(lambda: session.run(None, feed), max(3, repeat // 10), repeat)
                        measurements.append({"probe": probe["name"], "variant": variant,
                                             "precision": graph["precision"], "tokens": tokens, "threads": count,
                                             **timing})
            log.info(f"[{number}/{len(manifest['probes'])}] {probe['name']}: {shape.describe()}")
    return {"format": PROFILE_FORMAT, "machine": machine(), "onnxruntime": _ort_version(),
            "pack": {k: manifest[k] for k in ("onnxruntime", "preset", "created")}, "batch_size": 1,
            "lengths": list(lengths), "threads": list(threads), "repeat": repeat,
            "probes": [{k: p[k] for k in ("name", "shape", "held_out")} for p in manifest["probes"]],
            "measurements": measurements, "cost_models": cost_models(manifest["probes"], measurements)}


def fastest(measurements: list[dict]) -> dict[str, dict[str, float]]:
    """Each probe's median latency in its fastest variant of a precision, per "precision/tokens/threads"."""
    table: dict[str, dict[str, float]] = {}
    for m in measurements:
        per_probe = table.setdefault(f"{m['precision']}/{m['tokens']}/{m['threads']}", {})
        per_probe[m["probe"]] = min(per_probe.get(m["probe"], np.inf), m["median_ms"])
    return dict(sorted(table.items()))


def cost_models(probes: list[dict], measurements: list[dict]) -> dict[str, dict]:
    """One fitted cost model per precision, length and thread count ("int8/128/1"), with its error on the held-out
    shapes (|predicted - measured| / measured)."""
    shapes = {p["name"]: Shape.from_dict(p["shape"]) for p in probes}
    held_out = {p["name"] for p in probes if p["held_out"]}
    models = {}
    for key, latency in fastest(measurements).items():
        fitting = [name for name in latency if name not in held_out]
        coefficients = fit([shapes[n] for n in fitting], [latency[n] for n in fitting])
        errors = {n: abs(predict_ms(coefficients, shapes[n]) - latency[n]) / latency[n] for n in latency
                  if n in held_out}
        models[key] = {"coefficients": coefficients, "fitted_on": len(fitting),
                       "held_out_error": {"median": float(np.median(list(errors.values()))) if errors else None,
                                          "max": max(errors.values(), default=None), "per_probe": errors}}
    return models


def read_pack(pack: Path) -> dict:
    path = pack / PACK_FILE
    if not path.is_file():
        raise TinyshipError(f"{pack} is not a probe pack (no {PACK_FILE}): write one with `tinyship probes --out DIR` "
                            "on a machine with the [export] extra, then copy the directory here")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != PACK_FORMAT:
        raise TinyshipError(f"{path} is format {manifest.get('format')!r}, this tinyship reads {PACK_FORMAT}: "
                            "write the pack again with this version")
    return manifest


def materialise(pack: Path, graph: dict, scratch: Path, seed: int) -> Path:
    """Copy a probe's graph into scratch beside a weights file of seeded random values (normal, standard deviation
    0.02, for float tensors; uniform over the type's range for 8-bit ones) laid out as the graph expects."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    model = scratch / "model.onnx"
    shutil.copyfile(pack / graph["file"], model)
    rng = np.random.default_rng(seed)
    with open(scratch / graph["weights"], "wb") as f:
        for offset, count, dtype in graph["tensors"]:
            kind = WEIGHT_TYPES[dtype]
            values = ((rng.standard_normal(count, dtype=np.float32) * 0.02) if kind is np.float32 else
                      rng.integers(np.iinfo(kind).min, np.iinfo(kind).max, count, dtype=kind, endpoint=True))
            f.seek(offset)
            f.write(values.astype(kind).tobytes())
    return model


def _session(model: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _feed(session, shape: Shape, tokens: int) -> dict[str, np.ndarray]:
    ids = np.random.default_rng(tokens).integers(0, shape.vocab, (1, tokens))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    return {i.name: feed[i.name] for i in session.get_inputs()}


def _ort_version() -> str:
    import onnxruntime as ort

    return ort.__version__


def read_profile(path: str | Path, tokens: int, threads: int, precision: str = "int8") -> dict:
    """The cost model a profile fitted for this precision, input length and thread count; a clear error when the
    file is not a profile or lacks that setting."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TinyshipError(f"cannot read the device profile {path}: {e}; write one with `tinyship bench --profile "
                            f"{path} PACK` on the device") from None
    if not isinstance(data, dict) or data.get("format") != PROFILE_FORMAT:
        raise TinyshipError(f"{path} is not a tinyship device profile ({PROFILE_FORMAT}): write one with "
                            f"`tinyship bench --profile {path} PACK` on the device")
    key = f"{precision}/{tokens}/{threads}"
    if key not in data["cost_models"]:
        raise TinyshipError(f"the profile {path} has no {precision} model at {tokens} tokens on {threads} threads "
                            f"(it has {', '.join(sorted(data['cost_models']))}): profile again with --lengths "
                            f"{tokens} --threads {threads}")
    return data


def profile_risks(profile: dict, task: str) -> list[str]:
    """What may make a profile's predictions wrong for this model: another onnxruntime than the one that will run it
    (kernels change between versions), a task head the probes lack (they are classifiers)."""
    import onnxruntime as ort

    risks = []
    if profile["onnxruntime"] != ort.__version__:
        risks.append(f"the device profile was measured with onnxruntime {profile['onnxruntime']}, this machine has "
                     f"{ort.__version__}: kernels change between versions, so predictions may be off by more than "
                     "the profile's held-out error; profile the device again with the onnxruntime it will run")
    if task != PROBE_TASK:
        risks.append(f"the device profile timed {PROBE_TASK} encoders, this is a {task} model: its head's cost is "
                     "not in the predictions (small for token classification and question answering, whose heads are "
                     "one projection per token)")
    return risks


def markdown(report: dict) -> str:
    """The profile as Markdown: the cost models' held-out errors, then every probe's latency per setting (its
    precision's fastest variant; * marks the held-out shapes)."""
    m = report["machine"]
    table = fastest(report["measurements"])
    lines = [f"Device profile: {m['cpu']}, {m['cores']} cores, {m['system']}, onnxruntime {report['onnxruntime']}; "
             f"{len(report['probes'])} probe shapes, batch 1, median of {report['repeat']} runs.",
             "", "| precision/tokens/threads | fitted on | held-out median error | held-out max error |",
             "|---|---:|---:|---:|"]
    for key, model in report["cost_models"].items():
        error = model["held_out_error"]
        lines.append(f"| {key} | {model['fitted_on']} | " + " | ".join(
            "n/a" if error[k] is None else f"{100 * error[k]:.1f}%" for k in ("median", "max")) + " |")
    lines += ["", "| probe | shape | " + " | ".join(f"{key} ms" for key in table) + " |",
              "|---|---|" + "---:|" * len(table)]
    for probe in report["probes"]:
        name = probe["name"] + ("*" if probe["held_out"] else "")
        lines.append(f"| {name} | {Shape.from_dict(probe['shape']).describe()} | "
                     + " | ".join(f"{table[key][probe['name']]:.2f}" for key in table) + " |")
    return "\n".join(lines) + "\n"
