"""`compress`: the whole path in one call. Fine-tune a teacher (unless given), distil a student, prune it and
recover by distillation (when asked), export and quantize it into a bundle, and report every stage side by side.

The pipeline reaches tinyship.compress only through its verbs and the directories they write.
A finished stage whose directory holds the same settings is reused, so a rerun resumes where
an interrupted run stopped (and an interrupted training stage resumes from its checkpoint).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import types
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path

from tinyship.compress.config import (
    CLEARLY_BETTER,
    STAGE_FILE,
    DistillConfig,
    FinetuneConfig,
    Phase,
    PruneConfig,
    VocabularyConfig,
    same_settings,
    with_student,
)
from tinyship.export.budget import BudgetConfig
from tinyship.export.config import ExportConfig
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir
from tinyship.runtime.flags import flag

log = logging.getLogger(__name__)

OWNED_BY_PIPELINE = {"output_dir", "output", "data", "teacher", "candidates_dir", "force"}


@dataclass
class CompressConfig:
    """The pipeline's recipe: shared data and output, plus each stage's own settings."""

    output_dir: str = field(default="runs/demo", metadata=flag(
        "output directory for teacher, student, bundle and report", "--out"))
    teacher: str | None = field(default=None, metadata=flag(
        "a fine-tuned model directory; without it, --base-model is fine-tuned first", metavar="DIR"))
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)  # nothing to remove (the default): no pruning step
    export: ExportConfig = field(default_factory=ExportConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)  # no latency budget (the default): the stages decide
    allow_weak_teacher: bool = field(default=False, metadata=flag(
        "go on with a teacher that is not clearly better than always predicting the most frequent label (clearly "
        f"better: {CLEARLY_BETTER}); without it, such a teacher stops the run", action="store_true"))
    prune_vocabulary: bool = field(default=False, metadata=flag(
        "keep only the word pieces the training data uses (and every special token and single character) in the "
        "final student's embeddings and tokenizer, before export", action="store_true"))


def compress(config: CompressConfig) -> Path:
    """Run every stage into config.output_dir; returns the bundle's path (report.md and .json beside it).
    Stops after the teacher is fine-tuned (or, when given, first evaluated) if it is not clearly better than always
    predicting the most frequent label, unless config.allow_weak_teacher."""
    from tinyship.compress import distill, prune, prune_vocabulary
    from tinyship.export.exporting import export
    from tinyship.export.report import compression_report

    if config.budget.latency_ms is not None:
        from tinyship.export.budget import search

        return search(config)
    out = Path(config.output_dir)
    plan = stages(config)[0 if config.teacher else 1:]  # every stage's config is checked before anything runs
    out.mkdir(parents=True, exist_ok=True)
    teacher, teacher_validation, warnings = prepare_teacher(config)
    verbs = {DistillConfig: distill, PruneConfig: prune, VocabularyConfig: prune_vocabulary}
    for name, stage_config in plan[:-1]:
        _run_stage(name, verbs[type(stage_config)], stage_config, **_made_from(stage_config))
    log.info("== bundle")
    export_config = plan[-1][1]
    bundle = export(export_config)
    exported = read_manifest(bundle)
    gate = exported["metrics"]
    log.info(f"bundle ({exported['variant']}) on validation: {gate['metric']} {gate['validation']:.4f}"
          + (f" (majority-class baseline {teacher_validation['eval_majority_baseline']:.4f})"
             if "eval_majority_baseline" in teacher_validation else ""))
    log.info("== report")
    student = Path(export_config.model)
    candidates_dir = Path(export_config.candidates_dir)
    shipped = {exported["variant"]: bundle / exported["model"]}
    compression_report(teacher, student, {"fp32": candidates_dir / "fp32" / "model.onnx", **shipped}, config.data, out,
                       gate=gate, warnings=warnings)
    log.info((out / "report.md").read_text(encoding="utf-8"))
    log.info(f"bundle: {bundle}\nreport: {out / 'report.md'} and {out / 'report.json'}")
    return bundle


def prepare_teacher(config: CompressConfig) -> tuple[Path, dict, list[str]]:
    """The teacher (fine-tuned first, unless given), its validation metrics and the warnings to report; stops on a
    weak teacher (_check_teacher)."""
    from tinyship.compress import finetune

    if config.teacher:
        teacher = check_model_dir(config.teacher)
    else:
        name, finetune_config = stages(config)[0]
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        teacher = _run_stage(name, finetune, finetune_config)
    return (teacher, *_check_teacher(teacher, config))


def stages(config: CompressConfig) -> list[tuple[str, object]]:
    """Each stage's name and config, in the order compress() runs them: fine-tune the teacher (unless given),
    distil the student, prune-then-recover rounds and vocabulary pruning (when asked), export. Each stage reads the
    directory the one before it writes; building the configs checks every one of them. The vocabulary is cut last:
    a distillation after it could match the teacher by prediction only, its pieces no longer lining up."""
    out = Path(config.output_dir)
    teacher = config.teacher or str(out / "teacher")
    plan = [] if config.teacher else [("teacher", replace(config.finetune, output_dir=teacher, data=config.data))]
    student = str(out / "student")
    plan.append(("student", replace(config.distill, teacher=teacher, output_dir=student, data=config.data)))
    rounds = prune_rounds(config.prune)
    for step, changes in enumerate(rounds, start=1):
        suffix = f"-{step}" if len(rounds) > 1 else ""
        pruned = str(out / f"pruned{suffix}")
        plan.append((f"pruned{suffix}", replace(config.prune, model=student, **changes, output_dir=pruned,
                                                data=config.data)))
        student = str(out / f"recovered{suffix}")
        recovery = replace(with_student(config.distill, pruned), phases=recovery_phases(config.distill.phases))
        plan.append((f"recovered{suffix}", replace(recovery, teacher=teacher, output_dir=student, data=config.data)))
    if config.prune_vocabulary:
        plan.append(("vocabulary", VocabularyConfig(model=student, output_dir=str(out / "vocabulary"),
                                                    data=config.data)))
        student = str(out / "vocabulary")
    plan.append(("bundle", replace(config.export, model=student, output=str(out / "bundle"), data=config.data,
                                   candidates_dir=str(out / "candidates"), force=True)))
    return plan


def _made_from(stage_config) -> dict:
    """What a distillation's result depends on besides its settings: its teacher's and student's weights."""
    from tinyship.compress import weights_digest

    if not isinstance(stage_config, DistillConfig):
        return {}
    made_from = {"teacher_sha256": weights_digest(Path(stage_config.teacher))}
    if stage_config.spec.directory:
        made_from["student_sha256"] = weights_digest(Path(stage_config.spec.directory))
    return made_from


