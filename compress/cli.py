"""`tinyship finetune`, `distill`, `augment` and `prune`: flags in (declared on the stage's config dataclass),
the stage's config out."""

from __future__ import annotations

import argparse
from dataclasses import fields

from tinyship.compress.config import (
    STUDENT_FIELDS,
    AugmentConfig,
    DistillConfig,
    FinetuneConfig,
    PruneConfig,
    TrainingConfig,
    VocabularyConfig,
)
from tinyship.runtime.cli import Command, add_data_arguments, data_config_from_args
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.flags import add_flags, flagged

TRAINING = [f.name for f in fields(TrainingConfig)]  # the flags every training stage shares, grouped


def _names(config: type, *left_out: str) -> list[str]:
    return [f.name for f in fields(config) if f.name not in left_out]


def _configure_finetune(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, FinetuneConfig, names=_names(FinetuneConfig, *TRAINING))
    add_flags(parser.add_argument_group("training"), FinetuneConfig, names=TRAINING)
    add_data_arguments(parser)


def _training_config(config: type[TrainingConfig], args: argparse.Namespace) -> TrainingConfig:
    return config(**flagged(config, args), data=data_config_from_args(args))


def _run_finetune(args: argparse.Namespace) -> None:
    from tinyship.compress import finetune

    print(f"teacher saved to {finetune(_training_config(FinetuneConfig, args))}")


def _configure_distill(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, DistillConfig, names=["stage", "teacher"])
    add_flags(parser.add_argument_group("student (default: half the teacher's layers)"), DistillConfig,
              names=STUDENT_FIELDS)
    add_flags(parser.add_argument_group("method"), DistillConfig,
              names=_names(DistillConfig, *TRAINING, *STUDENT_FIELDS, "stage", "teacher"))
    add_flags(parser.add_argument_group("training"), DistillConfig, names=TRAINING)
    add_data_arguments(parser)


def _run_distill(args: argparse.Namespace) -> None:
    from tinyship.compress import distill

    print(f"student saved to {distill(_training_config(DistillConfig, args))}")


def _configure_augment(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, AugmentConfig, names=["output"])
    add_flags(parser.add_argument_group("candidates (word vectors by default; a masked LM adds predictions)"),
              AugmentConfig, names=["model", "vectors", "mlm"])
    add_flags(parser, AugmentConfig, names=["copies", "probability", "candidates", "seed", "force"])
    add_data_arguments(parser)


def _run_augment(args: argparse.Namespace) -> None:
    from tinyship.compress import augment

    config = AugmentConfig(**flagged(AugmentConfig, args), data=data_config_from_args(args))
    print(f"augmented training set written to {augment(config)}")


FINETUNE = Command(
    help="fine-tune a model on labelled data: the teacher to compress",
    configure=_configure_finetune,
    run=_run_finetune,
)
DISTILL = Command(
    help="distil a teacher into a smaller student (TinyBERT: general or task stage)",
    configure=_configure_distill,
    run=_run_distill,
)
AUGMENT = Command(
    help="augment a training set by word replacement, for task distillation (TinyBERT)",
    configure=_configure_augment,
    run=_run_augment,
)


def _configure_prune(parser: argparse.ArgumentParser) -> None:
    add_flags(parser, PruneConfig, names=_names(PruneConfig, "steps"))  # rounds: `tinyship compress`
    vocabulary = parser.add_argument_group("vocabulary pruning (instead of heads and neurons; WordPiece tokenizers)")
    vocabulary.add_argument("--vocabulary", action="store_true",
                            help="keep only the word pieces the training split uses (and every special token and "
                                 "single character): fewer embedding rows, the same logits on text of kept pieces")
    add_flags(vocabulary, VocabularyConfig)
    add_data_arguments(parser)


def _run_prune(args: argparse.Namespace) -> None:
    if args.vocabulary or args.corpus:
        return _run_prune_vocabulary(args)
    from tinyship.compress.pruning import prune

    prune(PruneConfig(**flagged(PruneConfig, args), data=data_config_from_args(args)))


def _run_prune_vocabulary(args: argparse.Namespace) -> None:
    from tinyship.compress.vocabulary import prune_vocabulary

    if not args.vocabulary:
        raise TinyshipError("--corpus chooses the pieces --vocabulary keeps: add --vocabulary")
    if args.heads or args.ffn or any(x is not None for x in (args.flops, args.parameters, args.latency)):
        raise TinyshipError("--vocabulary prunes the vocabulary alone: prune heads and neurons in a separate "
                            "`tinyship prune` run (on either model)")
    shared = {k: getattr(args, k) for k in ("model", "output_dir", "force")}
    prune_vocabulary(VocabularyConfig(**shared, **flagged(VocabularyConfig, args), data=data_config_from_args(args)))


PRUNE = Command(
    help="remove the least important attention heads and FFN neurons (recover with `tinyship distill --student`), "
         "or with --vocabulary the word pieces the task's text never uses",
    configure=_configure_prune,
    run=_run_prune,
)
