"""The export stage's config: a plain dataclass, importable without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from tinyship.export.quantization import QUANTIZERS
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError


@dataclass
class ExportConfig:
    """Convert a model directory to ONNX, check it against PyTorch, quantize it, and write a bundle."""

    model: str = ""  # a save_pretrained directory (from `tinyship finetune` or `tinyship distill`)
    output: str = "runs/bundle"
    quantize: str = "dynamic"  # a name in tinyship.export.QUANTIZERS, or "none" for fp32
    data: DataConfig = field(default_factory=DataConfig)  # its validation split measures accuracy at export
    opset: int = 18
    parity_atol: float = 1e-4  # largest allowed |ONNX - PyTorch| logit difference
    candidates_dir: str | None = None  # keep every candidate model here (default: a temporary directory)
    force: bool = False  # replace an existing bundle at output

    def __post_init__(self):
        if self.quantize != "none" and self.quantize not in QUANTIZERS:
            raise TinyshipError(f"unknown quantize {self.quantize!r}: use none or {', '.join(QUANTIZERS)}")
