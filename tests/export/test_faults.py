"""Faults: `tinyship compress` killed with SIGKILL inside each stage, then run again with the same arguments, must
finish with a valid bundle, resume (or cleanly redo) the interrupted stage, and leave no partial output behind.

Each case runs the real command in a subprocess and kills its process group once its output shows the stage's own
lines and then "PAUSED in NAME", printed by a wrapper that holds the process in NAME's n-th call (an optimizer step,
the ONNX exporter, the quantizer, a directory half written), so that the kill lands exactly there: a tiny model
trains too fast for its progress bar to mark a given step.
"""

from __future__ import annotations

import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.files import check_model_dir

RECIPE = """\
allow_weak_teacher: true  # a random tiny model learns nothing from 64 examples
data: {limit: 64, max_length: 64}
finetune: {epochs: 1, batch_size: 16, save_steps: 2, min_steps: 0}
distill:
  phases: [{losses: {hidden: 1}, epochs: 1}, {losses: {prediction: 1}, epochs: 1}]
  batch_size: 16
  save_steps: 2
  min_steps: 0
export: {quantize: dynamic, optimize: false}
"""  # 64 examples: 4 optimizer steps per epoch, a checkpoint after every second
ARGS = ["compress", "--recipe", "recipe.yaml", "--base-model", "base", "--out", "run"]
TIMEOUT_S = 180  # per run

# python -c PAUSING MODULE NAME N ARGS...: `tinyship ARGS...`, held for good on the N-th call of MODULE's NAME
PAUSING = """
import functools, importlib, sys, time
module, name, call = sys.argv[1], sys.argv[2], int(sys.argv[3])
del sys.argv[1:4]
owner = importlib.import_module(module)
*path, attr = name.split(".")
for part in path:
    owner = getattr(owner, part)
original, calls = getattr(owner, attr), []

@functools.wraps(original)
def paused(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
        print(f"PAUSED in {name}", flush=True)
        time.sleep(600)
    return original(*args, **kwargs)

setattr(owner, attr, paused)
from tinyship.runtime.cli import main
sys.exit(main())
"""


@dataclass
class Case:
    """Where to kill a run, what it must have left at that moment, and what the rerun must say."""

    reused: tuple[str, ...]  # stage directories copied from a finished run first
    markers: tuple[str, ...]  # regexes to see in order before the kill
    pause: tuple[str, str, int]  # (module, name, call) to hold the process in
    killed: Callable[[Path], bool]  # checks the output directory right after the kill
    rerun: tuple[str, ...]  # texts the rerun prints
    same: str | None = None  # a stage whose weights must equal those of an uninterrupted run


def half_written(run: Path, name: str) -> Path:
    """The one copy of run/name that a killed writing_directory left half written."""
    (tmp,) = run.glob(f".{name}.tmp-*")
    return tmp


CASES = {
    "fine-tuning": Case(  # in step 3: step 2's checkpoint is complete
        reused=(),
        markers=("== teacher", "PAUSED"),
        pause=("transformers.trainer", "Trainer.training_step", 3),
        killed=lambda run: (run / "teacher.checkpoints/checkpoint-2/trainer_state.json").is_file()
        and not (run / "teacher").exists(),
        rerun=("resuming from run/teacher.checkpoints/checkpoint-2\n",),
        same="teacher",
    ),
    "distillation": Case(  # in phase 1's step 3
        reused=("teacher",),
        markers=("== student", "phase 1/2", "PAUSED"),
        pause=("transformers.trainer", "Trainer.training_step", 3),
        killed=lambda run: (run / "student.checkpoints/phase-1/checkpoint-2/trainer_state.json").is_file()
        and not (run / "student").exists(),
        rerun=("== teacher: reusing", "resuming from run/student.checkpoints/phase-1/checkpoint-2\n"),
        same="student",
    ),
    "checkpoint half written": Case(  # phase 2's last checkpoint: weights and optimizer saved, its state not yet
        reused=("teacher",),
        markers=("phase 2/2", "PAUSED"),
        pause=("transformers.trainer", "Trainer._save_rng_state", 4),
        killed=lambda run: not (run / "student.checkpoints/phase-2/checkpoint-4/trainer_state.json").exists()
        and (run / "student.checkpoints/phase-2/checkpoint-4/model.safetensors").is_file(),
        rerun=("done before: reusing", "resuming from run/student.checkpoints/phase-2/checkpoint-2\n"),
        same="student",
    ),
    "stage directory half written": Case(
        reused=("teacher",),
        markers=("== student", "PAUSED"),
        pause=("tinyship.compress.training", "mark_pruned", 1),
        killed=lambda run: (half_written(run, "student") / "model.safetensors").is_file()
        and not (half_written(run, "student") / "tinyship_stage.json").exists() and not (run / "student").exists(),
        rerun=("== student\n", "phase 2/2: 1*prediction for 1 epochs\n  done before: reusing"),  # both phases done
        same="student",
    ),
    "stage saved, checkpoints not yet removed": Case(
        reused=("teacher",),
        markers=("== student", "PAUSED"),
        pause=("tinyship.compress.distillation", "remove_checkpoints", 1),
        killed=lambda run: (run / "student/tinyship_stage.json").is_file() and (run / "student.checkpoints").is_dir(),
        rerun=("== student: reusing",),
    ),
    "ONNX export": Case(  # as torch.onnx starts tracing the student
        reused=("teacher", "student"),
        markers=("== bundle", "to ONNX", "PAUSED"),
        pause=("torch.onnx", "export", 1),
        killed=lambda run: (run / "candidates/fp32").is_dir() and not (run / "candidates/fp32/model.onnx").exists()
        and not (run / "bundle").exists(),
        rerun=("== student: reusing",),
    ),
    "quantization": Case(  # while the INT8 variant is being built
        reused=("teacher", "student"),
        markers=("== bundle", r"\nfp32: accuracy", "PAUSED"),
        pause=("onnxruntime.quantization", "quantize_dynamic", 1),
        killed=lambda run: (run / "candidates/int8-dynamic").is_dir() and not (run / "bundle").exists(),
        rerun=("== student: reusing",),
    ),
    "bundle writing": Case(  # over an earlier bundle: model, tokenizer and config copied, no manifest yet
        reused=("teacher", "student", "bundle"),
        markers=("== bundle", "PAUSED"),
        pause=("tinyship.export.bundling", "sha256_file", 1),
        killed=lambda run: (half_written(run, "bundle") / "model.onnx").is_file()
        and not (half_written(run, "bundle") / "tinyship.json").exists() and read_manifest(run / "bundle") is not None,
        rerun=("== student: reusing",),
    ),
}


