"""Reading and verifying a bundle: model.onnx, tokenizer.json and the tinyship.json manifest."""

from __future__ import annotations

import json
from pathlib import Path

from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import sha256_file

FORMAT_VERSION = 1
MANIFEST_NAME = "tinyship.json"


def read_manifest(bundle: str | Path, verify: bool = True) -> dict:
    """The bundle's manifest, after checking its format version and (with verify) every file's sha256."""
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
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise TinyshipError(f"{path} has no format_version: re-export the bundle")
    if version > FORMAT_VERSION:
        raise TinyshipError(
            f"{bundle} is bundle format {version}, newer than this tinyship reads ({FORMAT_VERSION}): "
            "upgrade tinyship (pip install -U tinyship)"
        )
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file = bundle / name
            if not file.is_file():
                raise TinyshipError(f"{bundle} is incomplete: {name} is missing; re-export the bundle")
            if sha256_file(file) != expected:
                raise TinyshipError(f"{file} is damaged (its sha256 does not match the manifest): re-export the bundle")
    return manifest
