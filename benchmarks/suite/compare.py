"""How two runs of the suite differ: whether every system's accuracy, size and parameters are the same, and the
ratio of their median latencies at each grid point (B over A), per system and over all points. Run it after a change
that should not move the numbers (a refactor), with A from before it and B from after, both measured on the same
machine in the same quiet hour: the latency ratios then show the change beside the machine's own noise.

    python -m benchmarks.suite.compare runs/before/results/results.json runs/after/results/results.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.lab.engines import latency_at
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.errors import TinyshipError

EXACT = ("accuracy", "size_bytes", "parameters")  # what a change that keeps behaviour leaves equal
HEADLINE = (1, 128, 1)  # batch size, tokens, threads: the point the README quotes


def compare(a: dict, b: dict) -> dict:
    """Per system present in both: the fields of EXACT that differ, and B/A median latency at every grid point."""
    systems_a, systems_b = ({s["id"]: s for s in report["systems"]} for report in (a, b))
    rows = []
    for name in systems_a.keys() & systems_b.keys():
        sa, sb = systems_a[name], systems_b[name]
        ratios = {}
        for p in sa["latency"]:
            key = (p["batch_size"], p["tokens"], p["threads"])
            q = latency_at(sb, *key)
            if q:
                ratios[key] = q["median_ms"] / p["median_ms"]
        rows.append({"system": name, "differs": {k: (sa.get(k), sb.get(k)) for k in EXACT if sa.get(k) != sb.get(k)},
                     "ratios": ratios})
    return {"rows": sorted(rows, key=lambda r: r["system"]),
            "only_in_a": sorted(systems_a.keys() - systems_b.keys()),
            "only_in_b": sorted(systems_b.keys() - systems_a.keys())}


def markdown(result: dict, a: str, b: str) -> str:
    every = np.array([r for row in result["rows"] for r in row["ratios"].values()])
    if every.size == 0:
        raise TinyshipError("the two runs share no measured grid point: compare results of the same suite")
    lines = [f"B = {b}, A = {a}: median latency B/A (above 1: B slower)", "",
             "| system | equal accuracy, size, parameters | B/A at batch 1, 128 tokens, 1 thread | B/A median of "
             "its points | min | max |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        r = np.array(list(row["ratios"].values()))
        differs = "; ".join(f"{k}: {va} vs {vb}" for k, (va, vb) in row["differs"].items()) or "yes"
        headline = row["ratios"].get(HEADLINE)
        lines.append(f"| {row['system']} | {differs} | {'n/a' if headline is None else f'{headline:.3f}'} | "
                     f"{np.median(r):.3f} | {r.min():.3f} | {r.max():.3f} |")
    p10, p50, p90 = np.percentile(every, [10, 50, 90])
    lines += ["", f"All {every.size} grid points: B/A median {p50:.3f}, 10th percentile {p10:.3f}, 90th {p90:.3f}."]
    for side, names in (("A", result["only_in_a"]), ("B", result["only_in_b"])):
        if names:
            lines.append(f"Only in {side}: {', '.join(names)}.")
    return "\n".join(lines)


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="results.json of the first run (before)")
    parser.add_argument("b", help="results.json of the second run (after)")
    args = parser.parse_args()
    try:
        reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in (args.a, args.b)]
        print(markdown(compare(*reports), args.a, args.b))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: cannot read a results file: {e}") from None
    except TinyshipError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
