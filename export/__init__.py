"""tinyship.export: model directory -> bundle (ONNX, parity check, INT8), and the whole pipeline.

One verb and one config per stage: export(ExportConfig), compress(CompressConfig).
Candidate variants (fused, INT8, FP16) live in the VARIANTS registry, INT8 layouts per CPU in PRESETS. Heavy imports
wait until first use.
"""

from __future__ import annotations

import importlib

from tinyship.export.config import ExportConfig

_LAZY = {
    "export": "exporting",
    "compress": "pipeline",
    "CompressConfig": "pipeline",
    "load_recipe": "pipeline",
    "VARIANTS": "quantization",
    "PRESETS": "quantization",
    "compression_report": "report",
}

__all__ = ["ExportConfig", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tinyship.export.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tinyship.export' has no attribute {name!r}")
