"""Systems measured the same way: a model served one way, timed, sized and scored like every other.

A system is an engine (ENGINES: PyTorch fp32, PyTorch dynamic INT8 via torch.ao, an onnxruntime session, tinyship's
runtime on a bundle, and what users would pick instead: transformers' and optimum's pipelines, model2vec's static
embeddings) applied to a model.
run(spec) measures one in a fresh process (`python -m benchmarks.lab.engines SPEC_JSON`), so that the cold start
and the memory it reports are the system's own. Forward engines are timed on token ids of exactly the grid's length;
pipelines and the runtime are timed end to end, text in and labels out.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks.lab.fresh import in_fresh_process, payload, report
from tinyship.runtime.bench import peak_rss_mb, sample_input, timed
from tinyship.runtime.files import weights_bytes

ENGINES: dict[str, Callable] = {}
FORWARD, END_TO_END = "forward", "end-to-end"


@dataclass
class System:
    """What an engine loads: predict(texts) -> label ids; forward(ids) for forward engines (None: time predict)."""

    predict: Callable[[list[str]], list[int]]
    forward: Callable[[np.ndarray], object] | None
    size_bytes: int
    parameters: int | None = None


def latency_at(system: dict, batch_size: int, tokens: int, threads: int) -> dict | None:
    """A measured system's latency point at one grid setting, if measured."""
    return next((p for p in system["latency"]
                 if (p["batch_size"], p["tokens"], p["threads"]) == (batch_size, tokens, threads)),
                None)


def engine(name: str, scope: str):
    def add(fn):
        fn.scope = scope
        ENGINES[name] = fn
        return fn

    return add


def _torch_model(spec: dict):
    import torch
    from transformers import AutoTokenizer

    from tinyship.compress.pruning import load_model

    model = load_model(spec["model"])
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    return torch, model, tokenizer


def _torch_system(torch, model, tokenizer, spec: dict, size_bytes: int) -> System:
    accepted = set(tokenizer.model_input_names)

    def forward(ids: np.ndarray):
        ids = torch.from_numpy(ids)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
        with torch.inference_mode():
            return model(**{k: v for k, v in inputs.items() if k in accepted}).logits

    def predict(texts: list[str]) -> list[int]:
        inputs = tokenizer(texts, padding=True, truncation=True, max_length=spec["max_length"], return_tensors="pt")
        with torch.inference_mode():
            return model(**inputs).logits.argmax(-1).tolist()

    return System(predict, forward, size_bytes, sum(p.numel() for p in model.parameters()))


@engine("pytorch", FORWARD)
def pytorch(spec: dict, threads: int) -> System:
    torch, model, tokenizer = _torch_model(spec)
    torch.set_num_threads(threads)
    return _torch_system(torch, model.eval(), tokenizer, spec, weights_bytes(spec["model"]))


@engine("torch.ao-int8", FORWARD)
def torch_dynamic_int8(spec: dict, threads: int) -> System:
    """PyTorch's own dynamic INT8: every Linear's weights int8, activations quantized on the fly."""
    import io

    torch, model, tokenizer = _torch_model(spec)
    torch.set_num_threads(threads)
    parameters = sum(p.numel() for p in model.parameters())
    model = torch.ao.quantization.quantize_dynamic(model.eval(), {torch.nn.Linear}, dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)  # what a user would ship: the size of the saved state
    system = _torch_system(torch, model, tokenizer, spec, buffer.tell())
    system.parameters = parameters
    return system


@engine("onnxruntime", FORWARD)
def onnxruntime_session(spec: dict, threads: int) -> System:
    """One onnxruntime session on an exported model file, with the load-time settings its export chose (tokenized
    by tinyship's runtime for the accuracy)."""
    from tinyship.runtime.predictor import TextClassifier

    classify = TextClassifier(spec["onnx"], Path(spec["model"]) / "tokenizer.json", spec["labels"],
                              max_length=spec["max_length"], threads=threads,
                              disabled_optimizers=spec.get("disabled_optimizers", ()),
                              batch_invariant=spec.get("batch_invariant", True))  # accuracy as the runtime serves it

    def forward(ids: np.ndarray):
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return classify.session.run(None, {n: feed[n] for n in classify.input_names})

    return System(lambda texts: classify.logits(texts).argmax(-1).tolist(), forward, Path(spec["onnx"]).stat().st_size,
                  spec.get("parameters"))


@engine("tinyship", END_TO_END)
def tinyship_runtime(spec: dict, threads: int) -> System:
    """tinyship.runtime.load on a bundle: tokenization, batching and the manifest's session settings included."""
    from tinyship.runtime import load
    from tinyship.runtime.bundle import read_manifest

    predict = load(spec["model"], threads=threads)
    names = predict.labels
    # the model file, as for the others
    size = (Path(spec["model"]) / read_manifest(spec["model"])["model"]).stat().st_size
    return System(lambda texts: [names.index(r["label"]) for r in predict(texts)], None, size, spec.get("parameters"))


