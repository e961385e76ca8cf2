"""`compress`: the whole path in one call. Fine-tune a teacher (unless given), distil a student,
export and quantize it into a bundle, and report every stage side by side.

The pipeline reaches tinyship.compress only through its verbs and the directories they write.
A finished stage whose directory holds the same settings is reused, so a rerun resumes where
an interrupted run stopped (and an interrupted training stage resumes from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tinyship.compress.config import STAGE_FILE, DistillConfig, FinetuneConfig
from tinyship.export.config import ExportConfig
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError

OWNED_BY_PIPELINE = {"output_dir", "output", "data", "teacher", "candidates_dir", "force"}


@dataclass
class CompressConfig:
    """The pipeline's recipe: shared data and output, plus each stage's own settings."""

    output_dir: str = "runs/demo"
    teacher: str | None = None  # a fine-tuned model directory; None: fine-tune finetune.model first
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    export: ExportConfig = field(default_factory=ExportConfig)


def compress(config: CompressConfig) -> Path:
    """Run every stage into config.output_dir; returns the bundle's path (report.md and .json beside it)."""
    from tinyship.compress import distill, finetune
    from tinyship.export.exporting import export
    from tinyship.export.report import compression_report

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.teacher:
        teacher = Path(config.teacher)
    else:
        teacher = _run_stage("teacher", finetune, replace(config.finetune, output_dir=str(out / "teacher"), data=config.data))
    student = _run_stage(
        "student",
        distill,
        replace(config.distill, teacher=str(teacher), output_dir=str(out / "student"), data=config.data),
    )
    print("== bundle")
    candidates_dir = out / "candidates"
    bundle = export(
        replace(config.export, model=str(student), output=str(out / "bundle"), data=config.data,
                candidates_dir=str(candidates_dir), force=True)
    )
    print("== report")
    candidates = {p.parent.name: p for p in sorted(candidates_dir.glob("*/model.onnx"), key=lambda p: p.parent.name != "fp32")}
    compression_report(teacher, student, candidates, config.data, out)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"bundle: {bundle}\nreport: {out / 'report.md'} and {out / 'report.json'}")
    return bundle


def _run_stage(name: str, verb, stage_config) -> Path:
    """Run a training stage, or reuse its directory when it was made with the same settings."""
    out = Path(stage_config.output_dir)
    settings = json.loads(json.dumps(asdict(stage_config), default=str))
    if (out / STAGE_FILE).is_file():
        made_with = json.loads((out / STAGE_FILE).read_text(encoding="utf-8")).get("config")
        if made_with == settings:
            print(f"== {name}: reusing {out} (same settings)")
            return out
        raise TinyshipError(f"{out} was made with other settings: delete it, or choose another --out")
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
    owned = set() if cls is CompressConfig else OWNED_BY_PIPELINE | ({"model"} if cls is ExportConfig else set())
    for key in values:
        if key not in known or key in owned:
            allowed = sorted(known - owned)
            raise TinyshipError(f"{where}: unknown key {key!r}; known keys: {', '.join(allowed)}")
    kwargs = {}
    for key, value in values.items():
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{where}, {key}")
        elif key == "labels" and value is not None:
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
