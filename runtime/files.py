"""File helpers shared by every stage: checksums, all-or-nothing directory writes, model directories."""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from tinyship.runtime.errors import TinyshipError

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def refuse_existing(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise TinyshipError(f"{out} already exists: pass --force to replace it, or choose another --out")


@contextmanager
def writing_directory(out: Path):
    """Yield an empty directory beside out to fill; on success it replaces out, on failure it is removed."""
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    for kind in ("tmp", "old"):  # this name's leftovers from writes that were killed (their process is gone)
        for stale in out.parent.glob(f"{glob.escape('.' + out.name)}.{kind}-*"):
            pid = stale.name.rpartition("-")[2]
            if pid == str(os.getpid()) or not _alive(pid):
                shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not out.exists():
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)  # put the previous version back
        raise
    shutil.rmtree(old)


def _alive(pid: str) -> bool:
    """Whether the process with this id (as a leftover's name ends) is running; a malformed id counts as gone."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_atomic(path: Path, write) -> None:
    """write(tmp) writes the file at a temporary path beside path, which then replaces path whole: a reader never
    sees half a file, and an interruption leaves the old one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def weights_bytes(model_dir: str | Path) -> int:
    """Size on disk of a save_pretrained directory's weights."""
    return sum(p.stat().st_size for p in Path(model_dir).glob("*.safetensors"))


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
