"""`export`: a model directory in, a verified bundle out.

ONNX export, parity with PyTorch at many shapes, then candidate variants (fused, INT8 dynamic and static, FP16)
measured on held-out task data and on this machine; within the accuracy budget, the one the objective prefers
ships (by default the smallest of those as fast as the fastest).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tinyship.compress.config import STAGE_FILE
from tinyship.compress.tasks import Task
from tinyship.export.bundling import check_bundle_output, write_bundle
from tinyship.export.config import ExportConfig
from tinyship.export.evaluation import choose, described, evaluate, fastest_session, session
from tinyship.export.onnx_export import check_parity, load_model, max_positions, to_onnx
from tinyship.export.quantization import (
    PRESETS,
    STATIC_EMBEDDINGS,
    STATIC_OPS,
    VARIANTS,
    Recipe,
    batch_invariant_of,
    detect_preset,
    precision_of,
    selected,
)
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir
from tinyship.runtime.predictor import pad

log = logging.getLogger(__name__)


def model_labels(model_dir: Path) -> list[str]:
    """The label names of a classifier directory, in id order, from its config.json."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    try:
        return [id2label[str(i)] for i in range(len(id2label))]
    except KeyError:
        raise TinyshipError(
            f"{model_dir}/config.json: id2label must map ids 0..{len(id2label) - 1} to label names "
            f"(found ids {sorted(id2label)}); export a fine-tuned classifier"
        ) from None


def export(config: ExportConfig) -> Path:
    """Write the bundle and return its path; candidates_dir (if set) keeps each candidate as NAME/model.onnx."""
    from transformers import AutoTokenizer

    out = Path(config.output)
    check_bundle_output(out, config.force)
    model_dir = check_model_dir(config.model)
    model, task = load_model(model_dir)
    if config.task not in ("auto", task.name):
        raise TinyshipError(f"{model_dir} is a {task.name} model ({model.config.architectures[0]}), not "
                            f"{config.task}: pass --task {task.name} or --task auto")
    labels = model_labels(model_dir) if task.labelled else []
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    max_length = min(config.data.max_length, max_positions(model.config))
    validation = task.load(config.data, "validation", labels)
    rows = task.encode(validation, tokenizer, max_length)
    if not rows:
        raise TinyshipError(f"no validation examples in {validation.source}: the accuracy gate needs some")
    variants = selected(config.quantize, config.calibration, config.optimize, config.fp16)
    static = any(VARIANTS[v].kind == "static" for v in variants)
    job = _Job(config, model, task, labels, rows,
               _calibration_rows(config, task, labels, tokenizer, max_length) if static else [],
               tokenizer.pad_token_id or 0, max_length, validation.source)
    if config.candidates_dir:
        work = Path(config.candidates_dir)
        shutil.rmtree(work, ignore_errors=True)  # no stale candidate from an earlier run
        return _export(job, variants, model_dir, work, out)
    with tempfile.TemporaryDirectory(prefix="tinyship-export-") as work:
        return _export(job, variants, model_dir, Path(work), out)


@dataclass
class _Job:
    """What one export carries from step to step."""

    config: ExportConfig
    model: object
    task: Task
    labels: list[str]
    rows: list[dict]  # encoded validation examples: the gate's data
    calibration_rows: list[dict]  # encoded training examples for static INT8 (empty when none is built)
    pad_id: int
    max_length: int
    validation_source: str

    def calibration_reader(self, names: list[str]):
        """A fresh onnxruntime reader over the calibration examples, one at a time, all padded to one length
        (the histogram calibrators stack every activation they see, so shapes must agree)."""
        from onnxruntime.quantization import CalibrationDataReader

        padded = pad(self.calibration_rows, names, self.pad_id)
        feeds = ({name: array[i : i + 1] for name, array in padded.items()} for i in range(len(self.calibration_rows)))

        class Reader(CalibrationDataReader):
            def get_next(self):
                return next(feeds, None)

        return Reader()


