"""`export`: a model directory in, a verified bundle out (ONNX, parity-checked, optionally INT8)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from tinyship.export.bundling import check_bundle_output, write_bundle
from tinyship.export.config import ExportConfig
from tinyship.export.onnx_export import TASK, check_parity, to_onnx
from tinyship.export.quantization import QUANTIZERS, precision_of
from tinyship.runtime.data import load_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir
from tinyship.runtime.predictor import TextClassifier


def model_labels(model_dir: Path) -> list[str]:
    """The label names of a classifier directory, in id order, from its config.json."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    try:
        return [id2label[str(i)] for i in range(len(id2label))]
    except KeyError:
        raise TinyshipError(
            f"{model_dir}/config.json: id2label must map ids 0..{len(id2label) - 1} to label names "
            f"(found ids {sorted(id2label)}); export a fine-tuned classifier"
        ) from None


def accuracy(classify: TextClassifier, examples) -> float:
    predicted = classify.logits(examples.inputs()).argmax(axis=-1)
    return float((predicted == examples.labels).mean())


def export(config: ExportConfig) -> Path:
    """Write the bundle and return its path; candidates_dir (if set) keeps each candidate as PRECISION/model.onnx."""
    out = Path(config.output)
    check_bundle_output(out, config.force)
    model_dir = check_model_dir(config.model)
    labels = model_labels(model_dir)
    validation = load_examples(config.data, "validation", labels)
    if config.candidates_dir:
        work = Path(config.candidates_dir)
        shutil.rmtree(work, ignore_errors=True)  # no stale candidate from an earlier run
        return _export(config, model_dir, labels, validation, work, out)
    with tempfile.TemporaryDirectory(prefix="tinyship-export-") as work:
        return _export(config, model_dir, labels, validation, Path(work), out)


def _export(config: ExportConfig, model_dir: Path, labels: list[str], validation, work: Path, out: Path) -> Path:
    print(f"exporting {model_dir} to ONNX (opset {config.opset})")
    candidates = {"fp32": to_onnx(model_dir, work / "fp32", config.opset)}
    parity = check_parity(model_dir, candidates["fp32"], validation.inputs(), config.data.max_length, config.parity_atol)
    print(f"parity with PyTorch: largest logit difference {max(parity.values()):.2e}")
    if config.quantize != "none":
        quantized = work / config.quantize / "model.onnx"
        quantized.parent.mkdir(parents=True, exist_ok=True)
        QUANTIZERS[config.quantize](candidates["fp32"], quantized)
        candidates[config.quantize] = quantized
    measured, inputs = {}, {}
    for name, path in candidates.items():
        classify = TextClassifier(path, model_dir / "tokenizer.json", labels, max_length=config.data.max_length)
        inputs[name] = classify.input_names
        measured[name] = {"validation_accuracy": accuracy(classify, validation), "size_bytes": path.stat().st_size}
        print(f"{name}: validation accuracy {measured[name]['validation_accuracy']:.4f}, "
              f"{measured[name]['size_bytes'] / 1e6:.1f} MB")
    shipped = config.quantize if config.quantize != "none" else "fp32"
    bundle = write_bundle(
        out,
        candidates[shipped],
        model_dir,
        {
            "task": TASK,
            "labels": labels,
            "max_length": config.data.max_length,
            "inputs": inputs[shipped],
            "outputs": ["logits"],
            "precision": precision_of(shipped),
            "quantization": config.quantize,
            "metrics": {
                **measured[shipped],
                "validation_set": validation.source,
                "parity_max_abs_diff": parity,
                "candidates": measured,
            },
            "source_model": str(model_dir),
        },
    )
    print(f"bundle written to {bundle}")
    return bundle
