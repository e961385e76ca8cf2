"""`tinyship bench BUNDLE`: the device-side benchmark, with the base install only (numpy, onnxruntime, tokenizers).

Cold start (a fresh Python process: import, load, first prediction) and its peak memory, the bundle's size, and
end-to-end latency (tokenization included) median, p90 and p99 over batch sizes, input lengths and thread counts,
with the throughput that follows. A bundle that is not batch-invariant (dynamic INT8, fp16) runs a batch one input
per run, as it is served: its inputs/s at batch 8 are then about those at batch 1.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from tinyship.runtime.bundle import model_file, model_files, read_manifest
from tinyship.runtime.errors import TinyshipError

SPEED_FLAGS = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16",
               "asimddp", "i8mm"}


def sample_input(pairs: bool, tokens: int, batch: int):
    """Inputs of about `tokens` tokens each (one per repeated word): texts, or (question, context) pairs."""
    if pairs:
        return [("which word?", " ".join(["word"] * max(1, tokens - 6)))] * batch
    return [" ".join(["word"] * max(1, tokens - 2))] * batch


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (ru_maxrss would count the parent's peak from before exec)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cold_start(bundle: Path, pairs: bool, model_format: str = "onnx") -> dict:
    """Seconds from a fresh interpreter's launch, through its imports and the load, to its first prediction (on 1
    thread), and the process's peak RSS: `python -m tinyship.runtime.bench`."""
    first = sample_input(pairs, 16, 1)[0]
    result = subprocess.run([sys.executable, "-m", "tinyship.runtime.bench", str(bundle), json.dumps(first),
                             repr(time.time()), model_format],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise TinyshipError(f"the cold-start process failed: {result.stderr.strip().splitlines()[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _first_prediction(bundle: str, first: str, launched_at: str, model_format: str) -> dict:
    """The cold-start process's measurement: load the bundle and predict once."""
    from tinyship.runtime import load

    predict = load(bundle, threads=1, model_format=model_format)
    first = json.loads(first)
    predict(tuple(first) if isinstance(first, list) else first)  # a (question, context) pair arrives as a list
    return {"seconds": time.time() - float(launched_at), "peak_rss_mb": peak_rss_mb()}


def bench(bundle: str | Path, batch_sizes=(1, 8), lengths=(16, 64, 128), threads=(1, None), repeat: int = 50,
          model_format: str = "onnx") -> dict:
    """Measure a bundle on this machine; threads None means all cores; model_format as load() takes it. The size is
    that of the files a device needs: the model run, the tokenizer and the bundle's small files."""
    from tinyship.runtime.loader import load

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    others = model_files(manifest) - {model_file(manifest, model_format, bundle)}  # not needed to run this one
    task = manifest["task"]
    grid = []
    for count in threads:
        predict = load(bundle, threads=count, batch_size=max(batch_sizes), model_format=model_format)
        for batch in batch_sizes:
            for tokens in lengths:
                inputs = sample_input(predict.pairs, min(tokens, manifest["max_length"]), batch)
                timing = timed(lambda: predict(inputs), max(3, repeat // 10), repeat)
                grid.append({"batch_size": batch, "tokens": tokens, "threads": count or os.cpu_count(), **timing,
                             "per_second": batch / timing["median_ms"] * 1e3})
    return {
        "bundle": str(bundle),
        "task": task,
        "precision": manifest.get("precision"),
        "batch_invariant": predict.batch_invariant,
        "model_format": model_format,
        "size_bytes": sum((bundle / name).stat().st_size for name in manifest["files"] if name not in others),
        "cold_start": cold_start(bundle, bool(predict.pairs), model_format),
        "latency": grid,
        "repeat": repeat,
        "machine": machine(),
    }


def timed(run, warmup: int, repeat: int) -> dict[str, float]:
    """Median, p90 and p99 wall time of run() in milliseconds, after warm-up runs."""
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return summary(times)


def summary(times_ms) -> dict[str, float]:
    """Median, p90 and p99 of run times in milliseconds (however they were taken: here, or in a browser)."""
    return {"median_ms": float(np.median(times_ms)), "p90_ms": float(np.percentile(times_ms, 90)),
            "p99_ms": float(np.percentile(times_ms, 99))}


def markdown(report: dict) -> str:
    cold = report["cold_start"]
    lines = [
        f"Bundle {report['bundle']} ({report['task']}, {report['precision']}, {report['model_format']} model, "
        f"{report['size_bytes'] / 1e6:.1f} MB) on "
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores.",
        f"Cold start to first prediction: {cold['seconds']:.2f} s, peak RSS {cold['peak_rss_mb']:.0f} MB.",
        "Batches run padded in one model run." if report["batch_invariant"] else
        "Not batch-invariant (as dynamic INT8): a batch runs one input per run, "
        "so that no input changes another's answer.",
        f"End-to-end latency (tokenization included), {report['repeat']} runs each:",
        "",
        "| batch | tokens | threads | median ms | p90 ms | p99 ms | inputs/s |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in report["latency"]:
        lines.append(f"| {p['batch_size']} | {p['tokens']} | {p['threads']} | {p['median_ms']:.2f} | "
                     f"{p['p90_ms']:.2f} | {p['p99_ms']:.2f} | {p['per_second']:.0f} |")
    return "\n".join(lines) + "\n"


def machine() -> dict:
    """The CPU, its core count and the instruction sets that decide INT8 and fp32 speed (from /proc/cpuinfo)."""
    info = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = sorted(set(info.get("flags", info.get("Features", "")).split()) & SPEED_FLAGS)
    return {"cpu": info.get("model name", platform.processor()), "cores": os.cpu_count(), "flags": flags,
            "system": platform.platform(), "python": platform.python_version()}


if __name__ == "__main__":
    print(json.dumps(_first_prediction(*sys.argv[1:5])))
