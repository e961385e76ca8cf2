"""tinyship.compress: fine-tune a teacher, augment its data and distil smaller students (torch, transformers).

One verb and one config per stage: finetune(FinetuneConfig), distill(DistillConfig), augment(AugmentConfig),
prune(PruneConfig), prune_vocabulary(VocabularyConfig); load_model reads plain and pruned model directories;
validate scores one on a split.
The verbs import torch when first used, so the configs stay importable without it.
"""

from __future__ import annotations

import importlib

from tinyship.compress.config import (
    AugmentConfig,
    DistillConfig,
    FinetuneConfig,
    Phase,
    PruneConfig,
    TrainingConfig,
    VocabularyConfig,
)

_LAZY = {
    "finetune": "finetuning",
    "distill": "distillation",
    "augment": "augmentation",
    "weights_digest": "distillation",
    "student_from_teacher": "students",
    "uniform_layers": "students",
    "LOSSES": "losses",
    "prune": "pruning",
    "load_model": "pruning",
    "IMPORTANCES": "pruning",
    "prune_vocabulary": "vocabulary",
    "validate": "evaluation",
}

__all__ = ["AugmentConfig", "DistillConfig", "FinetuneConfig", "Phase", "PruneConfig", "TrainingConfig",
           "VocabularyConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tinyship.compress.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tinyship.compress' has no attribute {name!r}")
