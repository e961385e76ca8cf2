"""Distillation losses, by name: each a small function of (student, teacher, ...) -> scalar tensor.

The TinyBERT losses (Jiao et al. 2019): embeddings and hidden states by MSE after an optional
learnable projection of the student's width to the teacher's, attention maps by MSE averaged over
heads, and predictions by soft cross-entropy (or MSE for regression).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from tinyship.runtime.errors import TinyshipError

LOSSES: dict[str, Callable[..., torch.Tensor]] = {}


def register(*names: str):
    def add(fn):
        for name in names:
            LOSSES[name] = fn
        return fn

    return add


@register("prediction")
def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0) -> torch.Tensor:
    """TinyBERT's prediction loss: cross-entropy of softmax(z_T / t) against log_softmax(z_S / t), batch mean."""
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(dim=-1).mean()


@register("prediction_mse")
def prediction_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """The prediction loss for regression: MSE between student and teacher outputs."""
    return F.mse_loss(student_logits, teacher_logits)


@register("embedding", "hidden")
def state_mse(
    student: torch.Tensor,
    teacher: torch.Tensor,
    mask: torch.Tensor | None = None,
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """L_embd / L_hidn: MSE(S·W, T) for [batch, seq, width] states, over real tokens when mask ([batch, seq]) is given.

    projection (W, e.g. a learnable nn.Linear) maps the student's width to the teacher's when they differ.
    """
    if projection is not None:
        student = projection(student)
    if student.shape != teacher.shape:
        raise TinyshipError(
            f"student states {tuple(student.shape)} and teacher states {tuple(teacher.shape)} differ: "
            "give a projection from the student's width to the teacher's"
        )
    if mask is None:
        return F.mse_loss(student, teacher)
    weights = mask[..., None].to(student.dtype)
    return ((student - teacher) ** 2 * weights).sum() / (weights.sum() * student.shape[-1])


@register("attention")
def attention_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_attn = (1/h) Σ_heads MSE(A_S, A_T) for [batch, heads, query, key] maps (scores or probabilities).

    With mask ([batch, seq]), only pairs of real query and key tokens count: masked positions, which
    hold -inf or large negative scores, are zeroed as in TinyBERT and left out of the mean.
    """
    if student.shape[1] != teacher.shape[1]:
        raise TinyshipError(
            f"the student has {student.shape[1]} attention heads and the teacher {teacher.shape[1]}: "
            "give the student the teacher's head count, or leave the attention loss out"
        )
    if mask is None:
        return F.mse_loss(student, teacher)
    real = (mask[:, None, :, None] * mask[:, None, None, :]).bool().expand_as(student)
    zero = torch.zeros((), dtype=student.dtype, device=student.device)
    squared = (torch.where(real, student, zero) - torch.where(real, teacher, zero)) ** 2
    return squared.sum() / real.sum()


@register("labels")
def label_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fine-tuning's own loss against the true labels: cross-entropy over the last axis, for whole inputs or for each
    token (labels of -100 are ignored); MSE for one-output regression. Alone it trains the student without a teacher."""
    if student_logits.shape[-1] == 1 and labels.is_floating_point():
        return F.mse_loss(student_logits.squeeze(-1), labels.to(student_logits.dtype))
    if (labels == -100).all():  # a batch of unlabelled (transfer) text only: nothing to learn from labels
        return student_logits.sum() * 0
    return F.cross_entropy(student_logits.reshape(-1, student_logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