def tinyship(cwd: Path, args: list[str], markers: tuple[str, ...] = (), pause=None) -> str:
    """Run `tinyship ARGS` in cwd; with markers, SIGKILL it (and anything it started) once all have appeared in its
    output, in order. Returns the output (stdout and stderr)."""
    command = [Path(sys.executable).with_name("tinyship")]
    if pause:
        command = [sys.executable, "-c", PAUSING, *map(str, pause)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}  # a tiny model: several threads only wait on each other, most on a busy machine
    process = subprocess.Popen([*command, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    output, deadline = b"", time.monotonic() + TIMEOUT_S
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if not selector.select(timeout=1):
                    continue
                chunk = os.read(process.stdout.fileno(), 1 << 16)
                output += chunk
                text = output.decode(errors="replace").replace("\r", "\n")
                if markers and _seen(text, markers):
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    return text
                if not chunk:
                    break
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = output.decode(errors="replace").replace("\r", "\n")
    assert not markers, f"the run ended (exit {process.returncode}) or timed out before {markers}:\n{text[-3000:]}"
    assert process.returncode == 0, f"exit {process.returncode}:\n{text[-3000:]}"
    return text


def _seen(text: str, markers: tuple[str, ...]) -> bool:
    """Whether each marker occurs in text after the one before it."""
    position = 0
    for marker in markers:
        found = re.compile(marker).search(text, position)
        if not found:
            return False
        position = found.end()
    return True


def leftovers(run: Path) -> list[str]:
    """Partial output: a killed write's .NAME.tmp-* or .NAME.old-*, a .tmp file, or a stage's leftover checkpoints."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*")
                  if re.search(r"\.(tmp|old)\b", p.name) or p.name.endswith(".checkpoints"))


def assert_finished(run: Path) -> None:
    """A verified bundle that predicts, finished stage directories, a report, and nothing partial."""
    manifest = read_manifest(run / "bundle")
    assert manifest["labels"] == ["negative", "positive"]
    predictions = load(run / "bundle")(["a fine film", "a dull mess"])
    assert [p["label"] in manifest["labels"] for p in predictions] == [True, True]
    for stage in ("teacher", "student"):
        assert (check_model_dir(run / stage) / "tinyship_stage.json").is_file()
    assert (run / "report.json").is_file() and (run / "report.md").is_file()
    assert leftovers(run) == []


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return first.keys() == second.keys() and all(np.allclose(first[k], second[k], atol=1e-6) for k in first)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_model_factory):
    """A directory with a tiny base model, the recipe, and `finished`: an uninterrupted run's output, made at run/
    (stage records hold their paths, so every case runs at run/ too)."""
    work = tmp_path_factory.mktemp("faults")
    tiny_model_factory(work / "base")
    (work / "recipe.yaml").write_text(RECIPE)
    tinyship(work, ARGS)
    assert_finished(work / "run")
    (work / "run").rename(work / "finished")
    return work


@pytest.mark.parametrize("name", CASES)
def test_killed_compress_reruns_to_a_valid_bundle_without_partial_output(work, name):
    case, run = CASES[name], work / "run"
    shutil.rmtree(run, ignore_errors=True)
    for stage in case.reused:
        shutil.copytree(work / "finished" / stage, run / stage)

    output = tinyship(work, ARGS, case.markers, case.pause)
    assert case.killed(run), f"the kill missed its point; the output ended:\n{output[-2000:]}"

    output = tinyship(work, ARGS)
    for text in case.rerun:
        assert text in output
    assert_finished(run)
    if case.same:
        assert same_weights(run / case.same, work / "finished" / case.same)
