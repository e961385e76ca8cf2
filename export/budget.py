"""Compress to a latency budget: which students a device runs within the budget, and in what order to train them.

A candidate is a cut of the teacher (or of a smaller pre-trained student) to some of its layers, a fraction of its
encoder FLOPs pruned away, and a precision. Its latency on the device is predicted by the device profile's cost model
(runtime.profile) from its shape; pruning removes that fraction of every layer's heads and neurons in the
prediction (the real pruning ranks them across layers, so its layers differ, at the same totals). Candidates
within the budget are trained largest first: the more a student computes, the more it keeps of its teacher; one
predicted within but measured over the budget is followed by its depth pruned further. Measured here, the trained
students are timed again together before the most accurate within the budget is shipped.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from tinyship.runtime.bundle import MANIFEST_NAME, read_manifest
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import write_text_atomic, writing_directory
from tinyship.runtime.flags import AMOUNT, POSITIVE, THREADS, flag
from tinyship.runtime.profile import Shape, predict_ms, profile, profile_risks, read_profile, shape_of

log = logging.getLogger(__name__)

PRUNE_FRACTIONS = (0.0, 0.25, 0.5, 0.75)  # of a cut's encoder FLOPs
PRECISIONS = ("int8", "fp32")


@dataclass
class BudgetConfig:
    """Compress to a latency budget on a device: search the students within it, ship the most accurate."""

    latency_ms: float | None = field(default=None, metadata=flag(
        "ship the most accurate student that runs within this many milliseconds at batch 1 (on the device of "
        "--device-profile, else this machine): cuts of the teacher (or of --student DIR), pruning and precision are "
        "searched, the most promising trained (default: no budget, the stage flags decide)", "--latency-budget",
        type=AMOUNT, metavar="MS"))
    tokens: int = field(default=128, metadata=flag("the input length the budget is for, in tokens", "--length",
                                                   type=POSITIVE))
    threads: int = field(default=1, metadata=flag("onnxruntime threads the budget is for", "--threads", type=THREADS))
    device_profile: str | None = field(default=None, metadata=flag(
        "the target device's profile (`tinyship bench --profile FILE PACK` there) that predicts latency (default: "
        "profile this machine)", metavar="FILE"))
    trials: int = field(default=4, metadata=flag(
        "train at most this many candidates, largest first, stopping once one is less accurate than the best before",
        "--budget-trials", type=POSITIVE))


@dataclass(frozen=True)
class Candidate:
    """A student the search may train: `layers` of `source` ("teacher" or a student directory), `prune_flops` of
    its encoder FLOPs pruned, run in `precision`; its shape and the latency predicted for it."""

    source: str
    layers: int
    prune_flops: float
    precision: str
    shape: Shape
    predicted_ms: float

    @property
    def name(self) -> str:
        source = "" if self.source == "teacher" else "student-"
        return f"{source}l{self.layers}-p{round(100 * self.prune_flops):02d}-{self.precision}"


def cut(shape: Shape, layers: int) -> Shape:
    """The shape of `layers` layers kept uniformly (layers m*L/K of L, as the student is cut)."""
    from tinyship.compress.students import uniform_layers

    kept = [i - 1 for i in uniform_layers(shape.layers, layers)]
    return replace(shape, heads=tuple(shape.heads[i] for i in kept), ffn=tuple(shape.ffn[i] for i in kept))


def pruned(shape: Shape, fraction: float) -> Shape:
    """The shape after removing `fraction` of every layer's heads and FFN neurons (at least one head stays)."""
    keep = 1 - fraction
    return replace(shape, heads=tuple(max(1, round(h * keep)) for h in shape.heads),
                   ffn=tuple(max(1, round(f * keep)) for f in shape.ffn))


def candidates(sources: dict[str, Shape], predict: Callable[[Shape, str], float],
               fractions=PRUNE_FRACTIONS, precisions=PRECISIONS) -> list[Candidate]:
    """Every cut of every source, at every pruning fraction and precision, with its predicted latency."""
    found = []
    for source, full in sources.items():
        for layers in range(1, full.layers + 1):
            for fraction in fractions:
                shape = pruned(cut(full, layers), fraction)
                found += [Candidate(source, layers, fraction, p, shape, predict(shape, p)) for p in precisions]
    return found


