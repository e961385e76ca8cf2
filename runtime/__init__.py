"""tinyship.runtime: load a bundle and predict, with numpy, onnxruntime and tokenizers only.

    from tinyship.runtime import load
    classify = load("runs/demo/bundle")
    classify(["a gripping, funny film", "a dull mess"])
    # [{'label': 'positive', 'score': 0.97, 'scores': {...}, 'truncated': False}, {'label': 'negative', ...}]

load() returns the predictor of the bundle's task (tinyship.runtime.tasks): TextClassifier, TextRegressor,
TokenClassifier or QuestionAnswerer. The names below load on first use, so that importing a light module of the
package (errors, files, bench) does not start onnxruntime.
"""

from __future__ import annotations

import importlib

EXPORTS = {
    "load": "tinyship.runtime.loader",
    "FORMAT_VERSION": "tinyship.runtime.bundle",
    "TinyshipError": "tinyship.runtime.errors",
    "TextClassifier": "tinyship.runtime.predictor",
    "TextRegressor": "tinyship.runtime.predictor",
    "TokenClassifier": "tinyship.runtime.token_classification",
    "QuestionAnswerer": "tinyship.runtime.question_answering",
}
__all__ = sorted(EXPORTS)


def __getattr__(name: str):
    if name not in EXPORTS:
        raise AttributeError(f"module 'tinyship.runtime' has no attribute {name!r}")
    return getattr(importlib.import_module(EXPORTS[name]), name)
