"""load(): a bundle directory in, its task's predictor out, after every check a bundle must pass."""

from __future__ import annotations

from pathlib import Path

from tinyship.runtime.bundle import MANIFEST_NAME, batch_invariant, check_fit, model_file, read_manifest
from tinyship.runtime.predictor import Predictor, TextClassifier
from tinyship.runtime.tasks import bundle_task


def load(bundle: str | Path, threads: int | None = None, batch_size: int = 32, providers: list[str] | None = None,
         optimization_level: str = "all", model_format: str = "onnx") -> Predictor:
    """The bundle's predictor, after checking its manifest, every file's sha256 and that the manifest fits the model.

    threads: onnxruntime intra-op threads (default: all cores); batch_size: inputs per model run (1 when the bundle
    is not batch-invariant); providers: onnxruntime execution providers (default: CPU); optimization_level: disable,
    basic, extended or all; model_format: onnx, or ort (the mobile target's ORT-format model, as onnxruntime's mobile
    packages run it).
    """
    manifest = read_manifest(bundle)
    model = model_file(manifest, model_format, bundle)
    task = bundle_task(manifest["task"], str(bundle))
    bundle = Path(bundle)
    extra = {"multi_label": manifest.get("multi_label", False)} if task.predictor is TextClassifier else {}
    predictor = task.predictor(
        bundle / model,
        bundle / manifest["tokenizer"],
        labels=manifest["labels"],
        max_length=manifest["max_length"],
        threads=threads,
        batch_size=batch_size,
        disabled_optimizers=manifest.get("session", {}).get("disabled_optimizers", []),
        providers=providers,
        optimization_level=optimization_level,
        pairs=manifest.get("pairs"),
        truncation=manifest.get("truncation"),
        batch_invariant=batch_invariant(manifest),
        **extra,
    )
    check_fit(predictor, manifest, bundle / MANIFEST_NAME)
    return predictor

