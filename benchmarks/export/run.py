"""Export benchmark: every candidate variant of the built-in teacher and student, side by side.

For each model (default: the teacher and student that `make demo` leaves in runs/demo): `tinyship export
--quantize auto` builds fp32, fused, INT8 dynamic (plain and fused) and INT8 static (min-max, entropy,
percentile); each is measured for test accuracy (the fixed Rotten Tomatoes test split), size on disk, and
latency (median and p99) at batch 1 and 8, sequence 16, 64 and 128, on 1 and 2 threads. In the same run a large
u8s8 MatMulInteger with packed int8 weights (and an fp32 MatMul) measure this CPU's GEMM ceilings, against
which the INT8 student's achieved GOP/s is set.

    python -m benchmarks.export.run            # about 15 minutes on 2 cores
    python -m benchmarks.export.run --quick    # a minute: a check that it runs end to end
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.lab.ceilings import gemm_ceilings, op_profile
from benchmarks.lab.engines import latency_at
from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.lab.plots import save_figure
from tinyship.compress.flops import config_flops
from tinyship.compress.tasks import TASKS
from tinyship.export import ExportConfig, export
from tinyship.export.bundling import versions
from tinyship.export.evaluation import evaluate, latency
from tinyship.export.exporting import model_labels
from tinyship.export.quantization import batch_invariant_of, precision_of
from tinyship.export.report import machine, save_results
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError

BATCHES, LENGTHS, THREADS = (1, 8), (16, 64, 128), (1, 2)
TARGET = {"batch_size": 1, "tokens": 128, "threads": 1}  # where the INT8 student must be 3x faster than fp32


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/demo/teacher", help="default: %(default)s")
    parser.add_argument("--student", default="runs/demo/student", help="default: %(default)s")
    add_run_arguments(parser, "export", "64 examples per split and few repeats")
    args = parser.parse_args()
    work, results = run_paths(args, "export")
    data = DataConfig(limit=64) if args.quick else DataConfig()
    repeat = 10 if args.quick else 100
    report = {"machine": machine(), "versions": versions(), "repeat": repeat, "target": TARGET, "models": {},
              "ceiling": gemm_ceilings(THREADS, max(10, repeat // 5))}
    print("GEMM ceilings:", report["ceiling"])
    for role in ("teacher", "student"):
        model_dir = Path(getattr(args, role))
        if not (model_dir / "config.json").is_file():
            raise SystemExit(f"no {role} at {model_dir}: run `make demo` first, or pass --{role} DIR")
        report["models"][role] = measure_model(model_dir, work / role, data, repeat)
    student = report["models"]["student"]
    report["student_int8_vs_fp32"] = target_check(student)
    report["student_gops"] = achieved_gops(Path(args.student), student, report["ceiling"])
    report["student_profile"] = {
        name: op_profile(work / "student" / "candidates" / name / "model.onnx",
                         student["variants"][name]["disabled_optimizers"])
        for name in ("fp32", report["student_int8_vs_fp32"].get("variant")) if name
    }
    save_results(results, report, markdown(report))
    plot(report, results / "latency.png")
    print((results / "results.md").read_text())


def measure_model(model_dir: Path, work: Path, data: DataConfig, repeat: int) -> dict:
    """Export with every variant kept, then measure each on the test split and the latency grid."""
    config = ExportConfig(model=str(model_dir), output=str(work / "bundle"), data=data,
                          candidates_dir=str(work / "candidates"), force=True)
    export(config)
    manifest = read_manifest(work / "bundle")
    task = TASKS["classification"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    test = task.load(data, "test", model_labels(model_dir))
    rows = task.encode(test, tokenizer, data.max_length)
    variants = {}
    rng = np.random.default_rng(0)
    for name, candidate in manifest["metrics"]["candidates"].items():
        if "error" in candidate:
            variants[name] = {"error": candidate["error"]}
            continue
        path = work / "candidates" / name / "model.onnx"
        disabled = candidate["disabled_optimizers"]  # the load-time fusions export measured slower for it
        grid = []
        for batch in BATCHES:
            for length in LENGTHS:
                ids = rng.integers(1000, tokenizer.vocab_size, (batch, length))
                feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
                for threads in THREADS:
                    grid.append({"batch_size": batch, "tokens": length, "threads": threads,
                                 **latency(path, feed, threads, max(3, repeat // 10), repeat, disabled)})
        if disabled:  # what turning those fusions off saves, at the target setting
            ids = rng.integers(1000, tokenizer.vocab_size, (1, TARGET["tokens"]))
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
            fused_at_load = latency(path, feed, TARGET["threads"], max(3, repeat // 10), repeat)
        variants[name] = {
            "precision": precision_of(name),
            "target_with_all_load_time_fusions": fused_at_load if disabled else None,
            "test_accuracy": evaluate(path, rows, task, tokenizer.pad_token_id or 0, disabled,
                                      batch_invariant_of(name)),
            "disabled_optimizers": disabled,
            "validation_accuracy": candidate["accuracy"],
            "size_bytes": path.stat().st_size,
            "latency": grid,
        }
        print(f"{model_dir.name} {name}: test accuracy {variants[name]['test_accuracy']:.4f}, "
              f"{latency_at(variants[name], **TARGET)['median_ms']:.2f} ms at b1 s128 1 thread")
    return {"model": str(model_dir), "test_set": test.source, "test_examples": len(test),
            "shipped": manifest["variant"], "gate_reason": manifest["metrics"]["gate"]["reason"], "variants": variants}


def target_check(student: dict) -> dict:
    """The fastest INT8 student within one point of fp32's test accuracy, against fp32, at the target setting."""
    fp32 = student["variants"]["fp32"]
    base = latency_at(fp32, **TARGET)["median_ms"]
    int8 = {n: v for n, v in student["variants"].items() if v.get("precision") == "int8"
            and fp32["test_accuracy"] - v["test_accuracy"] <= 0.01 + 1e-12}
    if not int8:
        return {"met": False, "why": "no INT8 variant within one point of fp32's test accuracy"}
    best = min(int8, key=lambda n: latency_at(int8[n], **TARGET)["median_ms"])
    speedup = base / latency_at(int8[best], **TARGET)["median_ms"]
    lost = fp32["test_accuracy"] - int8[best]["test_accuracy"]
    return {"variant": best, "speedup": speedup, "accuracy_points_lost": lost * 100, "met": speedup >= 3.0}


