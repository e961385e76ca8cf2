"""Soak benchmark: `tinyship serve` under steady load from many clients for minutes, to see errors, latency creep
and memory growth that a short benchmark misses.

Starts this environment's `tinyship serve BUNDLE` on 127.0.0.1 (a free port) in its own process, then runs --clients
threads, each sending requests one after another over a kept-alive connection (stdlib http.client): short and long
texts, one text or a list of four, for --rounds rounds of --seconds each. Per round: requests, errors (any answer
but 200, or a failed connection), throughput, p50 / p99 latency, and the server's RSS at the round's end (a leak
shows as RSS climbing round after round). Writes results.json and results.md to --out, with the machine.

    .venv/bin/python -m benchmarks.soak.run --bundle runs/demo/bundle      # 32 clients, 3 rounds of 60 s
    .venv/bin/python -m benchmarks.soak.run --bundle BUNDLE --clients 4 --rounds 2 --seconds 5   # a quick check
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from tinyship.runtime.bench import machine
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import write_text_atomic

SHORT = ["a gripping, funny and moving film", "dull", "not bad at all, if a little long",
         "the plot goes nowhere, slowly", "a gem"]
LONG = " ".join(["the film is a quiet and moving portrait of a family that never quite says what it means"] * 6)
REQUESTS = [json.dumps({"inputs": body}) for body in (*SHORT, LONG, SHORT[:4], [LONG, *SHORT[:3]])]
LIMITS = {"clients": (1, 256), "rounds": (1, 20), "seconds": (1, 600)}  # bounded in count and time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="runs/demo/bundle", help="the bundle to serve (default: %(default)s)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent client threads (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds per round (default: %(default)s)")
    parser.add_argument("--out", default="benchmarks/results/soak", help="results directory (default: %(default)s)")
    args = parser.parse_args()
    for name, (low, high) in LIMITS.items():
        if not low <= getattr(args, name) <= high:
            parser.error(f"--{name} {getattr(args, name)}: give {low} to {high}")
    try:
        read_manifest(args.bundle)
    except TinyshipError as e:
        parser.error(f"{e} (the demo bundle appears after `make demo`)")
    report = soak(Path(args.bundle), args.clients, args.rounds, args.seconds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "results.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "results.md", markdown(report))
    print(markdown(report))


def soak(bundle: Path, clients: int, rounds: int, seconds: float) -> dict:
    """Serve the bundle in a fresh process and load it with `clients` threads, round after round."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "tinyship"), "serve", str(bundle), "--host", "127.0.0.1",
               "--port", str(port)]
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(server, port, log)
            process = psutil.Process(server.pid)
            start_rss = process.memory_info().rss / 2**20
            results = []
            for number in range(1, rounds + 1):
                results.append({"round": number, **load_round(port, clients, seconds),
                                "server_rss_mb": process.memory_info().rss / 2**20})
                print(json.dumps(results[-1]), flush=True)
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return {"bundle": str(bundle), "clients": clients, "seconds_per_round": seconds, "server": " ".join(command[1:]),
            "server_rss_mb_at_start": start_rss, "rounds": results, "machine": machine()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(server: subprocess.Popen, port: int, log, timeout: float = 120) -> None:
    """Return once /healthz answers 200; stop with the server's output if it exits or takes over `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
    log.seek(0)
    sys.exit(f"the server did not start:\n{log.read().decode(errors='replace')[-3000:]}")


def load_round(port: int, clients: int, seconds: float) -> dict:
    """`clients` threads posting predictions back to back for `seconds`: counts, throughput and latency."""
    deadline = time.monotonic() + seconds
    per_client = [client(port, k, deadline) for k in range(clients)]
    threads = [threading.Thread(target=work) for work, _ in per_client]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    latencies = np.array([ms for _, record in per_client for ms in record["ms"]])
    requests = sum(record["requests"] for _, record in per_client)
    return {"requests": requests, "errors": sum(record["errors"] for _, record in per_client),
            "requests_per_s": requests / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)) if latencies.size else None,
            "p99_ms": float(np.percentile(latencies, 99)) if latencies.size else None}


def client(port: int, k: int, deadline: float):
    """A client's loop (to run in a thread) and the record it fills: requests, errors and each latency in ms."""
    record = {"requests": 0, "errors": 0, "ms": []}

    def work():
        connection = None
        i = k
        while time.monotonic() < deadline:
            body = REQUESTS[i % len(REQUESTS)]
            i += 1
            start = time.perf_counter()
            try:
                connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok, connection = False, None  # connect again
            record["ms"].append((time.perf_counter() - start) * 1e3)
            record["requests"] += 1
            record["errors"] += not ok
        if connection:
            connection.close()

    return work, record


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"`tinyship {report['server']}` (its own process), {report['clients']} concurrent clients (threads of one "
        f"process on the same machine), {len(report['rounds'])} rounds of {report['seconds_per_round']:g} s. "
        f"Machine: {m['cpu']}, {m['cores']} cores. "
        f"Server RSS after start-up: {report['server_rss_mb_at_start']:.0f} MB.",
        "",
        "| round | requests | errors | requests/s | p50 ms | p99 ms | server RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rounds"]:
        p50, p99 = (f"{r[key]:.1f}" if r[key] is not None else "-" for key in ("p50_ms", "p99_ms"))
        lines.append(f"| {r['round']} | {r['requests']} | {r['errors']} | {r['requests_per_s']:.0f} | {p50} | {p99} | "
                     f"{r['server_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
