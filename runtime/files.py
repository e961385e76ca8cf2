"""File helpers shared by every stage: checksums, all-or-nothing directory writes, model directories."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from tinyship.runtime.errors import TinyshipError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_sibling(out: Path) -> Path:
    """An empty directory beside out, to be filled and then moved into place."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def move_into_place(tmp: Path, out: Path) -> Path:
    """Rename a finished directory to out, replacing what was there: out exists whole or not at all."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)
    return out


def check_model_dir(path: str | Path) -> Path:
    """A save_pretrained directory with config, safetensors weights and a fast tokenizer, or a clear error."""
    path = Path(path)
    if not path.is_dir():
        raise TinyshipError(f"no model directory at {path}: pass a Hugging Face save_pretrained directory")
    if not (path / "config.json").is_file():
        raise TinyshipError(f"{path} has no config.json: pass a Hugging Face save_pretrained directory")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        pickled = any(path.glob("*.bin"))
        hint = " (its .bin weights are pickles, which tinyship never loads: re-save with safe_serialization=True)"
        raise TinyshipError(f"{path} has no model.safetensors{hint if pickled else ''}")
    if not (path / "tokenizer.json").is_file():
        raise TinyshipError(f"{path} has no tokenizer.json: save the model's fast tokenizer beside it")
    return path
