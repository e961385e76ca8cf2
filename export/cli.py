"""`tinyship export` and `tinyship compress`: flags (and a YAML recipe) in, the stage's config out."""

from __future__ import annotations

import argparse
from dataclasses import replace
from functools import partial

from tinyship.compress.cli import TRANSFER_HELP, describe_phases, parse_layers, parse_phase
from tinyship.compress.config import CLEARLY_BETTER, STUDENT_SHAPES
from tinyship.export.config import EXPORTERS, OBJECTIVES, TASK_NAMES, ExportConfig
from tinyship.export.pipeline import CompressConfig, load_recipe
from tinyship.export.quantization import CALIBRATIONS, PRESETS, QUANTIZE_MODES
from tinyship.runtime.cli import (AMOUNT, POSITIVE, SHARE, THREADS, Command, add_data_arguments,
                                  data_config_from_args, number, optional_flag)

QUANTIZE_HELP = ("auto: build INT8 dynamic and static variants and ship the best within the accuracy budget; "
                 "dynamic or static: only that kind; none: fp32 only")
OBJECTIVE_HELP = ("which candidate within the accuracy budget ships: latency, the smallest of those as fast as the fastest "
                  "(median latency within max(5%%, its run-to-run spread)); size, the smallest; balanced, the lowest "
                  "latency x size")


