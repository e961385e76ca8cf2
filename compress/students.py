"""Students: a subset of the teacher's layers, a shape built from a config, or a smaller model directory;
and the layer map that says which teacher layer each student layer learns from."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import transformers
from transformers import AutoModel, set_seed

from tinyship.compress.config import STUDENT_SHAPES, DistillConfig, Student
from tinyship.compress.finetuning import quiet_transformers
from tinyship.compress.pruning import PRUNING_KEY, load_model
from tinyship.compress.states import encoder_layers
from tinyship.compress.tasks import Task, task_of
from tinyship.compress.tinyship_pruned import read_config
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir


def uniform_layers(teacher_layers: int, student_layers: int, source: str = "teacher") -> list[int]:
    """TinyBERT's mapping g(m) = m * N / M: the 1-based teacher layer each student layer starts from (and so the
    layers a uniform cut keeps, of the teacher or of a `source` student directory)."""
    if not 1 <= student_layers <= teacher_layers:
        raise TinyshipError(f"a student of {student_layers} layers from a {teacher_layers}-layer {source}: "
                            f"use 1 to {teacher_layers}")
    return [m * teacher_layers // student_layers for m in range(1, student_layers + 1)]


def kept_layers(spec: Student, count: int, source: str = "teacher") -> list[int]:
    """The 1-based layers of a `count`-layer source that the student keeps: those named, or a uniform cut
    (by default half the teacher's layers)."""
    if isinstance(spec.layers, tuple):
        return list(spec.layers)
    return uniform_layers(count, spec.layers or max(1, count // 2), source)


def student_from_teacher(model, layers: list[int], source: str = "teacher"):
    """A copy of the teacher (or of a larger student model, named by `source`) that keeps only the given 1-based
    layers (embeddings and head included)."""
    count = len(encoder_layers(model))
    if not layers or len(set(layers)) != len(layers) or not all(1 <= n <= count for n in layers):
        raise TinyshipError(f"layers {layers}: give distinct {source} layer numbers from 1 to {count}")
    student = copy.deepcopy(model)
    student.base_model.encoder.layer = torch.nn.ModuleList(encoder_layers(student)[n - 1] for n in layers)
    student.config.num_hidden_layers = len(layers)
    return student


def load_teacher(model_dir: Path, stage: str) -> tuple[torch.nn.Module, Task | None]:
    """The teacher and its task: a fine-tuned model for task distillation, the bare encoder for general distillation."""
    if stage == "general":
        return AutoModel.from_pretrained(model_dir), None
    task = task_of(read_config(model_dir))
    return load_model(model_dir), task  # plain or pruned


def build_student(config: DistillConfig, teacher, teacher_dir: Path,
                  task: Task | None) -> tuple[torch.nn.Module, Path, list[int]]:
    """The student, the directory of its tokenizer, and its layer map (config.layer_map, or the teacher layers it
    was cut from, or uniform g(m) = m*N/M). A student directory with a layer count or kept layers is cut to those
    of its own layers, uniformly by the same rule as a cut of the teacher."""
    set_seed(config.seed)  # fresh weights (a shape, a new head) are the same on every run
    spec = config.spec
    teacher_count = len(encoder_layers(teacher))
    tokenizer_dir = teacher_dir
    cut_from = None
    if spec.shape:
        student = type(teacher)(type(teacher.config).from_dict({**teacher.config.to_dict(), **spec.shape}))
    elif spec.directory:
        if not Path(spec.directory).exists():
            raise TinyshipError(f"student {spec.directory!r} is neither a model directory nor a shape "
                                f"({', '.join(STUDENT_SHAPES)}): check the path or the name")
        tokenizer_dir = check_model_dir(spec.directory)
        pruned = hasattr(read_config(tokenizer_dir), PRUNING_KEY)
        if pruned and spec.layers is not None:
            raise TinyshipError(f"student {spec.directory} is pruned (its layers differ in shape) and is not cut: "
                                "leave out the layer count and the layers to keep")
        with quiet_transformers():  # a general student has no task head yet: a fresh one is expected
            if task is not None and pruned:
                student = load_model(tokenizer_dir)  # pruned: its slim layers and its own head, exactly
            elif task is None:
                student = AutoModel.from_pretrained(tokenizer_dir)
            else:
                student = getattr(transformers, task.head).from_pretrained(
                    tokenizer_dir,
                    num_labels=teacher.config.num_labels,
                    id2label=teacher.config.id2label,
                    label2id=teacher.config.label2id,
                    problem_type=teacher.config.problem_type,
                    ignore_mismatched_sizes=True,
                )
        if spec.layers is not None:
            source = f"student ({spec.directory})"
            student = student_from_teacher(student, kept_layers(spec, len(encoder_layers(student)), source), source)
    else:
        cut_from = kept_layers(spec, teacher_count)
        student = student_from_teacher(teacher, cut_from)
    student_count = len(encoder_layers(student))
    layer_map = config.layer_map or cut_from or uniform_layers(teacher_count, student_count)
    if len(layer_map) != student_count or not all(1 <= n <= teacher_count for n in layer_map):
        raise TinyshipError(
            f"layer map {layer_map}: give one teacher layer (1 to {teacher_count}) for each of the student's "
            f"{student_count} layers"
        )
    return student, tokenizer_dir, layer_map
