"""`tinyship export` and `tinyship compress`: flags (declared on the stage configs' fields) and a YAML recipe in,
the stage's config out."""

from __future__ import annotations

import argparse
from dataclasses import replace

from tinyship.compress.config import (
    NO_PRUNE_TARGET,
    STUDENT_FIELDS,
    DistillConfig,
    FinetuneConfig,
    PruneConfig,
    TrainingConfig,
)
from tinyship.export.budget import BudgetConfig
from tinyship.export.config import ExportConfig
from tinyship.export.pipeline import CompressConfig, load_recipe
from tinyship.export.probes import ProbeConfig
from tinyship.export.targets import ConvertConfig
from tinyship.runtime.cli import Command, add_data_arguments, data_config_from_args
from tinyship.runtime.flags import add_flags, flagged


def _configure_export(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, ExportConfig)
    add_data_arguments(parser)


def _run_convert(args: argparse.Namespace) -> None:
    from tinyship.export.targets import convert

    convert(ConvertConfig(**flagged(ConvertConfig, args)))


def _run_probes(args: argparse.Namespace) -> None:
    from tinyship.export.probes import probe_pack

    probe_pack(ProbeConfig(**flagged(ProbeConfig, args)))


def _run_export(args: argparse.Namespace) -> None:
    from tinyship.export.exporting import export

    export(ExportConfig(**flagged(ExportConfig, args), data=data_config_from_args(args)))


STAGE_FLAGS = [  # the stage flags `tinyship compress` offers: (the stages they set, the config declaring them, its
    # fields (or field -> flag name), flag prefix)
    (("finetune",), FinetuneConfig, {"model": "--base-model", "epochs": None}, "finetune"),
    (("finetune", "distill"), TrainingConfig, ["min_steps"], ""),
    (("distill",), DistillConfig, [*STUDENT_FIELDS, "transfer", "transfer_examples"], ""),
    (("distill",), DistillConfig, ["phases"], "distill"),
    (("prune",), PruneConfig, ["flops", "steps"], "prune"),
    (("export",), ExportConfig, ["quantize", "accuracy_budget", "objective", "targets"], ""),
    (("budget",), BudgetConfig, None, ""),
]


def _configure_compress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", default=argparse.SUPPRESS,
                        help="a YAML recipe whose keys mirror CompressConfig (flags given here override it)")
    add_flags(parser, CompressConfig, optional=True)
    for _, config, names, prefix in STAGE_FLAGS:
        add_flags(parser, config, names, prefix, optional=True)
    add_data_arguments(parser)


def compress_config_from_args(args: argparse.Namespace) -> CompressConfig:
    """The recipe (or the defaults) with the flags that were given."""
    config = load_recipe(args.recipe) if "recipe" in vars(args) else CompressConfig()
    changes = {"finetune": {}, "distill": {}, "prune": {}, "export": {}, "budget": {}}
    for stages, stage_config, names, prefix in STAGE_FLAGS:
        for stage in stages:
            changes[stage].update(flagged(stage_config, args, prefix, names))
    if set(STUDENT_FIELDS) & changes["distill"].keys():  # the student's flags replace the recipe's choice whole
        changes["distill"] = {**dict.fromkeys(STUDENT_FIELDS), **changes["distill"]}
    if "flops" in changes["prune"]:
        changes["prune"] = {**NO_PRUNE_TARGET, **changes["prune"]}
    return replace(config, **flagged(CompressConfig, args), data=data_config_from_args(args, config.data),
                   **{stage: replace(getattr(config, stage), **values) for stage, values in changes.items()})


def _run_compress(args: argparse.Namespace) -> None:
    from tinyship.export.pipeline import compress

    compress(compress_config_from_args(args))


EXPORT = Command(
    help="convert a model directory to a bundle: ONNX checked against PyTorch, then the fastest of fp32, fused, "
         "INT8 and FP16 variants that keeps accuracy within the budget",
    configure=_configure_export,
    run=_run_export,
)
CONVERT = Command(
    help="add edge targets to a bundle already made (mobile: the ORT-format model and the operators a reduced "
         "onnxruntime build needs; web: the folder transformers.js loads); the bundle is rewritten whole",
    configure=lambda parser: add_flags(parser, ConvertConfig),
    run=_run_convert,
)
COMPRESS = Command(
    help="the whole pipeline: fine-tune a teacher (unless given), distil, prune (if asked), export, quantize, report",
    configure=_configure_compress,
    run=_run_compress,
)
PROBES = Command(
    help="write a probe pack: encoder graphs of many shapes, fp32 and INT8, without weights, for `tinyship bench "
         "--profile` to time on a target device (base install there) and fit its cost model",
    configure=lambda parser: add_flags(parser, ProbeConfig),
    run=_run_probes,
)