def _configure_export(parser: argparse.ArgumentParser) -> None:
    d = ExportConfig()
    parser.add_argument("model", help="a model directory with a task head (from `tinyship finetune`, `tinyship distill` "
                        "or your own training)")
    parser.add_argument("--out", default=d.output, help="bundle directory (default: %(default)s)")
    parser.add_argument("--task", default=d.task, choices=TASK_NAMES,
                        help="the model's task; auto reads it from the model's head (default: %(default)s)")
    parser.add_argument("--quantize", default=d.quantize, choices=QUANTIZE_MODES, help=f"{QUANTIZE_HELP} (default: %(default)s)")
    parser.add_argument("--preset", default=d.preset, choices=("auto", *PRESETS),
                        help="INT8 layout for the target's instruction set; auto: this CPU's (default: %(default)s)")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=d.per_channel,
                        help="one INT8 scale per output channel (default: the preset's choice)")
    parser.add_argument("--calibration", default=",".join(d.calibration), type=lambda text: tuple(text.split(",")),
                        help=f"static INT8 calibration methods to try, from {', '.join(CALIBRATIONS)} (default: %(default)s)")
    parser.add_argument("--calibration-examples", type=POSITIVE, default=d.calibration_examples,
                        help="training examples that set static INT8 scales (default: %(default)s)")
    parser.add_argument("--accuracy-budget", type=number(0, kind=float), default=d.accuracy_budget,
                        help="largest metric loss a variant may have against fp32; 0.01 = 1 point (default: %(default)s)")
    parser.add_argument("--objective", default=d.objective, choices=OBJECTIVES, help=f"{OBJECTIVE_HELP} (default: %(default)s)")
    parser.add_argument("--no-optimize", dest="optimize", action="store_false",
                        help="skip the fused-graph candidate (onnxruntime's transformer optimizer)")
    parser.add_argument("--fp16", action="store_true", help="add an FP16 candidate (for targets with fast half precision)")
    parser.add_argument("--threads", type=THREADS, default=d.latency_threads,
                        help="threads for the latency that picks the winner (default: %(default)s)")
    parser.add_argument("--exporter", default=d.exporter, choices=EXPORTERS,
                        help="optimum, torch.onnx, or auto: optimum, torch.onnx for what optimum lacks (default: %(default)s)")
    parser.add_argument("--opset", type=POSITIVE, default=d.opset, help="ONNX opset (default: %(default)s)")
    parser.add_argument("--keep-candidates", metavar="DIR", help="keep every candidate model in DIR (default: discard them)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    add_data_arguments(parser)


def _run_export(args: argparse.Namespace) -> None:
    from tinyship.export.exporting import export

    export(ExportConfig(
        model=args.model, output=args.out, task=args.task, quantize=args.quantize, preset=args.preset,
        per_channel=args.per_channel, calibration=args.calibration, calibration_examples=args.calibration_examples,
        optimize=args.optimize, fp16=args.fp16, accuracy_budget=args.accuracy_budget, objective=args.objective,
        latency_threads=args.threads,
        data=data_config_from_args(args), exporter=args.exporter, opset=args.opset, candidates_dir=args.keep_candidates,
        force=args.force,
    ))


def _configure_compress(parser: argparse.ArgumentParser) -> None:
    add = partial(optional_flag, parser)
    defaults = CompressConfig()
    add("--recipe", "a YAML recipe whose keys mirror CompressConfig (flags given here override it)")
    add("--out", f"output directory for teacher, student, bundle and report (default: {defaults.output_dir})")
    add("--teacher", "a fine-tuned model directory; without it, --base-model is fine-tuned first")
    add("--base-model", "the model to fine-tune as teacher (default: the built-in MiniLM-L6)")
    add("--finetune-epochs", f"default: {defaults.finetune.epochs}", type=AMOUNT)
    add("--allow-weak-teacher", "go on with a teacher that is not clearly better than always predicting the most "
        f"frequent label (clearly better: {CLEARLY_BETTER}); without it, such a teacher stops the run",
        action="store_true")
    add("--min-steps", "fine-tuning and each distillation phase take at least this many optimiser steps: on a small "
        f"data set the epochs go up to reach it (default: {defaults.finetune.min_steps}); with a validation split, "
        "each keeps its best checkpoint by validation metric", type=number(0))
    add("--student", f"the student: a smaller model directory, or a shape ({', '.join(STUDENT_SHAPES)})",
        metavar="DIR|SHAPE")
    add("--student-layers", "a student layer count, cut uniformly from the teacher (default: half its layers) or with "
        "--student DIR from that student", type=POSITIVE)
    add("--layers", "or the layers the student keeps, 1-based (e.g. 2,4,6): the teacher's, or with --student DIR the "
        "student's", type=parse_layers)
    add("--distill-phase", "a distillation phase, LOSS[=WEIGHT],...:EPOCHS; repeat for several "
        f"(default: {describe_phases(defaults.distill.phases)})", type=parse_phase, action="append", dest="distill_phases")
    add("--transfer", f"distillation: {TRANSFER_HELP}", metavar="TEXT")
    add("--transfer-examples", f"sentences sampled from --transfer (default: {defaults.distill.transfer_examples})",
        type=POSITIVE)
    add("--prune-flops", "prune the student to remove this fraction of its encoder FLOPs, then recover it by "
        "distillation (default: no pruning)", type=SHARE)
    add("--prune-steps", "reach --prune-flops in this many prune-then-recover rounds (default: 1)", type=POSITIVE)
    add("--prune-vocabulary", "keep only the word pieces the training data uses (and every special token and single "
        "character) in the final student's embeddings and tokenizer, before export", action="store_true")
    add("--quantize", f"{QUANTIZE_HELP} (default: {defaults.export.quantize})", choices=QUANTIZE_MODES)
    add("--accuracy-budget", f"largest metric loss against fp32 (default: {defaults.export.accuracy_budget})",
        type=number(0, kind=float))
    add("--objective", f"{OBJECTIVE_HELP} (default: {defaults.export.objective})", choices=OBJECTIVES)
    add_data_arguments(parser)


STUDENT_FLAGS = ("student", "student_layers", "layers")  # the student's flags replace the recipe's choice as a whole
NO_PRUNE_TARGET = {"heads": 0.0, "ffn": 0.0, "flops": None, "parameters": None, "latency": None}  # --prune-flops: ditto


def compress_config_from_args(args: argparse.Namespace) -> CompressConfig:
    given = vars(args)
    config = load_recipe(args.recipe) if "recipe" in given else CompressConfig()
    student = {key: given.get(key) for key in STUDENT_FLAGS} if set(STUDENT_FLAGS) & set(given) else {}
    min_steps = {"min_steps": given["min_steps"]} if "min_steps" in given else {}
    prune_target = {**NO_PRUNE_TARGET, "flops": given["prune_flops"]} if "prune_flops" in given else {}
    config = replace(
        config,
        output_dir=given.get("out", config.output_dir),
        teacher=given.get("teacher", config.teacher),
        allow_weak_teacher=given.get("allow_weak_teacher", config.allow_weak_teacher),
        prune_vocabulary=given.get("prune_vocabulary", config.prune_vocabulary),
        data=data_config_from_args(args, config.data),
        finetune=replace(config.finetune, model=given.get("base_model", config.finetune.model),
                         epochs=given.get("finetune_epochs", config.finetune.epochs), **min_steps),
        distill=replace(config.distill, **student, **min_steps,
                        phases=given.get("distill_phases", config.distill.phases),
                        transfer=given.get("transfer", config.distill.transfer),
                        transfer_examples=given.get("transfer_examples", config.distill.transfer_examples)),
        prune=replace(config.prune, **prune_target, steps=given.get("prune_steps", config.prune.steps)),
        export=replace(config.export, quantize=given.get("quantize", config.export.quantize),
                       accuracy_budget=given.get("accuracy_budget", config.export.accuracy_budget),
                       objective=given.get("objective", config.export.objective)),
    )
    return config


def _run_compress(args: argparse.Namespace) -> None:
    from tinyship.export.pipeline import compress

    compress(compress_config_from_args(args))


EXPORT = Command(
    help="convert a model directory to a bundle: ONNX checked against PyTorch, then the fastest of fp32, fused, "
         "INT8 and FP16 variants that keeps accuracy within the budget",
    configure=_configure_export,
    run=_run_export,
)
COMPRESS = Command(
    help="the whole pipeline: fine-tune a teacher (unless given), distil, prune (if asked), export, quantize, report",
    configure=_configure_compress,
    run=_run_compress,
)
