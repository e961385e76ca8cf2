"""`tinyship finetune` and `tinyship distill`: flags in, the stage's config dataclass out."""

from __future__ import annotations

import argparse

from tinyship.compress.config import DistillConfig, FinetuneConfig, TrainingConfig
from tinyship.runtime.cli import Command, add_data_arguments, data_config_from_args


def add_training_arguments(parser: argparse.ArgumentParser, defaults: TrainingConfig) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--out", default=defaults.output_dir, help="output model directory (default: %(default)s)")
    group.add_argument("--epochs", type=float, default=defaults.epochs, help="default: %(default)s")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="default: %(default)s")
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="default: %(default)s")
    group.add_argument("--seed", type=int, default=defaults.seed, help="default: %(default)s")
    group.add_argument(
        "--save-steps", type=int, default=defaults.save_steps,
        help="checkpoint every N steps; rerunning an interrupted command resumes from the last (default: %(default)s)",
    )
    group.add_argument("--force", action="store_true", help="replace --out if it already holds a model")


def training_fields(args: argparse.Namespace) -> dict:
    return dict(
        output_dir=args.out,
        data=data_config_from_args(args),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        save_steps=args.save_steps,
        force=args.force,
    )


def _configure_finetune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a Hugging Face save_pretrained directory (default: the built-in MiniLM-L6)")
    add_training_arguments(parser, FinetuneConfig())
    add_data_arguments(parser)


def _run_finetune(args: argparse.Namespace) -> None:
    from tinyship.compress import finetune

    print(f"teacher saved to {finetune(FinetuneConfig(model=args.model, **training_fields(args)))}")


def _configure_distill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, help="a fine-tuned model directory (e.g. from `tinyship finetune`)")
    student = parser.add_argument_group("student")
    student.add_argument("--student-layers", type=int, help="layer count, mapped uniformly (default: half the teacher's)")
    student.add_argument("--layers", type=parse_layers, help="or the teacher layers to keep, 1-based, comma-separated (e.g. 2,4,6)")
    student.add_argument("--temperature", type=float, default=DistillConfig.temperature, help="default: %(default)s")
    student.add_argument(
        "--hard-label-weight", type=float, default=DistillConfig.hard_label_weight,
        help="weight of the true-label cross-entropy added to the prediction loss (default: %(default)s)",
    )
    add_training_arguments(parser, DistillConfig())
    add_data_arguments(parser)


def parse_layers(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: give comma-separated layer numbers, e.g. 2,4,6") from None


def _run_distill(args: argparse.Namespace) -> None:
    from tinyship.compress import distill

    config = DistillConfig(
        teacher=args.teacher,
        student_layers=args.student_layers,
        layers=args.layers,
        temperature=args.temperature,
        hard_label_weight=args.hard_label_weight,
        **training_fields(args),
    )
    print(f"student saved to {distill(config)}")


FINETUNE = Command(
    help="fine-tune a model on labelled data: the teacher to compress",
    configure=_configure_finetune,
    run=_run_finetune,
)
DISTILL = Command(
    help="distil a fine-tuned teacher into a student made of a subset of its layers",
    configure=_configure_distill,
    run=_run_distill,
)
