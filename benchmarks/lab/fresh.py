"""Run a benchmark module in a fresh interpreter (`python -m MODULE PAYLOAD_JSON`), so that what it measures (a cold
start, memory, threads) is its own, and read back the JSON it reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tinyship.runtime.errors import TinyshipError

RESULT = "tinyship-measured: "  # marks the result line among whatever else the libraries print
ROOT = Path(__file__).resolve().parents[2]  # where `benchmarks` imports from


def in_fresh_process(module: str, payload: dict, what: str, timeout_s: float, env: dict | None = None) -> dict:
    """module's report(...) for payload, run in a new interpreter with env added to the environment. OMP_NUM_THREADS
    unless env sets it: onnxruntime's intra-op threads follow it (2 threads under OMP_NUM_THREADS=1 measured as slow
    as 1)."""
    base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env = {**base, "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), **(env or {})}
    try:
        result = subprocess.run([sys.executable, "-m", module, json.dumps(payload)], capture_output=True, text=True,
                                env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TinyshipError(f"measuring {what} took over {timeout_s:.0f} s: stopped") from None
    found = [line for line in result.stdout.splitlines() if line.startswith(RESULT)]
    if result.returncode != 0 or not found:
        raise TinyshipError(f"measuring {what} failed:\n{result.stderr[-3000:]}")
    return json.loads(found[-1][len(RESULT):])


def payload() -> dict:
    """What in_fresh_process sent this process."""
    return json.loads(sys.argv[1])


def report(result: dict) -> None:
    """Hand result back to in_fresh_process."""
    print(RESULT + json.dumps(result))
