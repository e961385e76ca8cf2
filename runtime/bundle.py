"""Reading and verifying a bundle: model.onnx, tokenizer.json and the tinyship.json manifest."""

from __future__ import annotations

import json
from pathlib import Path

from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import sha256_file

FORMAT_VERSION = 1
MANIFEST_NAME = "tinyship.json"


REQUIRED = {"task": str, "labels": list, "max_length": int, "model": str, "tokenizer": str, "files": dict}


def read_manifest(bundle: str | Path) -> dict:
    """The bundle's manifest, after checking its format version, its fields and every file's sha256."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise TinyshipError(f"no bundle at {bundle}: pass the directory that `tinyship export` wrote")
    path = bundle / MANIFEST_NAME
    if not path.is_file():
        raise TinyshipError(f"{bundle} is not a tinyship bundle: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TinyshipError(f"{path} is damaged ({e}): re-export the bundle") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("format_version"), int):
        raise TinyshipError(f"{path} has no format_version: re-export the bundle")
    version = manifest["format_version"]
    if version > FORMAT_VERSION:
        raise TinyshipError(
            f"{bundle} is bundle format {version}, newer than this tinyship reads ({FORMAT_VERSION}): "
            "upgrade tinyship (pip install -U tinyship)"
        )
    for key, kind in REQUIRED.items():
        if not isinstance(manifest.get(key), kind):
            raise TinyshipError(f"{path} has no valid {key!r}: re-export the bundle")
    files = manifest["files"]
    for key in ("model", "tokenizer"):
        if manifest[key] not in files:
            raise TinyshipError(f"{path}: the {key} file {manifest[key]!r} has no checksum: re-export the bundle")
    for name, expected in files.items():
        if Path(name).name != name or name in ("", ".", ".."):
            raise TinyshipError(f"{path} names a file outside the bundle ({name!r}): re-export the bundle")
        file = bundle / name
        if not file.is_file():
            raise TinyshipError(f"{bundle} is incomplete: {name} is missing; re-export the bundle")
        if sha256_file(file) != expected:
            raise TinyshipError(f"{file} is damaged (its sha256 does not match the manifest): re-export the bundle")
    return manifest