def training_order(found: list[Candidate], budget_ms: float) -> list[Candidate]:
    """The candidates to train, most promising first: per source and depth, the least pruned that the budget allows
    (in its fastest precision within it), those with the most encoder weights first (deeper first among equals)."""
    best: dict[tuple[str, int], Candidate] = {}
    for c in sorted(found, key=lambda c: (c.prune_flops, c.predicted_ms)):
        if c.predicted_ms <= budget_ms:
            best.setdefault((c.source, c.layers), c)
    return sorted(best.values(), key=lambda c: (-c.shape.encoder_weights, -c.layers))


def fastest(found: list[Candidate]) -> Candidate:
    """The candidate predicted fastest: what a budget no candidate meets comes closest to."""
    return min(found, key=lambda c: c.predicted_ms)


def more_pruned(found: list[Candidate], missed: Candidate) -> Candidate | None:
    """The same cut and precision at the next larger pruning fraction: what to try when `missed` was predicted
    within the budget but measured over it."""
    same_cut = (missed.source, missed.layers, missed.precision)
    further = [c for c in found if (c.source, c.layers, c.precision) == same_cut and c.prune_flops > missed.prune_flops]
    return min(further, key=lambda c: c.prune_flops, default=None)


@dataclass
class Trial:
    """A trained candidate: its bundle, its validation metric, and its latency predicted (for the shape pruning
    left) and, on this machine, measured."""

    candidate: Candidate
    bundle: str
    metric: float
    test_accuracy: float | None
    size_bytes: int
    variant: str
    predicted_ms: float
    measured_ms: float | None
    meets: bool


def search(config) -> Path:
    """Compress config's teacher to its latency budget; returns the shipped bundle (budget.md and .json beside it).
    Raises when no candidate meets the budget, saying the fastest one and its metric."""
    from tinyship.export.pipeline import prepare_teacher

    budget, out = config.budget, Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    teacher, _, _ = prepare_teacher(config)
    sources = {"teacher": shape_of(_model_config(teacher))}
    if config.distill.spec.directory:
        sources[config.distill.spec.directory] = shape_of(_model_config(config.distill.spec.directory))
    predictors, device = predictors_for(budget, out, task_name(teacher))
    found = candidates(sources, lambda shape, p: predict_ms(predictors[p], shape), precisions=tuple(predictors))
    order = training_order(found, budget.latency_ms)
    log.info(f"{len(found)} candidates, {len(order)} depths predicted within {budget.latency_ms:g} ms at "
             f"{budget.tokens} tokens on {budget.threads} thread(s) ({device['where']}); training at most "
             f"{budget.trials}, largest first")
    trials: list[Trial] = []
    queue = order or [fastest(found)]
    while queue and len(trials) < budget.trials:
        candidate = queue.pop(0)
        trial = train_candidate(config, teacher, candidate, predictors, device)
        trials.append(trial)
        if not trial.meets and candidate.predicted_ms <= budget.latency_ms and (step := more_pruned(found, candidate)):
            queue.insert(0, step)  # predicted within but measured over: that depth, pruned further
            continue
        best = max((t for t in trials[:-1] if t.meets), key=lambda t: t.metric, default=None)
        if best and trial.meets and trial.metric <= best.metric:
            break  # largest first: a smaller student that is no better ends the search
    if device["measured_here"] and len(trials) > 1:
        trials = remeasured(trials, budget)
    write_report(out, config, found, trials, device)
    within = [t for t in trials if t.meets]
    if not within:
        closest = min(trials, key=lambda t: t.measured_ms or t.predicted_ms)
        raise TinyshipError(
            f"no student runs within {budget.latency_ms:g} ms at {budget.tokens} tokens on {budget.threads} thread(s) "
            f"({device['where']}): the fastest tried, {closest.candidate.name}, takes "
            f"{closest.measured_ms or closest.predicted_ms:.2f} ms with validation {closest.metric:.4f} (its bundle: "
            f"{closest.bundle}). Raise --latency-budget, shorten --length, or give more --threads; see "
            f"{out / 'budget.md'}")
    winner = max(within, key=lambda t: t.metric)
    return _ship(winner, budget, device, out / "bundle")


