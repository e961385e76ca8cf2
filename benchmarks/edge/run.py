"""Edge benchmark: the demo bundle in a web browser, beside the same bundle in tinyship's Python runtime.

A copy of the demo bundle (runs/demo/bundle, dynamic INT8) gets the web target (`tinyship convert --target web`),
and its student is exported again as fp32 with it (`--target web`, `--quantize none`); the page that `tinyship web`
serves loads each with transformers.js (onnxruntime-web, WASM, SIMD) in Debian's Chromium, headless, driven by
Playwright. In one run, for each: labels and scores of every test text in the browser against the Python runtime,
and end-to-end latency at batch 1 (a short sentence and a 128-token input; median, p90 and p99 of the runs) in the
browser on 1 and 2 threads, beside the native runtime on 1 thread; and the ceiling under both, the throughput of
the student's largest GEMM (128 tokens x hidden x FFN width, int8 and fp32) in onnxruntime-web and in native
onnxruntime on 1 thread. Writes results.json, results.md and page.png (the page after classifying, for the README).

    python -m benchmarks.edge.run           # after `make demo` and `make test-edge` (which installs the browser side)
    python -m benchmarks.edge.run --quick   # 20 test texts, 10 runs
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np

from benchmarks.lab.browser import chromium, page_for
from benchmarks.lab.ceilings import GEMM_OPS, gemm_graphs, gemm_throughput
from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.runtime.run import LONG, SHORT
from tinyship.export import ExportConfig, export
from tinyship.export.bundling import versions
from tinyship.export.report import machine, save_results
from tinyship.export.targets import ConvertConfig, convert
from tinyship.runtime import load
from tinyship.runtime.bench import summary, timed
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig, load_examples

SCORE_TOLERANCE = 1e-3
INPUTS = {"short": SHORT, "128 tokens": LONG}
TARGET_RATIO = 3.0  # issue 16: the browser within 3x of native onnxruntime at batch 1, 128 tokens, 1 thread
GEMM_JS = Path(__file__).with_name("gemm.js")


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="runs/demo/bundle", help="the shipped bundle (default: %(default)s)")
    parser.add_argument("--student", default="runs/demo/student",
                        help="its model, exported again as fp32 for comparison (default: %(default)s)")
    add_run_arguments(parser, "edge", "20 test texts, 10 timed runs")
    args = parser.parse_args()
    repeat, examples = (10, 20) if args.quick else (100, None)
    work, results_dir = run_paths(args, "edge")
    work.mkdir(parents=True, exist_ok=True)
    results_dir.mkdir(parents=True, exist_ok=True)
    shipped = work / "shipped"
    shutil.rmtree(shipped, ignore_errors=True)
    shutil.copytree(args.bundle, shipped)
    convert(ConvertConfig(bundle=str(shipped), targets=("web",)))
    data = DataConfig(max_length=read_manifest(shipped)["max_length"], limit=examples)
    fp32 = work / "fp32"
    if not (fp32 / "web").is_dir():
        export(ExportConfig(model=args.student, output=str(fp32), data=data, quantize="none", targets=("web",),
                            force=True))
    test = load_examples(data, "test")
    systems = [measure(name, bundle, test, repeat, results_dir if name == "shipped" else None)
               for name, bundle in (("shipped", shipped), ("fp32", fp32))]
    report = {"benchmark": "edge", "quick": args.quick, "bundle": args.bundle, "student": args.student,
              "test_examples": len(test), "score_tolerance": SCORE_TOLERANCE, "repeat": repeat,
              "target_ratio": TARGET_RATIO, "systems": systems, "gemm": gemm(shipped, args.student, repeat),
              "chromium": _chromium_version(),
              "machine": machine(), "versions": versions()}
    save_results(results_dir, report, markdown(report))
    print(markdown(report))


def measure(name: str, bundle: Path, test, repeat: int, screenshot_dir: Path | None) -> dict:
    """One bundle in the browser against the Python runtime: parity on the test texts, latency in each."""
    manifest = read_manifest(bundle)
    native = load(bundle, threads=1)
    python = native(test.texts, top_k=None)
    latency = {"native, 1 thread": {k: timed(lambda: native(text), 5, repeat) for k, text in INPUTS.items()}}
    browser = []
    for threads in (1, 2):
        with page_for(bundle, threads=threads) as page:
            if threads == 1:
                browser = [page.evaluate("text => window.tinyship.run(text)", text) for text in test.texts]
                if screenshot_dir:
                    page.screenshot(path=str(screenshot_dir / "page.png"))
            latency[f"browser, {threads} thread{'s' * (threads > 1)}"] = {
                k: summary(page.evaluate("([t, n]) => window.tinyship.time(t, n)", [text, repeat]))
                for k, text in INPUTS.items()}
    truth = [test.label_names[y] for y in test.labels]
    differences = [max(abs(s["score"] - p["scores"][s["label"]]) for s in b) for b, p in zip(browser, python)]
    return {"name": name, "variant": manifest["variant"], "size_bytes": (bundle / manifest["model"]).stat().st_size,
            "labels_equal": sum(b[0]["label"] == p["label"] for b, p in zip(browser, python)),
            "max_score_difference": max(differences),
            "over_tolerance": sum(d > SCORE_TOLERANCE for d in differences),
            "accuracy": {"python": float(np.mean([p["label"] == t for p, t in zip(python, truth)])),
                         "browser": float(np.mean([b[0]["label"] == t for b, t in zip(browser, truth)]))},
            "latency": latency,
            "browser_over_native_128": latency["browser, 1 thread"]["128 tokens"]["median_ms"]
            / latency["native, 1 thread"]["128 tokens"]["median_ms"]}


def gemm(bundle: Path, student: str, repeat: int) -> dict:
    """The student's FFN GEMM (LONG's 128 tokens x hidden x FFN width) in G(FL)OP/s, native and in the browser."""
    config = json.loads((Path(student) / "config.json").read_text(encoding="utf-8"))
    shape = (128, config["hidden_size"], config["intermediate_size"])
    graphs = gemm_graphs(*shape)
    script, browser = GEMM_JS.read_text(encoding="utf-8"), {}
    with page_for(bundle) as page:
        for name, (model, a, operations) in graphs.items():
            ms = page.evaluate(script, [
                base64.b64encode(model).decode(), base64.b64encode(a.tobytes()).decode(),
                "float32" if a.dtype == np.float32 else "uint8", list(a.shape), repeat])
            browser[name] = operations / (ms / 1e3) / 1e9
    return {"shape": shape, "native": gemm_throughput(graphs, 1, repeat), "browser": browser}


def markdown(report: dict) -> str:
    lines = [
        f"# Edge benchmark: the bundle in a browser{' (quick mode)' if report['quick'] else ''}",
        "",
        f"The demo bundle ({report['bundle']}) and its student exported as fp32, each as its web folder loaded by "
        f"transformers.js (onnxruntime-web, WASM, SIMD) in {report['chromium']}, headless, from the page `tinyship "
        f"web` serves, against the same bundle in tinyship's Python runtime; machine {report['machine']['cpu']}, "
        f"{report['machine']['cores']} cores. End-to-end latency at batch 1 (tokenization included), "
        f"{report['repeat']} runs each.",
        "",
        "| bundle | where | short: median ms | p99 | 128 tokens: median ms | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for system in report["systems"]:
        for where, points in system["latency"].items():
            short, long_ = points["short"], points["128 tokens"]
            lines.append(f"| {system['name']} ({system['variant']}) | {where} | {short['median_ms']:.2f} | "
                         f"{short['p99_ms']:.2f} | {long_['median_ms']:.2f} | {long_['p99_ms']:.2f} |")
    lines.append("")
    for system in report["systems"]:
        met = "met" if system["browser_over_native_128"] <= report["target_ratio"] else "NOT met"
        lines.append(
            f"- {system['name']} ({system['variant']}, {system['size_bytes'] / 1e6:.1f} MB): {system['labels_equal']} "
            f"of {report['test_examples']} test labels equal to the Python runtime's, largest score difference "
            f"{system['max_score_difference']:.1e}, {system['over_tolerance']} over {report['score_tolerance']:g}; "
            f"accuracy "
            f"{system['accuracy']['browser']:.4f} in the browser, {system['accuracy']['python']:.4f} in Python. "
            f"Browser over native at 128 tokens, 1 thread each: {system['browser_over_native_128']:.1f}x (target: "
            f"within {report['target_ratio']:g}x, {met}).")
    gemm = report["gemm"]
    lines += [
        "",
        f"The ceiling under both: the student's FFN GEMM ({' x '.join(map(str, gemm['shape']))}), 1 thread, "
        "G(FL)OP/s (median of the runs):",
        "",
        "| GEMM | native onnxruntime | onnxruntime-web (WASM, SIMD) | native / browser |",
        "|---|---:|---:|---:|",
        *(f"| {GEMM_OPS[name]} | {gemm['native'][name]:.1f} | {gemm['browser'][name]:.1f} | "
          f"{gemm['native'][name] / gemm['browser'][name]:.1f}x |" for name in GEMM_OPS),
    ]
    return "\n".join(lines) + "\n"


def _chromium_version() -> str:
    return subprocess.run([chromium(), "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()
