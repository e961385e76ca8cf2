"""`compress`: the whole path in one call. Fine-tune a teacher (unless given), distil a student, prune it and
recover by distillation (when asked), export and quantize it into a bundle, and report every stage side by side.

The pipeline reaches tinyship.compress only through its verbs and the directories they write.
A finished stage whose directory holds the same settings is reused, so a rerun resumes where
an interrupted run stopped (and an interrupted training stage resumes from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from tinyship.compress.config import STAGE_FILE, DistillConfig, FinetuneConfig, Phase, PruneConfig, settings
from tinyship.export.config import ExportConfig
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir

OWNED_BY_PIPELINE = {"output_dir", "output", "data", "teacher", "candidates_dir", "force"}


@dataclass
class CompressConfig:
    """The pipeline's recipe: shared data and output, plus each stage's own settings."""

    output_dir: str = "runs/demo"
    teacher: str | None = None  # a fine-tuned model directory; None: fine-tune finetune.model first
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)  # nothing to remove (the default): no pruning step
    export: ExportConfig = field(default_factory=ExportConfig)


def compress(config: CompressConfig) -> Path:
    """Run every stage into config.output_dir; returns the bundle's path (report.md and .json beside it)."""
    from tinyship.compress import distill, finetune, prune, weights_digest
    from tinyship.export.exporting import export
    from tinyship.export.report import compression_report

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.teacher:
        teacher = check_model_dir(config.teacher)
    else:
        teacher = _run_stage("teacher", finetune, replace(config.finetune, output_dir=str(out / "teacher"), data=config.data))
    student = _run_stage(
        "student",
        distill,
        replace(config.distill, teacher=str(teacher), output_dir=str(out / "student"), data=config.data),
        teacher_sha256=weights_digest(teacher),
    )
    rounds = prune_rounds(config.prune)
    for step, changes in enumerate(rounds, start=1):
        suffix = f"-{step}" if len(rounds) > 1 else ""
        pruned = _run_stage(f"pruned{suffix}", prune, replace(config.prune, model=str(student), **changes,
                                                              output_dir=str(out / f"pruned{suffix}"), data=config.data))
        student = _run_stage(
            f"recovered{suffix}",
            distill,
            replace(config.distill, teacher=str(teacher), student=str(pruned), output_dir=str(out / f"recovered{suffix}"),
                    data=config.data, phases=recovery_phases(config.distill.phases)),
            teacher_sha256=weights_digest(teacher),
            student_sha256=weights_digest(pruned),
        )
    print("== bundle")
    candidates_dir = out / "candidates"
    bundle = export(
        replace(config.export, model=str(student), output=str(out / "bundle"), data=config.data,
                candidates_dir=str(candidates_dir), force=True)
    )
    print("== report")
    exported = read_manifest(bundle)
    shipped = {exported["variant"]: bundle / exported["model"]}
    compression_report(teacher, student, {"fp32": candidates_dir / "fp32" / "model.onnx", **shipped}, config.data, out,
                       gate=exported["metrics"])
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"bundle: {bundle}\nreport: {out / 'report.md'} and {out / 'report.json'}")
    return bundle


def prune_rounds(config: PruneConfig) -> list[dict]:
    """The PruneConfig changes for each prune-then-recover round: `steps` rounds that each remove the same
    fraction of what is left, so that together they reach the target (keeping k per round keeps k ** steps)."""
    if config.parameters is not None or config.latency is not None:
        return [{}]  # sized against the model as it is: one round
    if not any(config.fractions):
        return []
    heads, ffn = (1 - (1 - f) ** (1 / config.steps) for f in config.fractions)
    return [{"heads": heads, "ffn": ffn, "flops": None}] * config.steps


def recovery_phases(phases: list[Phase]) -> list[Phase]:
    """The distillation phases without the attention loss, which cannot match heads the student no longer has."""
    kept = [Phase({k: w for k, w in p.losses.items() if k != "attention"}, p.epochs) for p in phases]
    return [p for p in kept if p.losses]


def _run_stage(name: str, verb, stage_config, **made_from) -> Path:
    """Run a training stage, or reuse its directory when it was made with the same settings from the same inputs."""
    out = Path(stage_config.output_dir)
    if (out / STAGE_FILE).is_file():
        try:
            made = json.loads((out / STAGE_FILE).read_text(encoding="utf-8"))
        except ValueError:
            raise TinyshipError(f"{out / STAGE_FILE} is damaged: delete {out} to redo the stage") from None
        if made.get("config") == settings(stage_config) and all(made.get(k) == v for k, v in made_from.items()):
            print(f"== {name}: reusing {out} (same settings)")
            return out
        raise TinyshipError(f"{out} was made with other settings or another teacher: delete it, or choose another --out")
    print(f"== {name}")
    return Path(verb(stage_config))


def load_recipe(path: str | Path) -> CompressConfig:
    """A CompressConfig from a YAML recipe whose keys mirror the config's fields."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TinyshipError(f"recipe {path} not found: check the path")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise TinyshipError(f"recipe {path} is not valid YAML: {e}") from None
    return from_dict(CompressConfig, values, f"recipe {path}")


def from_dict(cls, values, where: str):
    """Build a (nested) config dataclass from plain values, naming any unknown key."""
    if not isinstance(values, dict):
        raise TinyshipError(f"{where}: expected a mapping of {cls.__name__} settings, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    owned = set() if cls is CompressConfig else OWNED_BY_PIPELINE | ({"model"} if cls in (ExportConfig, PruneConfig) else set())
    for key in values:
        if key not in known or key in owned:
            allowed = sorted(known - owned)
            raise TinyshipError(f"{where}: unknown key {key!r}; known keys: {', '.join(allowed)}")
    kwargs = {}
    for key, value in values.items():
        kind = hints[key]
        items = [typing.get_args(o)[0] for o in _options(kind) if typing.get_origin(o) is list]
        if dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{where}, {key}")
        elif items and dataclasses.is_dataclass(items[0]) and isinstance(value, list):
            value = [from_dict(items[0], v, f"{where}, {key}[{i}]") for i, v in enumerate(value)]
        elif not _matches(value, kind):
            raise TinyshipError(f"{where}: {key} is {value!r}; expected {_describe(kind)}")
        as_tuple = isinstance(value, list) and any(typing.get_origin(o) is tuple for o in _options(kind))
        kwargs[key] = tuple(value) if as_tuple else value
    return cls(**kwargs)


def _options(kind) -> tuple:
    """The types a field accepts: the members of a union, or the type itself."""
    return typing.get_args(kind) if typing.get_origin(kind) in (typing.Union, types.UnionType) else (kind,)


def _matches(value, kind) -> bool:
    """Whether a YAML value fits a config field's type (str, int, float, bool, list[int], tuple[str, ...], or None)."""
    if len(_options(kind)) > 1:
        return any(_matches(value, option) for option in _options(kind))
    if kind is type(None):
        return value is None
    if typing.get_origin(kind) in (list, tuple):
        item = typing.get_args(kind)[0]
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if typing.get_origin(kind) is dict:
        key, item = typing.get_args(kind)
        return isinstance(value, dict) and all(_matches(k, key) and _matches(v, item) for k, v in value.items())
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _describe(kind) -> str:
    if len(_options(kind)) > 1:
        return " or ".join(_describe(option) for option in _options(kind))
    if typing.get_origin(kind) in (list, tuple):
        return f"a list of {_describe(typing.get_args(kind)[0])}"
    if typing.get_origin(kind) is dict:
        return "a mapping of {} to {}".format(*map(_describe, typing.get_args(kind)))
    return "null" if kind is type(None) else kind.__name__