def predictors_for(budget: BudgetConfig, out: Path, task: str) -> tuple[dict[str, dict], dict]:
    """Each precision's cost model at the budget's length and threads, from the device profile given (its risks
    logged) or from this machine's, profiled once into OUT/device; and where the predictions are for."""
    path = Path(budget.device_profile) if budget.device_profile else out / "device" / "profile.json"
    if not budget.device_profile and not path.is_file():
        from tinyship.export.probes import ProbeConfig, probe_pack

        log.info("== device profile of this machine (no --device-profile given)")
        pack = probe_pack(ProbeConfig(output=str(out / "device" / "probes")))
        measured = profile(pack, lengths=(budget.tokens,), threads=(budget.threads,))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(measured, indent=1) + "\n")
    data = read_profile(path, budget.tokens, budget.threads)
    for risk in profile_risks(data, task):
        log.warning(risk)
    models = {p: data["cost_models"][f"{p}/{budget.tokens}/{budget.threads}"]["coefficients"] for p in PRECISIONS
              if f"{p}/{budget.tokens}/{budget.threads}" in data["cost_models"]}
    here = not budget.device_profile
    where = "this machine" if here else f"{data['machine']['cpu']}, predicted from {path}"
    return models, {"profile": str(path), "machine": data["machine"], "measured_here": here, "where": where}


def train_candidate(config, teacher: Path, candidate: Candidate, predictors: dict, device: dict) -> Trial:
    """Distil, prune and export one candidate through the pipeline into OUT/students/NAME (a rerun resumes it);
    its latency measured here (device["measured_here"]) or predicted."""
    from tinyship.compress.config import NO_PRUNE_TARGET, Student
    from tinyship.export.pipeline import compress

    log.info(f"== candidate {candidate.name}: {candidate.shape.describe()}, predicted {candidate.predicted_ms:.2f} ms")
    source = None if candidate.source == "teacher" else candidate.source
    directory = Path(config.output_dir) / "students" / candidate.name
    bundle = compress(replace(
        config, teacher=str(teacher), output_dir=str(directory), budget=BudgetConfig(),
        distill=replace(config.distill, **Student(source, candidate.layers).fields()),
        prune=replace(config.prune, **{**NO_PRUNE_TARGET, "flops": candidate.prune_flops or None})))
    manifest = read_manifest(bundle)
    shape = shape_of(_model_config(manifest["source_model"]))  # as pruning left it
    predicted = predict_ms(predictors[manifest["precision"]] if manifest["precision"] in predictors
                           else predictors[candidate.precision], shape)
    measured = measured_ms(bundle, manifest, config.budget) if device["measured_here"] else None
    report = json.loads((directory / "report.json").read_text(encoding="utf-8"))
    shipped = next((r for r in report["rows"] if manifest["variant"] in r["model"]), {})
    trial = Trial(candidate, str(bundle), manifest["metrics"]["validation"], shipped.get("accuracy"),
                  (bundle / manifest["model"]).stat().st_size, manifest["variant"], predicted, measured,
                  meets=(measured if measured is not None else predicted) <= config.budget.latency_ms)
    log.info(f"{candidate.name}: validation {trial.metric:.4f}, {manifest['variant']}, predicted {predicted:.2f} ms"
             + (f", measured {measured:.2f} ms" if measured is not None else "")
             + ("" if trial.meets else f": over the {config.budget.latency_ms:g} ms budget"))
    return trial


def remeasured(trials: list[Trial], budget: BudgetConfig) -> list[Trial]:
    """Every trial measured again, one after another, so that the winner is chosen on latencies taken in the same
    minutes: a shared machine's speed drifts over the hour the candidates take to train."""
    again = []
    for trial in trials:
        ms = measured_ms(Path(trial.bundle), read_manifest(trial.bundle), budget)
        if (ms <= budget.latency_ms) != trial.meets:
            log.info(f"{trial.candidate.name} measured again: {ms:.2f} ms (first {trial.measured_ms:.2f} ms)")
        again.append(replace(trial, measured_ms=ms, meets=ms <= budget.latency_ms))
    return again


def measured_ms(bundle: Path, manifest: dict, budget: BudgetConfig) -> float:
    """The bundle's median latency here at batch 1, the budget's length and threads, in its shipped session."""
    from tinyship.export.evaluation import latency

    ids = np.random.default_rng(0).integers(1000, 2000, (1, budget.tokens))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    timing = latency(bundle / manifest["model"], feed, budget.threads, repeat=100,
                     disabled_optimizers=manifest.get("session", {}).get("disabled_optimizers", []))
    return timing["median_ms"]


