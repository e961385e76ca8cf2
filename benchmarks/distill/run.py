"""Distillation benchmark on the built-in task: the TinyBERT method against the simpler choices.

Teacher: MiniLM-L6 fine-tuned on Rotten Tomatoes. For students of 3 and 2 layers (cut from the teacher's
layers, mapped uniformly), compare on the fixed test split:
  (a) fine-tuning the student on the labels alone, no teacher;
  (b) prediction-loss distillation only;
  (c) TinyBERT: general distillation (pre-trained MiniLM teacher, Penn Treebank text), then task distillation
      (intermediate losses, then the prediction loss) on the training set augmented by word replacement.
Also the augmentation's throughput. Every step is skipped when its output exists, so a rerun resumes;
an interrupted training step resumes from its checkpoint.

    python -m benchmarks.distill.run            # full (about an hour on 2 cores)
    python -m benchmarks.distill.run --quick    # minutes: a check that the benchmark runs end to end
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.lab.plots import save_figure
from tinyship.compress import AugmentConfig, DistillConfig, FinetuneConfig, Phase, augment, distill, finetune
from tinyship.compress.corpus import corpus_lines
from tinyship.export.bundling import versions
from tinyship.export.report import machine, torch_row, typical_input
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig, load_examples
from tinyship.runtime.files import write_text_atomic

INTERMEDIATE = {"embedding": 1.0, "hidden": 1.0, "attention": 1.0}


def timed(results: dict, name: str, out: Path, make) -> Path:
    """Run make() unless out exists; record its wall time the first time, saved at once to results["file"]."""
    if not out.exists():
        start = time.perf_counter()
        make()
        results.setdefault("seconds", {})[name] = round(time.perf_counter() - start, 1)
        Path(results["file"]).write_text(json.dumps(results, indent=2))
    return out


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, "distill", "64 examples per split, short phases")
    parser.add_argument("--copies", type=int, default=4, help="augmented copies per example (default: %(default)s)")
    parser.add_argument("--layers", default="3,2", help="student sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--corpus-lines", type=int, default=10000,
                        help="Penn Treebank lines for general distillation (default: %(default)s)")
    args = parser.parse_args()
    work, results_dir = run_paths(args, "distill")
    work.mkdir(parents=True, exist_ok=True)
    data = DataConfig(limit=64, max_length=64) if args.quick else DataConfig()
    epochs = 1 if args.quick else 3
    scale = 0.5 if args.quick else 1.0
    state_file = work / "results.json"
    results = json.loads(state_file.read_text()) if state_file.is_file() else {"file": str(state_file)}

    teacher = timed(results, "teacher", work / "teacher",
                    lambda: finetune(FinetuneConfig(output_dir=str(work / "teacher"), data=data, epochs=epochs,
                                                    min_steps=0)))
    augmented = work / "augmented.jsonl"
    if not augmented.exists():
        start = time.perf_counter()
        augment(AugmentConfig(output=str(augmented), data=data, model=str(teacher), copies=args.copies))
        seconds = time.perf_counter() - start
        examples = len(load_examples(data, "train"))
        results["augmentation"] = {"examples": examples, "copies": args.copies, "seconds": round(seconds, 2),
                                   "examples_per_second": round(examples / seconds, 1),
                                   "augmented_per_second": round(examples * args.copies / seconds, 1)}
    corpus = work / "corpus.txt"
    if not corpus.exists():
        lines = [line for _, line in zip(range(200 if args.quick else args.corpus_lines), corpus_lines("treebank"))]
        write_text_atomic(corpus, "\n".join(lines) + "\n")

    variants = {}
    for layers in map(int, args.layers.split(",")):
        base = DistillConfig(teacher=str(teacher), data=data, student_layers=layers, min_steps=0)
        runs = {
            "a: fine-tune, no teacher": replace(base, phases=[Phase({"labels": 1.0}, epochs)], learning_rate=5e-5),
            "b: prediction loss only": replace(base, phases=[Phase({"prediction": 1.0}, epochs)]),
        }
        general = work / f"general-{layers}"
        timed(results, f"general-{layers}", general, lambda: distill(DistillConfig(
            stage="general", output_dir=str(general), corpus=str(corpus), student_layers=layers, min_steps=0,
            data=replace(data, max_length=128), phases=[Phase(INTERMEDIATE, scale)])))
        runs["c: TinyBERT (general + task + augmentation)"] = replace(
            base, student_layers=None, student=str(general), augmented=str(augmented), cache_teacher=True,
            phases=[Phase(INTERMEDIATE, scale), Phase({"prediction": 1.0}, scale)])
        for method, config in runs.items():
            out = work / f"{layers}-layers-{method[0]}"
            timed(results, out.name, out, lambda: distill(replace(config, output_dir=str(out))))
            variants[(layers, method)] = out
        state_file.write_text(json.dumps(results, indent=2))

    test = load_examples(data, "test")
    typical = typical_input(test, teacher / "tokenizer.json", data.max_length)
    rows = [{**torch_row("teacher", teacher, test, typical, data.max_length), "layers": 6,
             "method": "fine-tuned MiniLM-L6"}]
    for (layers, method), out in variants.items():
        rows.append({**torch_row(f"student {layers}L", out, test, typical, data.max_length), "layers": layers,
                     "method": method})
    for row in rows:
        row["accuracy_kept"] = row["accuracy"] / rows[0]["accuracy"]
        row["speedup"] = rows[0]["median_ms"] / row["median_ms"]
    report = {
        "benchmark": "distill", "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
        "task": "rotten_tomatoes (built-in split)", "test_examples": len(test),
        "latency": {"batch_size": 1, "threads": 1, "input_tokens": int(typical["input_ids"].shape[1]),
                    "runtime": "PyTorch fp32"},
        "augmentation": results.get("augmentation"), "training_seconds": results.get("seconds"),
        "rows": rows, "machine": machine(), "versions": versions(),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results_dir / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(results_dir / "results.md", markdown(report))
    plot(report, results_dir / "accuracy.png")
    print(markdown(report))


def markdown(report: dict) -> str:
    aug = report["augmentation"]
    lines = [
        f"# Distillation benchmark ({report['date']}{', quick mode' if report['quick'] else ''})",
        "",
        f"{report['task']}, {report['test_examples']} test examples. Latency: PyTorch fp32, batch 1, "
        f"{report['latency']['input_tokens']} tokens, 1 thread, on {report['machine']['cpu']}.",
        "",
        "| model | method | test accuracy | of teacher | parameters | latency ms (median) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['method']} | {r['accuracy']:.4f} | {100 * r['accuracy_kept']:.1f}% | "
                     f"{r['parameters'] / 1e6:.1f}M | {r['median_ms']:.2f} | {r['speedup']:.2f}x |")
    lines += ["", f"Augmentation: {aug['examples']} examples x {aug['copies']} copies in {aug['seconds']} s: "
              f"{aug['examples_per_second']} examples/s ({aug['augmented_per_second']} augmented rows/s), "
              "word-vector candidates from the teacher's input embeddings.", "",
              "Training wall times (s): "
              + ", ".join(f"{k} {v}" for k, v in (report["training_seconds"] or {}).items()), ""]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    teacher = rows[0]["accuracy"]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    methods = sorted({r["method"] for r in rows[1:]})
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        chosen = [r for r in rows[1:] if r["method"] == method]
        ax.bar([r["layers"] + (i - (len(methods) - 1) / 2) * width for r in chosen],
               [100 * r["accuracy"] for r in chosen], width, label=method)
    ax.axhline(100 * teacher, color="black", linestyle="--", label=f"teacher (6 layers) {100 * teacher:.1f}%")
    ax.axhline(98 * teacher, color="grey", linestyle=":", label="98% of the teacher")
    sizes = sorted({r["layers"] for r in rows[1:]})
    ax.set_xticks(sizes, [f"{n}-layer student" for n in sizes])
    ax.set_ylabel("test accuracy (%)")
    low = min(100 * r["accuracy"] for r in rows)
    ax.set_ylim(max(0, low - 5), 100 * teacher + 3)
    ax.set_title("Rotten Tomatoes: students of a fine-tuned MiniLM-L6")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    save_figure(fig, path)


if __name__ == "__main__":
    main()
