"""The runtime benchmark's contenders: what a user would run to classify a text with the same model, each measured
in a fresh process (`python -m benchmarks.runtime.contenders`) from its launch through its imports, load and first
prediction, then timed on a short and a long text. A contender's setup imports only what it needs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from benchmarks.lab.fresh import in_fresh_process, payload, report
from tinyship.runtime.bench import peak_rss_mb, timed


@dataclass(frozen=True)
class Contender:
    packages: tuple[str, ...]  # what it needs installed (their sizes are reported)
    setup: Callable[[str, str], Callable[[str], object]]  # (bundle, PyTorch model directory) -> classify(text)


def _tinyship(bundle: str, model: str):
    from tinyship.runtime import load

    return load(bundle, threads=1)


def _raw_session(bundle: str, model: str):
    """tokenizers and an onnxruntime session by hand: the floor, no library around them."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(f"{bundle}/model.onnx", options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_file(f"{bundle}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(128)
    names = [i.name for i in session.get_inputs()]

    def classify(text: str):
        e = tokenizer.encode(text)
        feed = {"input_ids": np.array([e.ids]), "attention_mask": np.array([e.attention_mask]),
                "token_type_ids": np.array([e.type_ids])}
        logits = session.run(None, {n: feed[n] for n in names})[0][0]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return int(p.argmax()), float(p.max())

    return classify


def _optimum(bundle: str, model: str):
    """transformers.pipeline over optimum's ORTModelForSequenceClassification on the same ONNX file."""
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    loaded = ORTModelForSequenceClassification.from_pretrained(bundle, session_options=options)
    classify = pipeline("text-classification", model=loaded, tokenizer=AutoTokenizer.from_pretrained(bundle))
    return lambda text: classify(text, truncation=True, max_length=128)


def _transformers(bundle: str, model: str):
    """transformers.pipeline over the PyTorch model."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(1)
    classify = pipeline("text-classification", model=model)
    return lambda text: classify(text, truncation=True, max_length=128)


CONTENDERS = {
    "tinyship": Contender(("numpy", "onnxruntime", "tokenizers"), _tinyship),
    "raw session": Contender(("numpy", "onnxruntime", "tokenizers"), _raw_session),
    "optimum": Contender(("optimum", "optimum-onnx", "onnxruntime", "transformers", "torch", "tokenizers", "numpy"),
                         _optimum),
    "transformers": Contender(("transformers", "torch", "tokenizers", "numpy"), _transformers),
}


def measure(spec: dict) -> dict:
    """Cold start from the process's launch to its first prediction, its peak RSS then, and the latency on each text."""
    classify = CONTENDERS[spec["name"]].setup(spec["bundle"], spec["model"])
    classify(spec["texts"]["short"])
    cold, rss = time.time() - spec["launched_at"], peak_rss_mb()
    repeat = spec["repeat"]
    latency = {name: timed(lambda: classify(text), max(5, repeat // 10), repeat)
               for name, text in spec["texts"].items()}
    return {"cold_start_s": cold, "peak_rss_mb": rss, "latency": latency}


def run_contender(name: str, bundle: str, model: str, texts: dict[str, str], repeat: int) -> dict:
    """measure() in a fresh process, on 1 thread."""
    spec = {"name": name, "bundle": bundle, "model": model, "texts": texts, "repeat": repeat,
            "launched_at": time.time()}
    return in_fresh_process("benchmarks.runtime.contenders", spec, name, 3600, env={"OMP_NUM_THREADS": "1"})


if __name__ == "__main__":
    report(measure(payload()))
