"""Runtime benchmark: tinyship's runtime against what users would pick instead, on the same model and machine.

Contenders, on the demo teacher (MiniLM-L6) exported to fp32 ONNX, one thread:
  tinyship      load(bundle)(text)
  raw session   tokenizers + onnxruntime.InferenceSession by hand (the floor: no library around it)
  optimum       transformers.pipeline over optimum's ORTModelForSequenceClassification (same ONNX file)
  transformers  transformers.pipeline over the PyTorch model
For each: end-to-end latency at batch 1 (a typical Rotten Tomatoes sentence and a 128-token input), cold start
(a fresh process: imports, load, first prediction), its peak RSS, and the installed size of the packages it needs.
Then the HTTP server (`tinyship serve` on the demo bundle) under 32 concurrent clients, with micro-batching and
one request at a time. Last, what batch invariance costs on the demo bundle: inputs/s at batch 8 in one padded run
against one run per input (how a bundle that is not batch-invariant, dynamic INT8, is served), and how many test
labels differ between batch 32 and batch 1 each way.

    python -m benchmarks.runtime.run            # after `make demo`; about 10 minutes
    python -m benchmarks.runtime.run --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import numpy as np

from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.runtime.contenders import CONTENDERS, run_contender
from tinyship.export import ExportConfig, export
from tinyship.export.bundling import versions
from tinyship.export.report import machine, save_results
from tinyship.runtime import load
from tinyship.runtime.bench import timed
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig, load_examples

SHORT = "a gripping , funny and moving film that never loses sight of its characters"
LONG = " ".join(["the film is a quiet and moving portrait of a family"] * 12)


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/demo/teacher", help="default: %(default)s")
    parser.add_argument("--bundle", default="runs/demo/bundle",
                        help="the demo bundle, for the server (default: %(default)s)")
    add_run_arguments(parser, "runtime", "few repeats")
    args = parser.parse_args()
    work, results = run_paths(args, "runtime")
    repeat = 20 if args.quick else 300
    for path in (args.teacher, args.bundle):
        if not Path(path).is_dir():
            raise SystemExit(f"no {path}: run `make demo` first")
    fp32 = work / "teacher-fp32"
    if not (fp32 / "tinyship.json").is_file():
        export(ExportConfig(model=args.teacher, output=str(fp32), quantize="none", optimize=False,
                            data=DataConfig(limit=64), force=True))
    texts = {"short": SHORT, "long": LONG}
    report = {"machine": machine(), "versions": versions(), "repeat": repeat, "model": args.teacher, "inputs": texts,
              "contenders": {}}
    for name, contender in CONTENDERS.items():
        measured = run_contender(name, str(fp32), args.teacher, texts, repeat)
        measured["installed_mb"] = installed_mb(list(contender.packages))
        report["contenders"][name] = measured
        print(name, json.dumps(measured))
    demo = run_contender("tinyship", args.bundle, args.teacher, texts, repeat)
    report["demo_bundle"] = {"bundle": args.bundle, "cold_start_s": demo["cold_start_s"],
                             "peak_rss_mb": demo["peak_rss_mb"]}
    report["server"] = {f"{mode}, max wait {wait} ms": serve_under_load(Path(args.bundle), batch, wait, 32,
                                                                       50 if args.quick else 2000)
                        for mode, batch, wait in (("micro-batched", 32, 0), ("micro-batched", 32, 2),
                                                  ("one at a time", 1, 0))}
    print(json.dumps(report["server"]))
    report["batch_invariance"] = batch_invariance(Path(args.bundle), 10 if args.quick else 100)
    print(json.dumps(report["batch_invariance"]))
    save_results(results, report, markdown(report))
    print((results / "results.md").read_text())


def installed_mb(packages: list[str]) -> float:
    """Size on disk of the packages and everything they require (not their extras)."""
    seen: set[str] = set()
    todo = list(packages)
    total = 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue
        total += sum((f.size or 0) for f in dist.files or [])
        for requirement in dist.requires or []:
            if "extra ==" not in requirement:
                todo.append(requirement.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0]
                            .split("!")[0].split("~")[0].strip())
    return total / 1e6


def serve_under_load(bundle: Path, max_batch: int, max_wait_ms: float, clients: int, requests: int) -> dict:
    """Throughput and latency of `tinyship serve` (its own process) under concurrent clients."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([str(Path(sys.executable).parent / "tinyship"), "serve", str(bundle), "--port", str(port),
                               "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--threads", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        latencies: list[float] = []
        errors = 0

        async def client(k: int, http: httpx.AsyncClient):
            nonlocal errors
            for i in range(k, requests, clients):
                start = time.perf_counter()
                response = await http.post("/v1/predict", json={"inputs": SHORT if i % 2 else LONG[: 60 + i % 200]})
                latencies.append((time.perf_counter() - start) * 1e3)
                errors += response.status_code != 200

        async def load():
            async with httpx.AsyncClient(base_url=url, timeout=60) as http:
                await asyncio.gather(*(client(k, http) for k in range(clients)))

        start = time.perf_counter()
        asyncio.run(load())
        seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(30)
    return {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "clients": clients, "requests": requests,
            "errors": errors, "requests_per_s": requests / seconds, "median_ms": float(np.median(latencies)),
            "p99_ms": float(np.percentile(latencies, 99))}