def _calibration_rows(config: ExportConfig, task: Task, labels: list[str], tokenizer, max_length: int) -> list[dict]:
    """A fixed, evenly spread sample of the training split, encoded for the model."""
    train = task.load(config.data, "train", labels)
    rows = task.encode(train, tokenizer, max_length)
    if not rows:
        raise TinyshipError(f"no calibration examples in {train.source}: static INT8 needs training examples "
                            "of the model's task (or use --quantize dynamic)")
    return rows[:: max(1, len(rows) // config.calibration_examples)][: config.calibration_examples]


def _export(job: _Job, variants: list[str], model_dir: Path, work: Path, out: Path) -> Path:
    config, task = job.config, job.task
    log.info(f"exporting {model_dir} ({task.name}) to ONNX, opset {config.opset}")
    paths = {"fp32": to_onnx(job.model, task, work / "fp32", config.opset, config.exporter)}
    parity = check_parity(job.model, paths["fp32"], config.parity_atol)
    log.info(f"parity with PyTorch at {len(parity)} shapes: largest difference {max(parity.values()):.2e}")
    names = [i.name for i in session(paths["fp32"]).get_inputs()]
    preset_name = detect_preset() if config.preset == "auto" else config.preset
    preset = PRESETS[preset_name]
    recipe = Recipe(
        preset=preset,
        per_channel=preset.per_channel if config.per_channel is None else config.per_channel,
        calibration=lambda: job.calibration_reader(names),
        num_heads=0 if job.model.config.pruned_heads else job.model.config.num_attention_heads,  # 0: per node
        hidden_size=0 if job.model.config.pruned_heads else job.model.config.hidden_size,
    )
    median_row = sorted(job.rows, key=lambda r: len(r["input_ids"]))[len(job.rows) // 2]
    typical = pad([median_row], names, job.pad_id)
    measured = {}
    for name in ["fp32", *variants]:
        if name != "fp32":
            variant = VARIANTS[name]
            if variant.source not in paths:
                measured[name] = {"error": f"not built: {variant.source} failed"}
                continue
            target = work / name / "model.onnx"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                variant.build(paths[variant.source], target, recipe)
            except TinyshipError:
                raise
            except Exception as e:  # a variant the tools cannot build for this graph is recorded, not fatal
                measured[name] = {"error": f"not built: {_first_line(e)}"}
                log.info(f"{name}: {measured[name]['error']}")
                continue
            paths[name] = target
        measured[name] = _measure(job, name, paths[name], typical)
    choice = choose(measured, task.metric, config.accuracy_budget, config.objective)
    for name, passed in choice.passed.items():
        measured[name]["passed"] = passed
    winner = choice.winner
    if config.quantize != "none" and not any(p and precision_of(n) != "fp32" for n, p in choice.passed.items()):
        log.info(f"no quantized variant kept {task.metric} within the budget: shipping {winner} (fp32)")
    log.info(f"chosen: {choice.reason}")
    bundle = write_bundle(
        out,
        paths[winner],
        model_dir,
        {
            "task": task.bundle_task,
            "labels": job.labels,
            "pairs": config.data.text_pair_column is not None,  # whether the model reads (text, pair) inputs
            "multi_label": job.model.config.problem_type == "multi_label_classification",
            "truncation": task.truncation(job.max_length),  # as the task's encoding cut inputs in training
            "max_length": job.max_length,
            "inputs": names,
            "outputs": [o.name for o in session(paths[winner]).get_outputs()],
            "precision": precision_of(winner),
            "batch_invariant": batch_invariant_of(winner),  # False: the runtime runs each input alone
            "session": {"disabled_optimizers": measured[winner]["disabled_optimizers"]},
            "variant": winner,
            "quantization": {
                "mode": config.quantize,
                "preset": preset_name,
                "preset_reason": preset.why,
                "per_channel": recipe.per_channel,
                "static_ops": STATIC_OPS,
                "static_embeddings": STATIC_EMBEDDINGS,
                "calibration_examples": config.calibration_examples,
            },
            "metrics": {
                "metric": task.metric,
                "validation": measured[winner][task.metric],
                "validation_set": job.validation_source,
                "validation_examples": len(job.rows),
                "parity_max_abs_diff": parity,
                "candidates": measured,
                "gate": {"budget": config.accuracy_budget, "objective": config.objective,
                         "noise_band": choice.noise_band, "winner": winner, "reason": choice.reason,
                         "latency": {"batch_size": 1, "tokens": int(typical["input_ids"].shape[1]),
                                     "threads": config.latency_threads}},
            },
            "source_model": str(model_dir),
            **vocabulary_record(model_dir),
        },
        config.targets,
    )
    log.info(f"bundle written to {bundle}")
    return bundle


def _measure(job: _Job, name: str, path: Path, typical: dict) -> dict:
    """The candidate's task metric on the validation rows, its latency at batch 1 and its size; or why it failed."""
    try:
        disabled, timing = fastest_session(path, typical, job.config.latency_threads)
        metric = evaluate(path, job.rows, job.task, job.pad_id, disabled, batch_invariant_of(name))
    except Exception as e:  # e.g. an FP16 graph this CPU's onnxruntime has no kernels for
        log.info(f"{name}: cannot run here: {_first_line(e)}")
        return {"error": f"cannot run here: {_first_line(e)}"}
    result = {job.task.metric: metric, **timing, "size_bytes": path.stat().st_size, "precision": precision_of(name),
              "batch_invariant": batch_invariant_of(name), "disabled_optimizers": disabled}
    log.info(f"{name}: {job.task.metric} {metric:.4f}, {described(result)}"
          + (f" (onnxruntime's {', '.join(disabled)} off)" if disabled else ""))
    return result


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def vocabulary_record(model_dir: Path) -> dict:
    """For a model whose vocabulary was pruned, what its stage record says of it (pieces kept, the share of validation
    pieces that changed), for the bundle's manifest; else nothing."""
    stage = model_dir / STAGE_FILE
    made = json.loads(stage.read_text(encoding="utf-8")) if stage.is_file() else {}
    return {"vocabulary": {**made["vocabulary"], "pieces": made["pieces"]}} if "vocabulary" in made else {}
