"""`tinyship export` and `tinyship compress`: flags (and a YAML recipe) in, the stage's config out."""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import partial

from tinyship.compress.cli import describe_phases, parse_layers, parse_phase
from tinyship.export.config import ExportConfig
from tinyship.export.pipeline import CompressConfig, load_recipe
from tinyship.runtime.cli import Command, add_data_arguments, data_config_from_args, optional_flag

QUANTIZE_HELP = "dynamic (INT8 u8s8) or none (fp32)"


def _configure_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a fine-tuned model directory (from `tinyship finetune` or `tinyship distill`)")
    parser.add_argument("--out", default=ExportConfig.output, help="bundle directory (default: %(default)s)")
    parser.add_argument("--quantize", default=ExportConfig.quantize, help=f"{QUANTIZE_HELP} (default: %(default)s)")
    parser.add_argument("--opset", type=int, default=ExportConfig.opset, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    add_data_arguments(parser)


def _run_export(args: argparse.Namespace) -> None:
    from tinyship.export.exporting import export

    export(ExportConfig(model=args.model, output=args.out, quantize=args.quantize, opset=args.opset,
                        data=data_config_from_args(args), force=args.force))


def _configure_compress(parser: argparse.ArgumentParser) -> None:
    add = partial(optional_flag, parser)
    defaults = CompressConfig()
    add("--recipe", "a YAML recipe whose keys mirror CompressConfig (flags given here override it)")
    add("--out", f"output directory for teacher, student, bundle and report (default: {defaults.output_dir})")
    add("--teacher", "a fine-tuned model directory; without it, --base-model is fine-tuned first")
    add("--base-model", "the model to fine-tune as teacher (default: the built-in MiniLM-L6)")
    add("--finetune-epochs", f"default: {defaults.finetune.epochs}", type=float)
    add("--student-layers", "student layer count, mapped uniformly (default: half the teacher's)", type=int)
    add("--layers", "or the teacher layers the student keeps, 1-based (e.g. 2,4,6)", type=parse_layers)
    add("--distill-phase", "a distillation phase, LOSS[=WEIGHT],...:EPOCHS; repeat for several "
        f"(default: {describe_phases(defaults.distill.phases)})", type=parse_phase, action="append", dest="distill_phases")
    add("--quantize", f"{QUANTIZE_HELP} (default: {defaults.export.quantize})")
    add_data_arguments(parser)


def compress_config_from_args(args: argparse.Namespace) -> CompressConfig:
    given = vars(args)
    config = load_recipe(args.recipe) if "recipe" in given else CompressConfig()
    config = replace(
        config,
        output_dir=given.get("out", config.output_dir),
        teacher=given.get("teacher", config.teacher),
        data=data_config_from_args(args, config.data),
        finetune=replace(config.finetune, model=given.get("base_model", config.finetune.model),
                         epochs=given.get("finetune_epochs", config.finetune.epochs)),
        distill=replace(config.distill, student_layers=given.get("student_layers", config.distill.student_layers),
                        layers=given.get("layers", config.distill.layers),
                        phases=given.get("distill_phases", config.distill.phases)),
        export=replace(config.export, quantize=given.get("quantize", config.export.quantize)),
    )
    return config


def _run_compress(args: argparse.Namespace) -> None:
    from tinyship.export.pipeline import compress

    compress(compress_config_from_args(args))


EXPORT = Command(
    help="convert a model directory to a bundle: ONNX, parity-checked against PyTorch, INT8-quantized",
    configure=_configure_export,
    run=_run_export,
)
COMPRESS = Command(
    help="the whole pipeline: fine-tune a teacher (unless given), distil, export, quantize, report",
    configure=_configure_compress,
    run=_run_compress,
)