def _check_teacher(teacher: Path, config: CompressConfig) -> tuple[dict, list[str]]:
    """The teacher's validation metrics, and the warning to report when it is weak and allowed. A teacher not
    clearly better than always predicting the most frequent label (CLEARLY_BETTER) stops the pipeline: a student
    distilled from it learns the label shares, and its "accuracy kept" would say nothing."""
    from tinyship.compress import validate
    from tinyship.compress.tasks import describe, weakness

    if config.teacher:  # the user's model: scored here, on this data
        validation = validate(teacher, config.data)
        log.info(f"teacher on validation: {describe(validation)}")
    else:  # fine-tuned here on this data: scored (and said) when it was made
        validation = json.loads((teacher / STAGE_FILE).read_text(encoding="utf-8"))["validation"]
    weak = weakness(validation)
    if weak is None:
        return validation, []
    if not config.allow_weak_teacher:
        raise TinyshipError(
            f"the teacher {teacher} is {weak}. "
            "Try more fine-tuning epochs (--finetune-epochs), a higher learning rate (recipe: finetune: "
            "{learning_rate: ...}), balanced classes (or more examples of the rare ones), or more data; or pass "
            "--allow-weak-teacher (recipe: allow_weak_teacher: true) to go on anyway"
        )
    warning = f"the teacher is {weak}"
    log.warning(f"{warning} (going on: --allow-weak-teacher)")
    return validation, [warning]


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
    """Run a training stage, or reuse its directory when it was made with the same settings from the same inputs
    (wherever it was made: a stage directory copied or moved stays reusable)."""
    out = Path(stage_config.output_dir)
    if (out / STAGE_FILE).is_file():
        try:
            made = json.loads((out / STAGE_FILE).read_text(encoding="utf-8"))
        except ValueError:
            raise TinyshipError(f"{out / STAGE_FILE} is damaged: delete {out} to redo the stage") from None
        same_inputs = all(made.get(k) == v for k, v in made_from.items())
        if same_settings(made.get("config"), stage_config) and same_inputs:
            log.info(f"== {name}: reusing {out} (same settings)")
            from tinyship.compress.training import checkpoints_of

            shutil.rmtree(checkpoints_of(out), ignore_errors=True)  # left by a kill between the save and their removal
            if "validation" in made:
                from tinyship.compress.tasks import describe

                log.info(f"{name} on validation: {describe(made['validation'])}")
            return out
        raise TinyshipError(f"{out} was made with other settings or another teacher: "
                            "delete it, or choose another --out")
    log.info(f"== {name}")
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
    owned = (set() if cls is CompressConfig
             else OWNED_BY_PIPELINE | ({"model"} if cls in (ExportConfig, PruneConfig) else set()))
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
