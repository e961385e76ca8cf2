"""The compression report: teacher and student, PyTorch and ONNX, side by side on the test split.

For each model: test accuracy and macro-F1 (beside the majority-class baseline: always predicting the most
frequent label), size on disk, parameters, and the latency of one forward pass at batch 1 on a typical input
(the test text of median token count), on one thread.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoTokenizer, DataCollatorWithPadding

from tinyship.compress.pruning import load_model
from tinyship.compress.tasks import class_metrics, majority_baseline
from tinyship.export.bundling import versions
from tinyship.export.evaluation import session
from tinyship.export.exporting import model_labels
from tinyship.export.quantization import batch_invariant_of
from tinyship.runtime.bench import machine, timed
from tinyship.runtime.data import DataConfig, Examples, load_examples
from tinyship.runtime.files import weights_bytes, write_text_atomic
from tinyship.runtime.predictor import TextClassifier, load_tokenizer

WARMUP, REPEAT = 20, 200


def typical_input(examples: Examples, tokenizer_file: Path, max_length: int) -> dict[str, np.ndarray]:
    """The tokenized test input of median token count, as a batch of one."""
    tokenizer, _ = load_tokenizer(tokenizer_file, max_length)
    encodings = tokenizer.encode_batch(examples.inputs())
    median = sorted(encodings, key=lambda e: len(e.ids))[len(encodings) // 2]
    return {
        "input_ids": np.array([median.ids], dtype=np.int64),
        "attention_mask": np.array([median.attention_mask], dtype=np.int64),
        "token_type_ids": np.array([median.type_ids], dtype=np.int64),
    }


def torch_row(name: str, model_dir: Path, test: Examples, typical: dict, max_length: int) -> dict:
    model = load_model(model_dir).eval()  # plain or pruned
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    collate = DataCollatorWithPadding(tokenizer)
    encoded = tokenizer(test.texts, test.text_pairs, truncation=True, max_length=max_length)
    rows = [{k: encoded[k][i] for k in encoded} for i in range(len(test))]
    predicted = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), 64), desc=f"{name}: test accuracy", leave=False):
            predicted += model(**collate(rows[start : start + 64])).logits.argmax(-1).tolist()
        accepted = inspect.signature(model.forward).parameters
        inputs = {k: torch.from_numpy(v) for k, v in typical.items() if k in accepted}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            timing = timed(lambda: model(**inputs), WARMUP, REPEAT)
        finally:
            torch.set_num_threads(threads)
    return {
        "model": name,
        **scores(np.array(predicted), test),
        "size_bytes": weights_bytes(model_dir),
        "parameters": sum(p.numel() for p in model.parameters()),
        **timing,
    }


def scores(predicted: np.ndarray, examples: Examples) -> dict:
    """Accuracy and macro-F1 of predicted label ids."""
    metrics = class_metrics(predicted, np.array(examples.labels))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def onnx_row(name: str, model_file: Path, model_dir: Path, test: Examples, typical: dict, max_length: int,
             parameters: int, disabled_optimizers: list[str], batch_invariant: bool) -> dict:
    """An ONNX model, loaded with the session settings its export chose and scored as the runtime serves it."""
    run = session(model_file, threads=1, disabled_optimizers=disabled_optimizers)
    feed = {i.name: typical[i.name] for i in run.get_inputs()}
    classify = TextClassifier(model_file, model_dir / "tokenizer.json", model_labels(model_dir), max_length=max_length,
                              disabled_optimizers=disabled_optimizers, batch_invariant=batch_invariant)
    return {
        "model": name,
        **scores(classify.logits(test.inputs()).argmax(axis=-1), test),
        "size_bytes": model_file.stat().st_size,
        "parameters": parameters,  # those of the PyTorch model it was exported from
        **timed(lambda: run.run(None, feed), WARMUP, REPEAT),
    }


def compression_report(teacher_dir: Path, student_dir: Path, candidates: dict[str, Path], data: DataConfig,
                       out_dir: Path, gate: dict | None = None, warnings: list[str] | None = None) -> dict:
    """Measure teacher, student and the student's ONNX candidates; write report.json and report.md to out_dir.
    gate: the bundle manifest's metrics, whose candidate table the report repeats (with the validation split's
    majority-class baseline); warnings: lines the report states first (e.g. a weak teacher, let through)."""
    labels = model_labels(teacher_dir)
    test = load_examples(data, "test", labels)
    typical = typical_input(test, student_dir / "tokenizer.json", data.max_length)
    rows = [torch_row("teacher (PyTorch fp32)", teacher_dir, test, typical, data.max_length)]
    rows.append(torch_row("student (PyTorch fp32)", student_dir, test, typical, data.max_length))
    for name, path in candidates.items():
        disabled = gate["candidates"][name]["disabled_optimizers"] if gate else []
        rows.append(onnx_row(f"student (ONNX {name})", path, student_dir, test, typical, data.max_length,
                             rows[1]["parameters"], disabled, batch_invariant_of(name)))
    teacher = rows[0]
    for row in rows:
        row["speedup"] = teacher["median_ms"] / row["median_ms"]
        row["size_reduction"] = teacher["size_bytes"] / row["size_bytes"]
        row["accuracy_kept"] = row["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None
    report = {
        "warnings": warnings or [],
        "test_set": test.source,
        "test_examples": len(test),
        "majority_baseline": _baseline(test),
        "latency": {"batch_size": 1, "threads": 1, "tokens": int(typical["input_ids"].shape[1]),
                    "warmup": WARMUP, "repeat": REPEAT},
        "machine": machine(),
        "versions": versions(),
        "rows": rows,
        "export_gate": gate,
        "validation_majority_baseline": _baseline(load_examples(data, "validation", labels)) if gate else None,
    }
    write_text_atomic(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out_dir / "report.md", markdown(report))
    return report


def _baseline(examples: Examples) -> dict:
    """What always predicting the most frequent label scores on these examples, and that label."""
    baseline = majority_baseline(examples.labels)
    return {"label": examples.label_names[baseline["majority_label"]], "accuracy": baseline["majority_baseline"],
            "macro_f1": baseline["majority_macro_f1"]}


def _describe_baseline(baseline: dict) -> str:
    return (f"always predicting the most frequent label ({baseline['label']!r}) scores accuracy "
            f"{baseline['accuracy']:.4f}, macro-F1 {baseline['macro_f1']:.4f}")


def save_results(directory: str | Path, report: dict, markdown_text: str) -> Path:
    """A benchmark's results.json and results.md, each written atomically; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_text_atomic(directory / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(directory / "results.md", markdown_text)
    return directory


