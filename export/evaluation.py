"""Measuring candidates with onnxruntime (task metric on held-out rows, latency on this machine) and the accuracy
gate that chooses, among the candidates within the accuracy budget, the one its objective prefers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from tinyship.compress.tasks import Task
from tinyship.runtime.bench import timed
from tinyship.runtime.predictor import BATCH_SIZE, run_rows
from tinyship.runtime.predictor import open_session as session  # export and its report open models with it too
from tinyship.runtime.tasks import LOWER_IS_BETTER

# onnxruntime fusions applied when a session loads a model, tried off for each candidate: on onnxruntime 1.32's
# CPU kernels, SkipLayerNormalization (residual Add + LayerNorm in one op) measured slower than the two apart.
LOAD_TIME_FUSIONS = ("SkipLayerNormFusion",)
CLEAR_GAIN = 0.05  # a fusion is turned off only when that is at least this much faster (timing noise is smaller)


def evaluate(path: Path, rows: list[dict], task: Task, pad_id: int, disabled_optimizers: list[str] | tuple = (),
             batch_invariant: bool = True) -> float:
    """The task's metric (accuracy, exact match or MSE) of an ONNX model over encoded rows, run as the runtime
    serves it: in padded batches, or one row per run when its outputs are not batch-invariant."""
    outputs = run_rows(session(path, disabled_optimizers=disabled_optimizers), rows, pad_id,
                       BATCH_SIZE if batch_invariant else 1, per_token=not task.per_sequence)
    total = count = 0.0
    for row, output in zip(rows, outputs):
        found, seen = task.score(task_logits(output, task)[None], np.array([row["labels"]]))
        total, count = total + found, count + seen
    return total / max(count, 1)


def task_logits(output: list[np.ndarray], task: Task) -> np.ndarray:
    """One row's outputs as the task's scorer takes them: QA's start and end logits stacked on a last axis."""
    return np.stack(output[:len(task.outputs)], axis=-1) if len(task.outputs) > 1 else output[0]


def latency(path: Path, feed: dict[str, np.ndarray], threads: int, warmup: int = 10, repeat: int = 50,
            disabled_optimizers: list[str] | tuple = ()) -> dict:
    """Median and p99 milliseconds of one run on feed, after warm-up runs."""
    run = session(path, threads, disabled_optimizers=disabled_optimizers)
    feed = {i.name: feed[i.name] for i in run.get_inputs()}
    return timed(lambda: run.run(None, feed), warmup, repeat)


def fastest_session(path: Path, feed: dict[str, np.ndarray], threads: int) -> tuple[list[str], dict]:
    """The load-time fusions to turn off for this model (those whose absence is clearly faster), and its latency."""
    disabled, best = [], latency(path, feed, threads)
    for fusion in LOAD_TIME_FUSIONS:
        trial = latency(path, feed, threads, disabled_optimizers=[*disabled, fusion])
        if trial["median_ms"] < (1 - CLEAR_GAIN) * best["median_ms"]:
            disabled, best = [*disabled, fusion], trial
    return disabled, best


NOISE_FLOOR = 0.05  # latencies this close (5%) are as fast, even when the runs themselves spread less


@dataclass
class Choice:
    winner: str
    reason: str
    passed: dict[str, bool]
    noise_band: float  # the relative latency difference read as measurement noise


def noise_band(timing: dict) -> float:
    """How much slower than this measurement another can be and still count as as fast: the larger of NOISE_FLOOR
    and the run-to-run spread of its own repeated runs, (p90 - median) / median."""
    return max(NOISE_FLOOR, (timing["p90_ms"] - timing["median_ms"]) / timing["median_ms"])


def choose(measured: dict[str, dict], metric: str, budget: float, objective: str = "latency",
           baseline: str = "fp32") -> Choice:
    """The candidate the objective prefers among those whose metric is at most `budget` worse than the baseline's.

    latency: the smallest file among the candidates as fast as the fastest (median latency within its noise band);
    size: the smallest file; balanced: the lowest median latency x file size. Ties go to the faster.
    measured maps a candidate to {metric: value, "median_ms", "p90_ms", "size_bytes"}, or to {"error": why} when it
    could not be built or run. The baseline always passes, so something always ships."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    points = partial(_points, metric)
    base = measured[baseline][metric]
    passed = {name: "error" not in m and (name == baseline or sign * (base - m[metric]) <= budget + 1e-12)
              for name, m in measured.items()}
    within = [n for n in measured if passed[n]]
    ms, size = (lambda n: measured[n]["median_ms"]), (lambda n: measured[n]["size_bytes"])
    fastest = min(within, key=ms)
    band = noise_band(measured[fastest])
    as_fast = [n for n in within if ms(n) <= (1 + band) * ms(fastest)]
    by_size = lambda n: (size(n), ms(n))  # noqa: E731
    pool, key, rule = {
        "latency": (as_fast, by_size,
                    f"the smallest file among the candidates as fast as the fastest ({fastest}, {ms(fastest):.2f} ms; "
                    f"as fast: a median latency within {band:.1%} of it, the larger of {NOISE_FLOOR:.0%} and its own "
                    "run-to-run spread (p90 - median) / median)"),
        "size": (within, by_size, "the smallest file"),
        "balanced": (within, lambda n: (ms(n) * size(n), ms(n)), "the lowest median latency x file size"),
    }[objective]
    winner = min(pool, key=key)
    rejected = [f"{n} ({measured[n]['error']})" if "error" in measured[n] else
                f"{n} ({metric} {measured[n][metric]:.4f}, {points(sign * (base - measured[n][metric]))} worse)"
                for n in measured if not passed[n]]
    reason = (f"{winner}: objective {objective}, {rule}, within the accuracy budget of {points(budget)} "
              f"({described(measured[winner])}, {metric} {measured[winner][metric]:.4f} "
              f"against {base:.4f} for {baseline})")
    others = [n for n in within if n != winner]
    if others:
        reason += "; also within the budget: " + ", ".join(f"{n} ({described(measured[n])})" for n in others)
    if rejected:
        reason += "; over the budget or failed: " + ", ".join(rejected)
    return Choice(winner, reason, passed, band)


def described(candidate: dict) -> str:
    """A candidate's median latency and file size, as the gate prints them."""
    return f"{candidate['median_ms']:.2f} ms, {candidate['size_bytes'] / 1e6:.1f} MB"


def _points(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric in LOWER_IS_BETTER else f"{value * 100:.2f} points"