def _pipeline_system(classify, spec: dict, size: int, parameters: int | None) -> System:
    names = spec["labels"]

    def predict(texts: list[str]) -> list[int]:
        found = classify(texts, batch_size=len(texts), truncation=True, max_length=spec["max_length"])
        return [names.index(r["label"]) for r in found]

    return System(predict, None, size, parameters)


@engine("transformers-pipeline", END_TO_END)
def transformers_pipeline(spec: dict, threads: int) -> System:
    """transformers.pipeline('text-classification') over the PyTorch model."""
    from transformers import pipeline

    torch, model, tokenizer = _torch_model(spec)
    torch.set_num_threads(threads)
    classify = pipeline("text-classification", model=model.eval(), tokenizer=tokenizer)
    return _pipeline_system(classify, spec, weights_bytes(spec["model"]), sum(p.numel() for p in model.parameters()))


@engine("optimum-pipeline", END_TO_END)
def optimum_pipeline(spec: dict, threads: int) -> System:
    """transformers.pipeline over optimum's ORTModelForSequenceClassification on the same ONNX file, default
    settings."""
    import tempfile

    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    onnx = Path(spec["onnx"])
    with tempfile.TemporaryDirectory() as tmp:  # ORTModel reads a directory: the file and its config.json
        (Path(tmp) / "model.onnx").symlink_to(onnx.resolve())
        (Path(tmp) / "config.json").symlink_to(Path(spec["config"]).resolve())
        model = ORTModelForSequenceClassification.from_pretrained(tmp, session_options=options)
    classify = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(spec["model"]))
    return _pipeline_system(classify, spec, onnx.stat().st_size, spec.get("parameters"))


@engine("model2vec", END_TO_END)
def model2vec_pipeline(spec: dict, threads: int) -> System:
    """model2vec's StaticModelPipeline saved in spec["model"]: its tokenizer, the mean of static token embeddings and
    its classifier head, in numpy (threads: numpy's BLAS pool)."""
    from model2vec.inference import StaticModelPipeline
    from safetensors.numpy import load_file
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    pipeline = StaticModelPipeline.from_pretrained(spec["model"])
    names = spec["labels"]
    files = list(Path(spec["model"]).glob("*.safetensors"))
    parameters = sum(array.size for file in files for array in load_file(file).values())

    def predict(texts: list[str]) -> list[int]:
        return [names.index(label) for label in pipeline.predict(texts, use_multiprocessing=False)]

    return System(predict, None, weights_bytes(spec["model"]), parameters)


def measure(spec: dict) -> dict:
    """Cold start (from the launch of this process, spec["launched_at"], through its imports, the load and a first
    prediction, on 1 thread) and memory, then the latency grid and test accuracy. In a fresh process: see run()."""
    make = ENGINES[spec["engine"]]
    grid = spec["grid"]
    system = make(spec, 1)
    system.predict([sample_input(False, 16, 1)[0]])
    cold = {"cold_start_s": time.time() - spec["launched_at"], "rss_after_first_prediction_mb": peak_rss_mb()}
    latency = []
    rng = np.random.default_rng(0)
    for threads in grid["threads"]:
        if threads != 1:
            del system  # one model in memory at a time: the peak RSS is one system's
            gc.collect()
            system = make(spec, threads)
        for batch in grid["batch_sizes"]:
            for tokens in grid["lengths"]:
                if system.forward is not None:
                    ids = rng.integers(min(1000, spec["vocab_size"] // 2), spec["vocab_size"], (batch, tokens))
                    call = lambda: system.forward(ids)  # noqa: E731
                else:
                    texts = sample_input(False, tokens, batch)
                    call = lambda: system.predict(texts)  # noqa: E731
                timing = timed(call, spec["warmup"], spec["repeat"])
                latency.append({"batch_size": batch, "tokens": tokens, "threads": threads, **timing,
                                "per_second": batch / timing["median_ms"] * 1e3})
    from tinyship.runtime.data import DataConfig, load_examples

    test = load_examples(DataConfig(**spec["data"]), "test", spec["labels"])
    predicted = []
    for i in range(0, len(test), 32):
        predicted += system.predict(test.texts[i : i + 32])
    accuracy = float(np.mean(np.array(predicted) == np.array(test.labels)))
    return {"id": spec["id"], "engine": spec["engine"], "scope": make.scope, "accuracy": accuracy,
            "test_examples": len(test), "size_bytes": system.size_bytes, "parameters": system.parameters, **cold,
            "peak_rss_mb": peak_rss_mb(), "latency": latency}


def run(spec: dict, timeout_s: float = 3600) -> dict:
    """measure(spec) in a fresh Python process."""
    return in_fresh_process("benchmarks.lab.engines", {**spec, "launched_at": time.time()}, spec["id"], timeout_s)


if __name__ == "__main__":
    report(measure(payload()))
