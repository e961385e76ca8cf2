"""Writing a bundle: model.onnx, tokenizer.json, config.json and the tinyship.json manifest, all or nothing."""

from __future__ import annotations

import json
import os
import platform
import shutil
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tinyship.runtime.bundle import FORMAT_VERSION, MANIFEST_NAME, SCHEMA
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import refuse_existing, sha256_file, writing_directory
from tinyship.runtime.schema import validate

PACKAGES = ("tinyship", "onnxruntime", "onnx", "optimum", "optimum-onnx", "torch", "transformers", "tokenizers",
            "numpy")


def versions() -> dict[str, str]:
    """The versions of the packages that made (or measured) something, for the record."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def check_bundle_output(out: Path, force: bool) -> None:
    refuse_existing(out, force)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TinyshipError(f"cannot create {parent} ({e.strerror}): choose another --out") from None
    if not os.access(parent, os.W_OK):
        raise TinyshipError(f"cannot write to {parent}: choose an --out in a writable directory")


def write_bundle(out: Path, model_file: Path, model_dir: Path, manifest: dict, targets=()) -> Path:
    """Copy the model, tokenizer and config into a temporary directory, add the edge targets' files and the manifest,
    rename into place."""
    from tinyship.compress.tinyship_pruned import plain_config  # torch and transformers: export time only
    from tinyship.export.targets import add_targets  # which imports this module

    with writing_directory(out) as tmp:
        shutil.copyfile(model_file, tmp / "model.onnx")
        shutil.copyfile(model_dir / "tokenizer.json", tmp / "tokenizer.json")
        (tmp / "config.json").write_text(json.dumps(plain_config(model_dir), indent=2) + "\n", encoding="utf-8")
        manifest = {"format_version": FORMAT_VERSION, **manifest, "model": "model.onnx", "tokenizer": "tokenizer.json"}
        seal_bundle(tmp, add_targets(tmp, manifest, targets), out)
    return out


def seal_bundle(tmp: Path, manifest: dict, out: Path) -> None:
    """Write the manifest of the bundle in tmp (to be renamed to out), listing every file at its top with its sha256
    (a target's folder lists its own). It is checked against the schema the runtime loads with first: a bundle it
    would refuse is not written."""
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file() and p.name != MANIFEST_NAME}
    manifest = {**manifest, "files": files,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": versions()}
    validate(manifest, SCHEMA, f"the manifest for {out}", "nothing was written; labels come from the model's "
             "config.json id2label, anything else is a bug in tinyship export to report")
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
