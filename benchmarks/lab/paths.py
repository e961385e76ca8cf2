"""The options every benchmark takes, declared once: --work (its models and measured parts), --results and --quick.
A quick run keeps its results in its work directory, so that it never replaces the committed ones."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_run_arguments(parser: argparse.ArgumentParser, name: str, quick: str, work: str | None = None) -> None:
    """--work (default runs/bench-NAME, or work), --results (default benchmarks/results/NAME) and --quick (whose
    help says what it cuts)."""
    work = work or f"runs/bench-{name}"
    parser.add_argument("--work", help=f"models and measured parts; a rerun resumes from them (default: {work}, "
                                       f"quick: {work}-quick)")
    parser.add_argument("--results", help=f"default: benchmarks/results/{name}, quick: WORK/results")
    parser.add_argument("--quick", action="store_true", help=f"{quick}: checks that it runs, in minutes")


def run_paths(args: argparse.Namespace, name: str, work: str | None = None) -> tuple[Path, Path]:
    """The work and results directories the arguments name, or their defaults."""
    work_dir = Path(args.work or f"{work or f'runs/bench-{name}'}{'-quick' if args.quick else ''}")
    results = Path(args.results or (work_dir / "results" if args.quick else f"benchmarks/results/{name}"))
    return work_dir, results
