"""tinyship.compress: fine-tune a teacher and distil smaller students from it (torch, transformers).

One verb and one config per stage: finetune(FinetuneConfig), distill(DistillConfig).
The verbs import torch when first used, so the configs stay importable without it.
"""

from __future__ import annotations

import importlib

from tinyship.compress.config import DistillConfig, FinetuneConfig, TrainingConfig

_LAZY = {
    "finetune": "finetuning",
    "distill": "distillation",
    "student_from_teacher": "distillation",
    "uniform_layers": "distillation",
    "weights_digest": "distillation",
    "LOSSES": "losses",
}

__all__ = ["DistillConfig", "FinetuneConfig", "TrainingConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tinyship.compress.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tinyship.compress' has no attribute {name!r}")