def markdown(report: dict) -> str:
    latency = report["latency"]
    lines = [f"**Warning:** {warning}." for warning in report["warnings"]] + [""] * bool(report["warnings"])
    lines += [
        f"Test set: {report['test_set']}, {report['test_examples']} examples; the majority-class baseline: "
        f"{_describe_baseline(report['majority_baseline'])}. "
        f"Latency: one forward pass, batch {latency['batch_size']}, {latency['tokens']} tokens, "
        f"{latency['threads']} thread, median and p99 of {latency['repeat']} runs. "
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores "
        f"({', '.join(report['machine']['flags']) or 'no AVX2/VNNI'}).",
        "",
        "| model | accuracy | macro-F1 | kept | size MB | smaller | params M | median ms | p99 ms | faster |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['model']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | "
            f"{'n/a' if r['accuracy_kept'] is None else format(r['accuracy_kept'], '.1%')} | "
            f"{r['size_bytes'] / 1e6:.1f} | "
            f"{r['size_reduction']:.1f}x | {r['parameters'] / 1e6:.1f} | {r['median_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['speedup']:.1f}x |"
        )
    gate = report.get("export_gate")
    if gate:
        latency = gate["gate"]["latency"]
        lines += [
            "",
            f"Export candidates, on {gate['validation_examples']} validation examples (the majority-class baseline: "
            f"{_describe_baseline(report['validation_majority_baseline'])}); latency at batch "
            f"{latency['batch_size']}, {latency['tokens']} tokens, {latency['threads']} thread:",
            "",
            f"| variant | precision | {gate['metric']} | median ms | p99 ms | size MB | within budget |",
            "|---|---|---:|---:|---:|---:|---|",
        ]
        for name, c in gate["candidates"].items():
            if "error" in c:
                lines.append(f"| {name} | | | | | | {c['error']} |")
            else:
                lines.append(f"| {name} | {c['precision']} | {c[gate['metric']]:.4f} | {c['median_ms']:.2f} | "
                             f"{c['p99_ms']:.2f} | {c['size_bytes'] / 1e6:.1f} | {'yes' if c['passed'] else 'no'} |")
        lines += ["", f"Shipped: {gate['gate']['reason']}"]
    return "\n".join(lines) + "\n"
