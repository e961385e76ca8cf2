"""The export stage's config: a plain dataclass, importable without torch."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from tinyship.export.quantization import CALIBRATIONS, PRESETS, QUANTIZE_MODES
from tinyship.export.targets import TARGETS_FLAG, check_targets
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.flags import POSITIVE, THREADS, comma_separated, flag, number
from tinyship.runtime.tasks import TASKS

EXPORTERS = ("auto", "optimum", "torch")
TASK_NAMES = ("auto", *TASKS)
OBJECTIVES = ("latency", "size", "balanced")  # what the accuracy gate optimises (evaluation.choose)


@dataclass
class ExportConfig:
    """Convert a model directory to ONNX, check it against PyTorch, build candidate variants (fused, INT8, FP16),
    and ship, among those whose task metric stays within the accuracy budget, the one the objective prefers."""

    model: str = field(default="", metadata=flag(
        "a model directory with a task head (from `tinyship finetune`, `tinyship distill` or your own training)",
        "model"))
    output: str = field(default="runs/bundle", metadata=flag("the bundle directory", "--out"))
    task: str = field(default="auto", metadata=flag(
        "the model's task; auto reads it from the model's head (naming one checks the head is that task's)",
        choices=TASK_NAMES))
    quantize: str = field(default="auto", metadata=flag(
        "auto: build INT8 dynamic and static variants and ship the best within the accuracy budget; dynamic or "
        "static: only that kind; none: fp32 only", choices=QUANTIZE_MODES))
    preset: str = field(default="auto", metadata=flag(
        "INT8 layout for the target's instruction set; auto: this CPU's", choices=("auto", *PRESETS)))
    per_channel: bool | None = field(default=None, metadata=flag(
        "one INT8 scale per output channel (default: the preset's choice)", action=argparse.BooleanOptionalAction))
    calibration: tuple[str, ...] = field(default=CALIBRATIONS, metadata=flag(
        f"static INT8 calibration methods to try, from {', '.join(CALIBRATIONS)}", type=comma_separated(str)))
    calibration_examples: int = field(default=128, metadata=flag(
        "training examples that set static INT8 scales", type=POSITIVE))
    optimize: bool = field(default=True, metadata=flag(
        "skip the fused-graph candidate (onnxruntime's transformer optimizer)", "--no-optimize",
        action="store_false"))
    fp16: bool = field(default=False, metadata=flag(
        "add an FP16 candidate (for targets with fast half precision)", action="store_true"))
    accuracy_budget: float = field(default=0.01, metadata=flag(
        "largest metric loss a variant may have against fp32; 0.01 = 1 point", type=number(0, kind=float)))
    objective: str = field(default="latency", metadata=flag(
        "which candidate within the accuracy budget ships: latency, the smallest of those as fast as the fastest "
        "(median latency within max(5%, its run-to-run spread)); size, the smallest; balanced, the lowest latency x "
        "size", choices=OBJECTIVES))
    latency_threads: int = field(default=1, metadata=flag(
        "threads for the latency that picks the winner (batch 1)", "--threads", type=THREADS))
    data: DataConfig = field(default_factory=DataConfig)  # validation: the gate; train: calibration
    exporter: str = field(default="auto", metadata=flag(
        "optimum, torch.onnx, or auto: optimum, torch.onnx for what optimum lacks", choices=EXPORTERS))
    opset: int = field(default=18, metadata=flag("the ONNX opset", type=POSITIVE))
    parity_atol: float = 1e-4  # largest allowed |ONNX - PyTorch| on any output
    candidates_dir: str | None = field(default=None, metadata=flag(
        "keep every candidate model in DIR as NAME/model.onnx (default: discard them)", "--keep-candidates",
        metavar="DIR"))
    force: bool = field(default=False, metadata=flag("replace an existing bundle at --out", action="store_true"))
    targets: tuple[str, ...] = field(default=(), metadata=TARGETS_FLAG)

    def __post_init__(self):
        self.calibration = tuple(self.calibration)
        self.targets = check_targets(self.targets)
        checks = [
            ("task", self.task, TASK_NAMES),
            ("quantize", self.quantize, QUANTIZE_MODES),
            ("preset", self.preset, ("auto", *PRESETS)),
            ("exporter", self.exporter, EXPORTERS),
            ("objective", self.objective, OBJECTIVES),
            *(("calibration", method, CALIBRATIONS) for method in self.calibration),
        ]
        for name, value, allowed in checks:
            if value not in allowed:
                raise TinyshipError(f"unknown {name} {value!r}: use one of {', '.join(allowed)}")
        if self.quantize in ("auto", "static") and not self.calibration:
            raise TinyshipError("static quantization needs at least one calibration method: "
                                f"give --calibration from {', '.join(CALIBRATIONS)}, or --quantize dynamic")
        if self.calibration_examples < 1:
            raise TinyshipError(f"calibration_examples is {self.calibration_examples}: give a positive number")
        if self.accuracy_budget < 0:
            raise TinyshipError(f"accuracy_budget is {self.accuracy_budget}: give 0 or more (0.01 = 1 point)")
