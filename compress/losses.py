"""Distillation losses, by name: each a small function of (student, teacher, ...) -> scalar tensor."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOSSES: dict[str, Callable[..., torch.Tensor]] = {}


def register(name: str):
    def add(fn):
        LOSSES[name] = fn
        return fn

    return add


@register("prediction")
def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """TinyBERT's prediction loss: cross-entropy of softmax(z_T / t) against log_softmax(z_S / t), batch mean."""
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(dim=-1).mean()