def batch_invariance(bundle: Path, repeat: int) -> dict:
    """The bundle batched (one padded run per 32 or 8 inputs) against one input per run, 1 thread: test labels that
    differ between batch 32 and batch 1, test accuracy, and inputs/s at batch 8 on the first 8 test texts (lengths
    mixed, as traffic is) and on the median-length one 8 times (no padding: batching's best case)."""
    predict = load(bundle, threads=1)
    test = load_examples(DataConfig(), "test", predict.labels)
    median = sorted(test.texts, key=lambda text: len(predict.tokenizer.encode(text).ids))[len(test.texts) // 2]
    batches = {"8 test texts": test.texts[:8], "1 text x 8": [median] * 8}
    report = {"variant": read_manifest(bundle)["variant"], "served_batch_invariant": predict.batch_invariant,
              "test_examples": len(test.texts), "repeat": repeat,
              "tokens": {name: [len(e.ids) for e in predict.tokenizer.encode_batch(texts)]
                         for name, texts in batches.items()}}
    for mode, invariant in (("batched", True), ("one per run", False)):
        predict.batch_invariant = invariant  # True: padded batches, whatever the bundle says
        labels = {}
        for size in (32, 1):
            predict.batch_size = size
            labels[size] = [predict.labels.index(r["label"]) for r in predict(test.texts)]
        predict.batch_size = 8
        report[mode] = {"labels_differing_b32_b1": sum(a != b for a, b in zip(labels[32], labels[1])),
                        "test_accuracy_b32": float(np.mean(np.array(labels[32]) == np.array(test.labels)))}
        for name, texts in batches.items():
            timing = timed(lambda: predict(texts), max(3, repeat // 10), repeat)
            report[mode][f"b8_inputs_per_s, {name}"] = 8 / timing["median_ms"] * 1e3
    return report


def markdown(report: dict) -> str:
    m = report["machine"]
    raw = report["contenders"]["raw session"]["latency"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores. Model: {report['model']} (fp32 ONNX for the first three, "
             f"PyTorch for transformers), 1 thread, median and p99 of {report['repeat']} runs.", "",
             "| contender | short: median ms | p99 | vs raw | 128 tokens: median ms | p99 | vs raw | cold start s | "
             "peak RSS MB | installed MB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in report["contenders"].items():
        short, long_ = c["latency"]["short"], c["latency"]["long"]
        lines.append(f"| {name} | {short['median_ms']:.2f} | {short['p99_ms']:.2f} | "
                     f"{short['median_ms'] / raw['short']['median_ms']:.2f}x | "
                     f"{long_['median_ms']:.2f} | {long_['p99_ms']:.2f} | "
                     f"{long_['median_ms'] / raw['long']['median_ms']:.2f}x | "
                     f"{c['cold_start_s']:.2f} | {c['peak_rss_mb']:.0f} | {c['installed_mb']:.0f} |")
    d = report["demo_bundle"]
    lines += ["", f"Demo bundle ({d['bundle']}) with tinyship: cold start {d['cold_start_s']:.2f} s, peak RSS "
              f"{d['peak_rss_mb']:.0f} MB.", "",
              "| server | clients | requests | errors | requests/s | median ms | p99 ms |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, s in report["server"].items():
        lines.append(f"| {mode} (max batch {s['max_batch']}) | {s['clients']} | {s['requests']} | {s['errors']} | "
                     f"{s['requests_per_s']:.0f} | {s['median_ms']:.1f} | {s['p99_ms']:.1f} |")
    one = report["server"]["one at a time, max wait 0 ms"]["requests_per_s"]
    best = max(report["server"], key=lambda mode: report["server"][mode]["requests_per_s"])
    lines += ["", f"Best: {best}, {report['server'][best]['requests_per_s'] / one:.2f}x the throughput of one request "
              "at a time."]
    b = report["batch_invariance"]
    served = "batched" if b["served_batch_invariant"] else "one input per run"
    names = list(b["tokens"])
    lines += ["", f"Batch invariance on the demo bundle ({b['variant']}, served {served}), 1 thread, "
              f"{b['test_examples']} test texts; batch 8 on {names[0]} ({min(b['tokens'][names[0]])}-"
              f"{max(b['tokens'][names[0]])} tokens) and on {names[1]} ({b['tokens'][names[1]][0]} tokens):", "",
              f"| mode | test labels differing, batch 32 vs 1 | test accuracy (batch 32) | inputs/s, {names[0]} | "
              f"inputs/s, {names[1]} |", "|---|---:|---:|---:|---:|"]
    for mode in ("batched", "one per run"):
        m = b[mode]
        lines.append(f"| {mode} | {m['labels_differing_b32_b1']} | {m['test_accuracy_b32']:.4f} | "
                     + " | ".join(f"{m[f'b8_inputs_per_s, {name}']:.0f}" for name in names) + " |")
    ratios = [b["one per run"][f"b8_inputs_per_s, {n}"] / b["batched"][f"b8_inputs_per_s, {n}"] for n in names]
    lines += ["", f"One input per run: {ratios[0]:.2f}x the batch-8 throughput of a padded batch on {names[0]}, "
              f"{ratios[1]:.2f}x on {names[1]}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