def achieved_gops(student_dir: Path, student: dict, ceiling: dict) -> dict:
    gop = config_flops(json.loads((student_dir / "config.json").read_text()), TARGET["tokens"]) / 1e9
    found = {}
    for name, variant in student["variants"].items():
        if "error" not in variant:
            seconds = latency_at(variant, **TARGET)["median_ms"] / 1e3
            ceiling_key = "int8_gops_1_thread" if variant["precision"] == "int8" else "fp32_gflops_1_thread"
            found[name] = {"gops": gop / seconds, "of_ceiling": gop / seconds / ceiling[ceiling_key]}
    return {"gop_per_sequence": gop, "variants": found}


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['flags'])}). "
        f"onnxruntime {report['versions'].get('onnxruntime')}. "
        f"Latency: median and p99 of {report['repeat']} runs on random token ids (full attention mask).",
        "",
        "GEMM ceilings (1024^3, onnxruntime): "
        + ", ".join(f"{k.replace('_', ' ')} {v:,.0f}" for k, v in report["ceiling"].items()) + ".",
        "",
    ]
    for role, model in report["models"].items():
        lines += [f"## {role}: {model['model']}", "",
                  f"Test: {model['test_set']}, {model['test_examples']} examples. "
                  f"Shipped by the gate: {model['gate_reason']}", "",
                  "| variant | test acc | MB | fusions off | "
                  + " | ".join(f"b{b} s{s} t{t}" for b in BATCHES for s in LENGTHS for t in THREADS) + " |",
                  "|---|---:|---:|---|" + "---:|" * (len(BATCHES) * len(LENGTHS) * len(THREADS))]
        for name, v in model["variants"].items():
            if "error" in v:
                lines.append(f"| {name} | {v['error']} |")
                continue
            cells = [f"{latency_at(v, b, s, t)['median_ms']:.2f} / {latency_at(v, b, s, t)['p99_ms']:.2f}"
                     for b in BATCHES for s in LENGTHS for t in THREADS]
            lines.append(f"| {name} | {v['test_accuracy']:.4f} | {v['size_bytes'] / 1e6:.1f} | "
                         f"{', '.join(v['disabled_optimizers']) or '-'} | " + " | ".join(cells) + " |")
        lines += ["", "Cells: median / p99 ms; b batch size, s tokens, t threads.", ""]
        effects = [f"{name} {latency_at(v, **TARGET)['median_ms']:.2f} ms "
                   f"without {', '.join(v['disabled_optimizers'])}, "
                   f"{v['target_with_all_load_time_fusions']['median_ms']:.2f} ms with it"
                   for name, v in model["variants"].items() if v.get("target_with_all_load_time_fusions")]
        if effects:
            lines += ["onnxruntime load-time fusions the gate turned off, at batch 1, 128 tokens, 1 thread: "
                      + "; ".join(effects) + ".", ""]
    check = report["student_int8_vs_fp32"]
    if check.get("variant"):
        lines.append(f"Target (INT8 student >= 3x its fp32 ONNX at batch 1, 128 tokens, 1 thread, <= 1 point lost): "
                     f"{check['variant']} is {check['speedup']:.2f}x faster, test accuracy "
                     f"{-check['accuracy_points_lost']:+.2f} points: {'met' if check['met'] else 'NOT met'}.")
    else:
        lines.append(f"Target: NOT met ({check['why']}).")
    gops = report["student_gops"]
    lines += ["", f"Student at batch 1, 128 tokens, 1 thread: {gops['gop_per_sequence']:.2f} GOP of matrix products "
              "per sequence.",
              "", "| variant | achieved GOP/s | of the ceiling |", "|---|---:|---:|"]
    lines += [f"| {n} | {g['gops']:.0f} | {g['of_ceiling']:.1%} |" for n, g in gops["variants"].items()]
    profile = report["student_profile"]
    lines += ["", "Where the student's time goes at batch 1, 128 tokens, 1 thread (onnxruntime profiler, ms per run; "
              "the operators onnxruntime fuses at load time):", "", "| operator | " + " | ".join(profile) + " |",
              "|---|" + "---:|" * len(profile)]
    for op in sorted({op for spent in profile.values() for op in spent},
                     key=lambda op: -max(p.get(op, 0) for p in profile.values()))[:12]:
        lines.append(f"| {op} | " + " | ".join(f"{p.get(op, 0):.3f}" for p in profile.values()) + " |")
    lines.append("| total | " + " | ".join(f"{sum(p.values()):.3f}" for p in profile.values()) + " |")
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=False)
    for ax, (role, model) in zip(axes, report["models"].items()):
        names = [n for n, v in model["variants"].items() if "error" not in v]
        x = np.arange(len(LENGTHS))
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            values = [latency_at(model["variants"][name], 1, s, 1)["median_ms"] for s in LENGTHS]
            ax.bar(x + i * width, values, width, label=name)
        ax.set_xticks(x + 0.4 - width / 2, [f"{s} tokens" for s in LENGTHS])
        ax.set_title(f"{role}: batch 1, 1 thread")
        ax.set_ylabel("median latency (ms)")
    axes[0].legend(fontsize=8)
    save_figure(fig, path)


if __name__ == "__main__":
    try:
        main()
    except TinyshipError as e:
        raise SystemExit(f"error: {e}") from None
