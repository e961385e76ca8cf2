"""Pruning benchmark: accuracy against encoder FLOPs kept, before and after recovery by distillation.

The demo teacher (MiniLM-L6 fine-tuned on Rotten Tomatoes), or with --model the demo student, is pruned to
80, 60, 40 and 30% of its encoder FLOPs
(heads and FFN neurons ranked globally by the taylor importance on 256 training examples), then recovered by
distillation from the teacher (hidden states for one epoch, predictions for two). Each point's test
accuracy is measured before and after recovery, and the recovered model is exported to INT8 ONNX (dynamic) and timed at
batch 1, 128 tokens, 1 thread, beside the unpruned model's INT8 export. Steps are skipped when their output
exists, so a rerun resumes.

    python -m benchmarks.prune.run             # after `make demo`; about 25 minutes on 2 cores
    python -m benchmarks.prune.run --model runs/demo/student --work runs/bench-prune-student \\
        --results benchmarks/results/prune-student
    python -m benchmarks.prune.run --quick
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.lab.plots import save_figure
from tinyship.compress import DistillConfig, Phase, PruneConfig, distill, load_model, prune
from tinyship.compress.pruning import encoder_flops
from tinyship.compress.tasks import TASKS
from tinyship.export import ExportConfig, export
from tinyship.export.bundling import versions
from tinyship.export.evaluation import evaluate, latency
from tinyship.export.quantization import batch_invariant_of
from tinyship.export.report import machine, save_results
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig

REMOVED = (0.2, 0.4, 0.6, 0.7)  # FLOPs kept: 80, 60, 40, 30%
RECOVERY = [Phase({"hidden": 1.0}, 1), Phase({"prediction": 1.0}, 2)]


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/demo/teacher", help="the recovery's teacher (default: %(default)s)")
    parser.add_argument("--model", help="the model to prune (default: the teacher; e.g. runs/demo/student)")
    add_run_arguments(parser, "prune", "64 examples per split, short recovery")
    args = parser.parse_args()
    teacher, (work, results) = Path(args.teacher), run_paths(args, "prune")
    model_dir = Path(args.model or args.teacher)
    for path in (teacher, model_dir):
        if not (path / "config.json").is_file():
            raise SystemExit(f"no model at {path}: run `make demo` first, or pass --teacher / --model DIR")
    data = DataConfig(limit=64) if args.quick else DataConfig()
    recovery = [Phase(p.losses, 0.5 if args.quick else p.epochs) for p in RECOVERY]
    task = TASKS["classification"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(teacher))
    labels = [load_model(model_dir).config.id2label[i] for i in range(2)]
    test_rows = task.encode(task.load(data, "test", labels), tokenizer, data.max_length)
    ids = np.random.default_rng(0).integers(1000, 30000, (1, 128))
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}

    def measure(model_dir: Path, name: str) -> dict:
        """Test accuracy and latency of the model's INT8 dynamic export (kept as a candidate, whatever the gate
        ships)."""
        bundle, candidates = work / f"{name}-bundle", work / f"{name}-candidates"
        if not (bundle / "tinyship.json").is_file():
            export(ExportConfig(model=str(model_dir), output=str(bundle), data=data, quantize="dynamic", optimize=False,
                                candidates_dir=str(candidates), force=True))
        disabled = read_manifest(bundle)["metrics"]["candidates"]["int8-dynamic"]["disabled_optimizers"]
        int8 = candidates / "int8-dynamic" / "model.onnx"
        return {"int8_test_accuracy": evaluate(int8, test_rows, task, tokenizer.pad_token_id, disabled,
                                                       batch_invariant_of("int8-dynamic")),
                "int8_latency": latency(int8, feed, 1, 10, 20 if args.quick else 200, disabled)}

    base = load_model(model_dir)
    full_flops = encoder_flops(base)
    points = [{"flops_kept": 1.0, "parameters": sum(p.numel() for p in base.parameters()),
               "test_accuracy": pytorch_accuracy(model_dir, test_rows, task), **measure(model_dir, "unpruned")}]
    for removed in REMOVED:
        name = f"flops-{round((1 - removed) * 100)}"
        pruned = work / name
        if not pruned.exists():
            prune(PruneConfig(model=str(model_dir), output_dir=str(pruned), data=data, flops=removed))
        recovered = work / f"{name}-recovered"
        if not recovered.exists():
            distill(DistillConfig(teacher=str(teacher), student=str(pruned), output_dir=str(recovered), data=data,
                                  phases=recovery, min_steps=0))
        model = load_model(recovered)
        stage = json.loads((pruned / "tinyship_stage.json").read_text())
        point = {"flops_kept": encoder_flops(model) / full_flops,
                 "parameters": sum(p.numel() for p in model.parameters()),
                 "heads_kept": stage["heads_kept"], "ffn_kept": stage["ffn_kept"],
                 "test_accuracy_before_recovery": pytorch_accuracy(pruned, test_rows, task),
                 "test_accuracy": pytorch_accuracy(recovered, test_rows, task), **measure(recovered, name)}
        points.append(point)
        print(json.dumps(point))
    report = {"machine": machine(), "versions": versions(), "model": str(model_dir), "teacher": str(teacher),
              "test_examples": len(test_rows),
              "recovery": [{"losses": p.losses, "epochs": p.epochs} for p in recovery], "points": points}
    save_results(results, report, markdown(report))
    plot(report, results / "accuracy.png")
    print((results / "results.md").read_text())


def pytorch_accuracy(model_dir: Path, rows: list[dict], task) -> float:
    import torch

    from tinyship.compress.training import PadCollator

    model = load_model(model_dir).eval()
    collate = PadCollator({"input_ids": 0})
    correct = 0.0
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            batch = collate(rows[start : start + 64])
            labels = batch.pop("labels")
            correct += task.score(model(**batch).logits.numpy(), labels.numpy())[0]
    return correct / len(rows)


def markdown(report: dict) -> str:
    unpruned = report["points"][0]
    lines = [f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores. "
             f"Pruned: {report.get('model', report['teacher'])}; recovery "
             f"teacher {report['teacher']}; test split, {report['test_examples']} examples. Recovery: "
             + ", then ".join(f"{', '.join(p['losses'])} for {p['epochs']} epoch(s)" for p in report["recovery"])
             + ". INT8 latency: batch 1, 128 tokens, 1 thread, median of the runs.", "",
             "| encoder FLOPs kept | heads kept | parameters M | accuracy before recovery | after | lost (points) | "
             "INT8 accuracy | INT8 ms | faster |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    base_ms = unpruned["int8_latency"]["median_ms"]
    for p in report["points"]:
        before = p.get("test_accuracy_before_recovery")
        lines.append(f"| {p['flops_kept']:.0%} | {sum(p['heads_kept']) if 'heads_kept' in p else 'all'} | "
                     f"{p['parameters'] / 1e6:.1f} | {'' if before is None else format(before, '.4f')} | "
                     f"{p['test_accuracy']:.4f} | {(unpruned['test_accuracy'] - p['test_accuracy']) * 100:.2f} | "
                     f"{p['int8_test_accuracy']:.4f} | {p['int8_latency']['median_ms']:.2f} | "
                     f"{base_ms / p['int8_latency']['median_ms']:.2f}x |")
    at_60 = next((p for p in report["points"] if abs(p["flops_kept"] - 0.6) < 0.05), None)
    if at_60:
        lost = (unpruned["test_accuracy"] - at_60["test_accuracy"]) * 100
        lines += ["", f"Target (40% of FLOPs removed, <= 1 point lost after recovery): {lost:.2f} points lost, "
                      f"{'met' if lost <= 1 else 'NOT met'}; "
                      f"INT8 latency {base_ms / at_60['int8_latency']['median_ms']:.2f}x "
                      "the unpruned model's."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = report["points"]
    kept = [p["flops_kept"] * 100 for p in points]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.plot(kept, [p["test_accuracy"] for p in points], "o-", label="after recovery (PyTorch)")
    ax.plot(kept[1:], [p["test_accuracy_before_recovery"] for p in points[1:]], "s--", label="before recovery")
    ax.plot(kept, [p["int8_test_accuracy"] for p in points], "^:", label="after recovery, INT8 ONNX")
    ax.set_xlabel("encoder FLOPs kept (%)")
    ax.set_ylabel("test accuracy")
    ax.invert_xaxis()
    ax.legend()
    ax.set_title(f"Pruning {Path(report.get('model', report['teacher'])).name} on Rotten Tomatoes")
    save_figure(fig, path)


if __name__ == "__main__":
    main()
