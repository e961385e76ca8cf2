"""PyTorch model directory -> ONNX, through optimum's exporter, and the logits parity check against PyTorch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.runtime.errors import TinyshipError

TASK = "text-classification"


def to_onnx(model_dir: Path, out_dir: Path, opset: int = 18) -> Path:
    """Export with dynamic batch and sequence axes; returns the .onnx path (config.json and tokenizer beside it)."""
    from optimum.exporters.onnx import main_export
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # optimum passes transformers a deprecated argument; the warning is not ours to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant masks are expected and harmless
        try:
            main_export(str(model_dir), output=str(out_dir), task=TASK, opset=opset, do_validation=False, no_post_process=True)
        except (ValueError, KeyError) as e:
            raise TinyshipError(f"cannot export {model_dir} to ONNX: {e}") from None
        finally:
            logging.set_verbosity(verbosity)
    return out_dir / "model.onnx"


def check_parity(model_dir: Path, onnx_path: Path, texts: list, max_length: int, atol: float) -> dict[str, float]:
    """Largest |ONNX - PyTorch| logit difference per shape (batch 1 on the longest input; batch 3 of short,
    median and longest, padded); raises past atol."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    by_length = sorted(texts, key=lambda t: len(t) if isinstance(t, str) else sum(map(len, t)))
    batches = {"batch1": by_length[-1:], "batch3_padded": [by_length[0], by_length[len(by_length) // 2], by_length[-1]]}
    diffs = {}
    for shape, batch in batches.items():
        firsts, seconds = zip(*batch) if isinstance(batch[0], tuple) else (batch, None)
        encoded = tokenizer(list(firsts), list(seconds) if seconds else None, padding=True, truncation=True,
                            max_length=max_length, return_tensors="np")
        onnx_logits = session.run(None, {n: encoded[n].astype(np.int64) for n in names})[0]
        with torch.inference_mode():
            torch_logits = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
        diffs[f"{shape}_seq{encoded['input_ids'].shape[1]}"] = float(np.abs(onnx_logits - torch_logits).max())
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > atol:
        raise TinyshipError(
            f"ONNX logits differ from PyTorch by {diffs[worst]:.2e} at {worst} (allowed {atol:.0e}; all: {diffs}): "
            "the bundle was not written"
        )
    return diffs
