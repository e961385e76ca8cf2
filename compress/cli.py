"""`tinyship finetune`, `tinyship distill` and `tinyship augment`: flags in, the stage's config dataclass out."""

from __future__ import annotations

import argparse

from tinyship.compress.config import (
    CACHE_TEACHER_RATIO,
    IMPORTANCE_NAMES,
    PRUNE_SCOPES,
    PruneConfig,
    VocabularyConfig,
    ATTENTION_TARGETS,
    STAGES,
    STUDENT_SHAPES,
    AugmentConfig,
    DistillConfig,
    FinetuneConfig,
    Phase,
    TrainingConfig,
    general_phases,
    task_phases,
)
from tinyship.runtime.cli import AMOUNT, POSITIVE, SHARE, Command, add_data_arguments, data_config_from_args, number
from tinyship.runtime.errors import TinyshipError


def add_training_arguments(parser: argparse.ArgumentParser, defaults: TrainingConfig) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--out", default=defaults.output_dir, help="output model directory (default: %(default)s)")
    group.add_argument("--batch-size", type=POSITIVE, default=defaults.batch_size, help="default: %(default)s")
    group.add_argument(
        "--grad-accum", type=POSITIVE, default=defaults.gradient_accumulation_steps,
        help="batches per optimiser step (default: %(default)s)",
    )
    group.add_argument("--learning-rate", type=AMOUNT, default=defaults.learning_rate, help="default: %(default)s")
    group.add_argument("--seed", type=number(0), default=defaults.seed, help="default: %(default)s")
    group.add_argument(
        "--save-steps", type=POSITIVE, default=defaults.save_steps,
        help="checkpoint every N steps; rerunning an interrupted command resumes from the last (default: %(default)s)",
    )
    group.add_argument(
        "--min-steps", type=number(0), default=defaults.min_steps,
        help="train at least this many optimiser steps: on a small data set the epochs go up to reach it; with a "
             "validation split, the best checkpoint by validation metric is kept (default: %(default)s)",
    )
    group.add_argument("--force", action="store_true", help="replace --out (and any interrupted run's checkpoints)")


def training_fields(args: argparse.Namespace) -> dict:
    return dict(
        output_dir=args.out,
        data=data_config_from_args(args),
        batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.learning_rate,
        seed=args.seed,
        save_steps=args.save_steps,
        min_steps=args.min_steps,
        force=args.force,
    )


