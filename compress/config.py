"""The compress stages' configs: plain dataclasses, importable without torch (the CLI builds them)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError

STAGE_FILE = "tinyship_stage.json"  # beside each trained model: the config and metrics that made it


def settings(config) -> dict:
    """A config as plain JSON values, to record and compare (force is how, not what: left out)."""
    values = json.loads(json.dumps(asdict(config), default=str))
    values.pop("force", None)
    return values


@dataclass
class TrainingConfig:
    """What every training stage shares: data, output and the optimiser's schedule."""

    output_dir: str = "runs/model"
    data: DataConfig = field(default_factory=DataConfig)
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    save_steps: int = 100  # checkpoint every N steps; a rerun resumes from the last one
    force: bool = False  # replace output_dir if it already holds a model


@dataclass
class FinetuneConfig(TrainingConfig):
    """Fine-tune a model directory on labelled data: the teacher for compression."""

    output_dir: str = "runs/teacher"
    model: str | None = None  # a save_pretrained directory; None: the built-in MiniLM-L6


@dataclass
class DistillConfig(TrainingConfig):
    """Distil a fine-tuned teacher into a student made of a subset of its layers."""

    output_dir: str = "runs/student"
    teacher: str = ""  # a fine-tuned save_pretrained directory
    student_layers: int | None = None  # layer count; None: half the teacher's, mapped uniformly
    layers: list[int] | None = None  # or the teacher layers to keep, 1-based (1 = first Transformer layer)
    epochs: float = 4.0
    learning_rate: float = 1e-4
    temperature: float = 1.0  # prediction loss: soft cross-entropy of z_T/t and z_S/t
    hard_label_weight: float = 0.0  # weight of cross-entropy against the true labels (TinyBERT: 0)

    def __post_init__(self):
        if self.layers is not None and self.student_layers is not None:
            raise TinyshipError("give either the student's layer count or the teacher layers it keeps, not both")
