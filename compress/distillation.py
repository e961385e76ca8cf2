"""`distill`: a fine-tuned teacher in, a smaller student trained on the teacher's predictions out."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, Trainer

from tinyship.compress.config import DistillConfig
from tinyship.compress.losses import LOSSES
from tinyship.compress.training import check_output, hf_tokenizer, train
from tinyship.runtime.data import load_examples
from tinyship.runtime.files import check_model_dir, sha256_file
from tinyship.runtime.errors import TinyshipError


def uniform_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """TinyBERT's mapping g(m) = m * N / M: the 1-based teacher layer each student layer starts from."""
    if not 1 <= student_layers <= teacher_layers:
        raise TinyshipError(f"a student of {student_layers} layers from a {teacher_layers}-layer teacher: use 1 to {teacher_layers}")
    return [m * teacher_layers // student_layers for m in range(1, student_layers + 1)]


def encoder_layers(model) -> torch.nn.ModuleList:
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TinyshipError(
            f"{type(model).__name__} has no encoder.layer list: tinyship builds students of "
            "BERT-style encoders (bert, roberta, mpnet, electra, ...)"
        )
    return layers


def student_from_teacher(teacher, layers: list[int]):
    """A copy of the teacher that keeps only the given 1-based layers (embeddings and head included)."""
    count = len(encoder_layers(teacher))
    if not layers or len(set(layers)) != len(layers) or not all(1 <= n <= count for n in layers):
        raise TinyshipError(f"layers {layers}: give distinct teacher layer numbers from 1 to {count}")
    student = copy.deepcopy(teacher)
    kept = torch.nn.ModuleList(encoder_layers(student)[n - 1] for n in layers)
    student.base_model.encoder.layer = kept
    student.config.num_hidden_layers = len(layers)
    return student


class DistillationTrainer(Trainer):
    """A Trainer whose loss is the prediction loss against a frozen teacher (plus optional hard labels)."""

    def __init__(self, *args, teacher, temperature: float, hard_label_weight: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.to(self.args.device).eval()
        self.temperature = temperature
        self.hard_label_weight = hard_label_weight

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        with torch.no_grad():
            teacher_logits = self.teacher(**inputs).logits
        loss = LOSSES["prediction"](outputs.logits, teacher_logits, self.temperature)
        if self.hard_label_weight and labels is not None:
            loss = loss + self.hard_label_weight * F.cross_entropy(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss


def distill(config: DistillConfig) -> Path:
    """Build a student from the teacher's layers and train it on the teacher's predictions; returns its directory."""
    check_output(config)
    if not config.teacher:
        raise TinyshipError("no teacher: pass --teacher DIR, a fine-tuned model directory (e.g. from `tinyship finetune`)")
    teacher_dir = check_model_dir(config.teacher)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    names = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    train_set = load_examples(config.data, "train", names)
    validation_set = load_examples(config.data, "validation", names)
    count = len(encoder_layers(teacher))
    if config.layers is None:
        layers = uniform_layers(count, max(1, count // 2) if config.student_layers is None else config.student_layers)
    else:
        layers = config.layers
    student = student_from_teacher(teacher, layers)
    print(f"distilling {teacher_dir} ({count} layers) into a student of teacher layers {layers} on {train_set.source}")
    return train(
        student,
        hf_tokenizer(teacher_dir),
        config,
        train_set,
        validation_set,
        trainer_class=DistillationTrainer,
        teacher=teacher,
        temperature=config.temperature,
        hard_label_weight=config.hard_label_weight,
        record={"teacher_sha256": weights_digest(teacher_dir)},
    )


def weights_digest(model_dir: Path) -> str:
    """The sha256 of a model directory's weights: which teacher a student was distilled from."""
    weights = model_dir / "model.safetensors"
    return sha256_file(weights if weights.is_file() else model_dir / "model.safetensors.index.json")