def _ship(winner: Trial, budget: BudgetConfig, device: dict, out: Path) -> Path:
    """Copy the winner's bundle to out, its manifest recording the budget, where it holds and by what margin."""
    from tinyship.export.bundling import seal_bundle

    latency = winner.measured_ms if winner.measured_ms is not None else winner.predicted_ms
    with writing_directory(out) as tmp:
        source = Path(winner.bundle)
        manifest = json.loads((source / MANIFEST_NAME).read_text(encoding="utf-8"))
        for item in source.iterdir():
            if item.name != MANIFEST_NAME:
                (shutil.copytree if item.is_dir() else shutil.copyfile)(item, tmp / item.name)
        manifest["budget"] = {
            "latency_ms": budget.latency_ms, "tokens": budget.tokens, "threads": budget.threads, "batch_size": 1,
            "device_profile": device["profile"], "device": device["machine"]["cpu"],
            "latency": "measured here" if winner.measured_ms is not None else "predicted by the device profile",
            "predicted_ms": winner.predicted_ms, "measured_ms": winner.measured_ms,
            "margin_ms": budget.latency_ms - latency, "candidate": winner.candidate.name}
        seal_bundle(tmp, {k: v for k, v in manifest.items() if k not in ("files", "created", "versions")}, out)
    log.info(f"shipped {winner.candidate.name} to {out}: {latency:.2f} ms "
             f"({manifest['budget']['latency']}) within {budget.latency_ms:g} ms, validation {winner.metric:.4f}")
    return out


def _model_config(model_dir) -> dict:
    """config.json of a model directory, a tinyship-pruned one as its base architecture's."""
    from tinyship.compress.tinyship_pruned import plain_config

    return plain_config(model_dir)


def task_name(model_dir: Path) -> str:
    """The task of a fine-tuned model directory, from its head: what a device profile's risks are checked against."""
    from tinyship.compress.tasks import task_of
    from tinyship.compress.tinyship_pruned import read_config

    return task_of(read_config(model_dir)).name


def write_report(out: Path, config, found: list[Candidate], trials: list[Trial], device: dict) -> None:
    """budget.json, budget.md and budget.png: every candidate with its prediction, the trained ones with their metric,
    size and measured latency, and the front of metric against latency."""
    budget = config.budget
    report = {"budget": asdict(budget), "device": device, "candidates": [
        {"name": c.name, "source": c.source, "layers": c.layers, "prune_flops": c.prune_flops,
         "precision": c.precision, "shape": asdict(c.shape), "predicted_ms": c.predicted_ms,
         "within_budget": c.predicted_ms <= budget.latency_ms} for c in found],
        "trials": [{**asdict(t), "candidate": t.candidate.name} for t in trials]}
    write_text_atomic(out / "budget.json", json.dumps(report, indent=2) + "\n")
    unit = "measured" if device["measured_here"] else "predicted"
    lines = [f"# Latency budget: {budget.latency_ms:g} ms at batch 1, {budget.tokens} tokens, {budget.threads} "
             f"thread(s) on {device['where']}", "",
             f"Trained, largest first (latency {unit}; validation metric from the export gate):", "",
             "| candidate | variant | validation | test accuracy | size MB | predicted ms | measured ms | within |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for t in trials:
        test = f"{t.test_accuracy:.4f}" if t.test_accuracy is not None else ""
        measured = f"{t.measured_ms:.2f}" if t.measured_ms is not None else ""
        lines.append(f"| {t.candidate.name} | {t.variant} | {t.metric:.4f} | {test} | {t.size_bytes / 1e6:.1f} | "
                     f"{t.predicted_ms:.2f} | {measured} | {'yes' if t.meets else 'no'} |")
    lines += ["", "Every candidate's predicted latency (ms), per cut and pruned fraction of its FLOPs:", "",
              "| candidate | " + " | ".join(PRECISIONS) + " |", "|---|" + "---:|" * len(PRECISIONS)]
    for name, group in _by_shape(found).items():
        lines.append(f"| {name} | " + " | ".join(f"{group[p]:.2f}" if p in group else "" for p in PRECISIONS)
                     + " |")
    write_text_atomic(out / "budget.md", "\n".join(lines) + "\n")
    _plot(out / "budget.png", budget, trials, unit)


def _by_shape(found: list[Candidate]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for c in found:
        table.setdefault(c.name.rsplit("-", 1)[0], {})[c.precision] = c.predicted_ms
    return table


def _plot(path: Path, budget: BudgetConfig, trials: list[Trial], unit: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for t in trials:
        latency = t.measured_ms if t.measured_ms is not None else t.predicted_ms
        ax.scatter(latency, t.metric, color="tab:blue" if t.meets else "tab:gray")
        ax.annotate(t.candidate.name, (latency, t.metric), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axvline(budget.latency_ms, color="tab:red", linestyle="--", label=f"budget {budget.latency_ms:g} ms")
    ax.set_xlabel(f"latency, ms ({unit}; batch 1, {budget.tokens} tokens, {budget.threads} thread(s))")
    ax.set_ylabel("validation metric")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
