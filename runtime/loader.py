"""load(): a bundle directory in, its task's predictor out, after every check a bundle must pass."""

from __future__ import annotations

from pathlib import Path

from tinyship.runtime.bundle import MANIFEST_NAME, batch_invariant, check_fit, read_manifest
from tinyship.runtime.predictor import Predictor, TextClassifier
from tinyship.runtime.tasks import bundle_task


def load(bundle: str | Path, threads: int | None = None, batch_size: int = 32, providers: list[str] | None = None,
         optimization_level: str = "all") -> Predictor:
    """The bundle's predictor, after checking its manifest, every file's sha256 and that the manifest fits the model.

    threads: onnxruntime intra-op threads (default: all cores); batch_size: inputs per model run (1 when the bundle
    is not batch-invariant);
    providers: onnxruntime execution providers (default: CPU); optimization_level: disable, basic, extended or all.
    """
    manifest = read_manifest(bundle)
    task = bundle_task(manifest["task"], str(bundle))
    bundle = Path(bundle)
    extra = {"multi_label": manifest.get("multi_label", False)} if task.predictor is TextClassifier else {}
    predictor = task.predictor(
        bundle / manifest["model"],
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
