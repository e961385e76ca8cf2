"""The export stage's config: a plain dataclass, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyship.export.quantization import CALIBRATIONS, PRESETS, QUANTIZE_MODES
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.tasks import TASKS

EXPORTERS = ("auto", "optimum", "torch")
TASK_NAMES = ("auto", *TASKS)
OBJECTIVES = ("latency", "size", "balanced")  # what the accuracy gate optimises (evaluation.choose)


@dataclass
class ExportConfig:
    """Convert a model directory to ONNX, check it against PyTorch, build candidate variants (fused, INT8, FP16),
    and ship, among those whose task metric stays within the accuracy budget, the one the objective prefers."""

    model: str = ""  # a save_pretrained directory with a task head (from finetune, distill or your own training)
    output: str = "runs/bundle"
    task: str = "auto"  # auto: from the model's head; naming one checks the head is that task's
    quantize: str = "auto"  # auto: dynamic and static INT8; dynamic; static; none: fp32 only
    preset: str = "auto"  # INT8 layout per instruction set: auto (this CPU) or a name in PRESETS
    per_channel: bool | None = None  # None: the preset's choice
    calibration: tuple[str, ...] = CALIBRATIONS  # static INT8 calibration methods to try
    calibration_examples: int = 128  # training examples that set static INT8 scales
    optimize: bool = True  # try onnxruntime's fused transformer graph as a candidate
    fp16: bool = False  # add an FP16 candidate (for targets with fast half precision)
    accuracy_budget: float = 0.01  # largest allowed metric loss against fp32 (0.01 = 1 point of accuracy)
    objective: str = "latency"  # latency: the smallest of the as-fast (within noise); size: the smallest; balanced: ms x MB
    latency_threads: int = 1  # threads for the gate's latency measurement (batch 1)
    data: DataConfig = field(default_factory=DataConfig)  # validation: the gate; train: calibration
    exporter: str = "auto"  # optimum, falling back to torch.onnx for architectures optimum lacks
    opset: int = 18
    parity_atol: float = 1e-4  # largest allowed |ONNX - PyTorch| on any output
    candidates_dir: str | None = None  # keep every candidate here as NAME/model.onnx (default: a temporary directory)
    force: bool = False  # replace an existing bundle at output

    def __post_init__(self):
        self.calibration = tuple(self.calibration)
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