def _configure_finetune(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a Hugging Face save_pretrained directory (default: the built-in MiniLM-L6)")
    parser.add_argument("--epochs", type=AMOUNT, default=FinetuneConfig.epochs, help="default: %(default)s")
    add_training_arguments(parser, FinetuneConfig())
    add_data_arguments(parser)


def _run_finetune(args: argparse.Namespace) -> None:
    from tinyship.compress import finetune

    print(f"teacher saved to {finetune(FinetuneConfig(model=args.model, epochs=args.epochs, **training_fields(args)))}")


def parse_layers(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated layer numbers, e.g. 2,4,6") from None


def parse_phase(text: str) -> Phase:
    """LOSS[=WEIGHT],...:EPOCHS, e.g. `embedding,hidden,attention:2` or `prediction=1,labels=0.5:3`."""
    try:
        losses, epochs = text.rsplit(":", 1)
        weights = {}
        for item in losses.split(","):
            name, _, weight = item.partition("=")
            weights[name.strip()] = float(weight) if weight else 1.0
        return Phase(weights, float(epochs))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"phase {text!r}: write LOSS[=WEIGHT],...:EPOCHS, e.g. hidden,attention:2 or prediction=1,labels=0.5:3"
        ) from None


def describe_phases(phases: list[Phase]) -> str:
    return " then ".join(",".join(p.losses) + f":{p.epochs:g}" for p in phases)


TRANSFER_HELP = ("unlabelled in-domain text the teacher labels, added to the training set: a text file (one document "
                 "per line), a folder of .txt files, or imdb / treebank (built in)")


def _configure_distill(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", choices=STAGES, default="task",
                        help="task: a fine-tuned teacher and labelled data; general: a pre-trained teacher and "
                             "unlabelled text (default: %(default)s)")
    parser.add_argument("--teacher", metavar="DIR", help="the teacher's model directory (task: fine-tuned, e.g. by `tinyship finetune`; "
                                          "general: pre-trained, default the built-in MiniLM-L6)")
    student = parser.add_argument_group("student (default: half the teacher's layers)")
    student.add_argument("--student", metavar="DIR|SHAPE", help=f"a smaller pre-trained model directory (e.g. from --stage "
                                           f"general), or a shape: {', '.join(STUDENT_SHAPES)}")
    student.add_argument("--student-layers", type=POSITIVE, help="a layer count K, cut uniformly (layers m*L/K of L, m = 1..K) "
                                                            "from the teacher, or with --student DIR from that student")
    student.add_argument("--layers", type=parse_layers, metavar="N,N,...", help="or the layers to keep, 1-based, e.g. 2,4,6: "
                                                                         "the teacher's, or with --student DIR the student's")
    method = parser.add_argument_group("method")
    method.add_argument("--phase", dest="phases", action="append", type=parse_phase, metavar="LOSS[=W],...:EPOCHS",
                        help="a training phase, LOSS[=WEIGHT],...:EPOCHS, repeat for several; losses: embedding, "
                             "hidden, attention, prediction, labels (true labels) (default: task "
                             f"{describe_phases(task_phases())}; general {describe_phases(general_phases())})")
    method.add_argument("--layer-map", type=parse_layers, metavar="N,N,...",
                        help="the teacher layer each student layer learns from (default: g(m) = m*N/M)")
    method.add_argument("--attention", choices=ATTENTION_TARGETS, default=DistillConfig.attention,
                        help="compare attention scores before softmax (TinyBERT) or probabilities (default: %(default)s)")
    method.add_argument("--temperature", type=AMOUNT, default=DistillConfig.temperature,
                        help="of the prediction loss's soft cross-entropy (default: %(default)s)")
    method.add_argument("--corpus", help="general stage: a text file (one document per line), a folder of .txt "
                                         "files, or imdb / treebank (built in; default imdb)")
    method.add_argument("--augmented", help="task stage: a file from `tinyship augment`, trained on in place of the "
                                            "train split")
    method.add_argument("--transfer", metavar="TEXT", help=f"task stage: {TRANSFER_HELP}")
    method.add_argument("--transfer-examples", type=POSITIVE, default=DistillConfig.transfer_examples,
                        help="sentences sampled from --transfer (default: %(default)s)")
    method.add_argument("--cache-teacher", action=argparse.BooleanOptionalAction,
                        help="compute the teacher's logits once and keep them on disk (default: when the teacher has "
                             f"{CACHE_TEACHER_RATIO} times the student's parameters or more)")
    method.add_argument("--teacher-bundle", metavar="DIR",
                        help="the teacher's own bundle (`tinyship export TEACHER`): its ONNX model computes the cached "
                             "logits, faster, when its validation metric is within --teacher-bundle-tolerance of the "
                             "PyTorch teacher's (both are measured; else the PyTorch teacher computes them)")
    method.add_argument("--teacher-bundle-tolerance", type=SHARE, default=DistillConfig.teacher_bundle_tolerance,
                        help="largest validation metric loss of the teacher bundle; 0.005 = half a point "
                             "(default: %(default)s)")
    method.add_argument("--teacher-logits-dir", metavar="DIR",
                        help="keep the cached teacher logits here, keyed by teacher and data, so that other "
                             "distillations from the same teacher on the same data reuse them, and on data that "
                             "shares rows with it compute only the rest (default: with the checkpoints, removed at "
                             "the end)")
    add_training_arguments(parser, DistillConfig())
    add_data_arguments(parser)


def _run_distill(args: argparse.Namespace) -> None:
    from tinyship.compress import distill

    config = DistillConfig(
        stage=args.stage,
        teacher=args.teacher or "",
        student=args.student,
        student_layers=args.student_layers,
        layers=args.layers,
        layer_map=args.layer_map,
        phases=args.phases,
        attention=args.attention,
        temperature=args.temperature,
        corpus=args.corpus,
        augmented=args.augmented,
        transfer=args.transfer,
        transfer_examples=args.transfer_examples,
        cache_teacher=args.cache_teacher,
        teacher_bundle=args.teacher_bundle,
        teacher_bundle_tolerance=args.teacher_bundle_tolerance,
        teacher_logits_dir=args.teacher_logits_dir,
        **training_fields(args),
    )
    print(f"student saved to {distill(config)}")


def _configure_augment(parser: argparse.ArgumentParser) -> None:
    d = AugmentConfig()
    parser.add_argument("--out", default=d.output, help="the augmented training set, JSONL (default: %(default)s)")
    candidates = parser.add_argument_group("candidates (word vectors by default; a masked LM adds predictions)")
    candidates.add_argument("--model", help="the model whose input embeddings give word neighbours (default: the "
                                            "built-in MiniLM-L6; use your teacher)")
    candidates.add_argument("--vectors", help="a word-vectors text file (GloVe or word2vec format) instead")
    candidates.add_argument("--mlm", help="a masked-LM model directory: its predictions replace single-piece words")
    parser.add_argument("--copies", type=POSITIVE, default=d.copies, help="augmented copies per example (default: %(default)s)")
    parser.add_argument("--probability", type=SHARE, default=d.probability,
                        help="chance that a word is replaced (default: %(default)s)")
    parser.add_argument("--candidates", type=POSITIVE, default=d.candidates, help="candidates per word (default: %(default)s)")
    parser.add_argument("--seed", type=number(0), default=d.seed, help="default: %(default)s")
    parser.add_argument("--force", action="store_true", help="replace --out")
    add_data_arguments(parser)


def _run_augment(args: argparse.Namespace) -> None:
    from tinyship.compress import augment

    config = AugmentConfig(output=args.out, data=data_config_from_args(args), model=args.model, vectors=args.vectors,
                           mlm=args.mlm, copies=args.copies, probability=args.probability,
                           candidates=args.candidates, seed=args.seed, force=args.force)
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
    d = PruneConfig()
    parser.add_argument("model", help="a fine-tuned model directory (plain or already pruned)")
    parser.add_argument("--out", default=d.output_dir, help="default: %(default)s")
    parser.add_argument("--heads", type=SHARE, default=d.heads, help="fraction of attention heads to remove (default: %(default)s)")
    parser.add_argument("--ffn", type=SHARE, default=d.ffn, help="fraction of FFN neurons to remove (default: %(default)s)")
    parser.add_argument("--flops", type=SHARE, help="or: fraction of the encoder's FLOPs to remove (that fraction of "
                        "heads and of neurons)")
    parser.add_argument("--parameters", type=SHARE, help="or: fraction of all the model's parameters to remove")
    parser.add_argument("--latency", type=SHARE, help="or: fraction of the latency to remove, as measured here "
                        "(PyTorch, batch 1, 128 tokens, 1 thread) on trial cuts")
    parser.add_argument("--importance", choices=IMPORTANCE_NAMES, default=d.importance,
                        help="taylor: |gradient| of a gate on each head and neuron, on training examples; "
                             "magnitude: weight norms; group: torch-pruning's group magnitude over coupled weights "
                             "(default: %(default)s)")
    parser.add_argument("--scope", choices=PRUNE_SCOPES, default=d.scope,
                        help="global: rank across layers (layers end up different); uniform: the same fraction per "
                             "layer (default: %(default)s)")
    parser.add_argument("--examples", type=POSITIVE, default=d.examples, help="examples that score (default: %(default)s)")
    vocabulary = parser.add_argument_group("vocabulary pruning (instead of heads and neurons; WordPiece tokenizers)")
    vocabulary.add_argument("--vocabulary", action="store_true",
                            help="keep only the word pieces the training split uses (and every special token and "
                                 "single character): fewer embedding rows, the same logits on text of kept pieces")
    vocabulary.add_argument("--corpus", metavar="FILE", help="with --vocabulary: keep the pieces of this text file "
                                                             "(one document per line) instead of the training split")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    add_data_arguments(parser)


def _run_prune(args: argparse.Namespace) -> None:
    if args.vocabulary or args.corpus:
        return _run_prune_vocabulary(args)
    from tinyship.compress.pruning import prune

    prune(PruneConfig(model=args.model, output_dir=args.out, data=data_config_from_args(args), heads=args.heads,
                      ffn=args.ffn, flops=args.flops, parameters=args.parameters, latency=args.latency, importance=args.importance, scope=args.scope, examples=args.examples, force=args.force))


def _run_prune_vocabulary(args: argparse.Namespace) -> None:
    from tinyship.compress.vocabulary import prune_vocabulary

    if not args.vocabulary:
        raise TinyshipError("--corpus chooses the pieces --vocabulary keeps: add --vocabulary")
    if args.heads or args.ffn or any(x is not None for x in (args.flops, args.parameters, args.latency)):
        raise TinyshipError("--vocabulary prunes the vocabulary alone: prune heads and neurons in a separate "
                            "`tinyship prune` run (on either model)")
    prune_vocabulary(VocabularyConfig(model=args.model, output_dir=args.out, data=data_config_from_args(args),
                                      corpus=args.corpus, force=args.force))


PRUNE = Command(
    help="remove the least important attention heads and FFN neurons (recover with `tinyship distill --student`), "
         "or with --vocabulary the word pieces the task's text never uses",
    configure=_configure_prune,
    run=_run_prune,
)
