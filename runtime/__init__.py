"""tinyship.runtime: load a bundle and predict, with numpy, onnxruntime and tokenizers only.

    from tinyship.runtime import load
    classify = load("runs/demo/bundle")
    classify(["a gripping, funny film", "a dull mess"])
    # [{'label': 'positive', 'score': 0.97, 'scores': {...}, 'truncated': False}, {'label': 'negative', ...}]

load() returns the bundle's task's predictor: TextClassifier, TokenClassifier or QuestionAnswerer.
"""

from __future__ import annotations

from pathlib import Path

from tinyship.runtime.bundle import FORMAT_VERSION, read_manifest
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.predictor import Predictor, TextClassifier
from tinyship.runtime.question_answering import QuestionAnswerer
from tinyship.runtime.token_classification import TokenClassifier

TASKS = {"text-classification": TextClassifier, "token-classification": TokenClassifier,
         "question-answering": QuestionAnswerer}

__all__ = ["FORMAT_VERSION", "QuestionAnswerer", "TextClassifier", "TinyshipError", "TokenClassifier", "load"]


def load(bundle: str | Path, threads: int | None = None, batch_size: int = 32, providers: list[str] | None = None,
         optimization_level: str = "all") -> Predictor:
    """The bundle's predictor, after verifying its manifest and every file's checksum.

    threads: onnxruntime intra-op threads (default: all cores); batch_size: inputs per model run;
    providers: onnxruntime execution providers (default: CPU); optimization_level: disable, basic, extended or all.
    """
    manifest = read_manifest(bundle)
    task = manifest.get("task")
    if task not in TASKS:
        raise TinyshipError(f"{bundle} is a {task!r} bundle; this tinyship serves {', '.join(TASKS)}")
    session = manifest.get("session") or {}
    disabled = session.get("disabled_optimizers", []) if isinstance(session, dict) else None
    if not isinstance(disabled, list) or not all(isinstance(name, str) for name in disabled):
        raise TinyshipError(f"{bundle}: session.disabled_optimizers must be a list of names: re-export the bundle")
    if not isinstance(manifest.get("truncation") or {}, dict):
        raise TinyshipError(f"{bundle}: truncation must be a mapping (strategy, stride): re-export the bundle")
    bundle = Path(bundle)
    extra = {"multi_label": bool(manifest.get("multi_label"))} if task == "text-classification" else {}
    return TASKS[task](
        bundle / manifest["model"],
        bundle / manifest["tokenizer"],
        labels=manifest["labels"],
        max_length=manifest["max_length"],
        threads=threads,
        batch_size=batch_size,
        disabled_optimizers=disabled,
        providers=providers,
        optimization_level=optimization_level,
        pairs=manifest.get("pairs"),
        truncation=manifest.get("truncation"),
        **extra,
    )
