"""Reading and verifying a bundle: model.onnx, tokenizer.json, config.json and the tinyship.json manifest.

The manifest is checked against manifest.schema.json (shipped in this package), then against what the schema cannot
say: files inside the bundle with their sha256, max_length within the model's positions, and, once the model and
tokenizer are loaded (check_fit), labels one per output column and a truncation stride the tokenizer can honour.
"""

from __future__ import annotations

import json
from importlib.resources import files as package_files
from pathlib import Path

from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import sha256_file
from tinyship.runtime.schema import validate

FORMAT_VERSION = 1
MANIFEST_NAME = "tinyship.json"
SCHEMA = json.loads(package_files("tinyship.runtime").joinpath("manifest.schema.json").read_text(encoding="utf-8"))
POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "mpnet": 2}  # positions start after the pad id
FIX = "re-export the bundle"
MODEL_FORMATS = {"onnx": None, "ort": "mobile"}  # the model file to run: the bundle's own, or a target's


def read_manifest(bundle: str | Path) -> dict:
    """The bundle's manifest, after checking its format version, its fields, its files and their sha256."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise TinyshipError(f"no bundle at {bundle}: pass the directory that `tinyship export` wrote")
    path = bundle / MANIFEST_NAME
    if not path.is_file():
        raise TinyshipError(f"{bundle} is not a tinyship bundle: it has no {MANIFEST_NAME}")
    manifest = _read_json(path)
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if type(version) is int and version > FORMAT_VERSION:
        raise TinyshipError(f"{path}: format_version is {version}, newer than this tinyship reads ({FORMAT_VERSION}): "
                            "upgrade tinyship (pip install -U tinyship)")
    validate(manifest, SCHEMA, str(path), FIX)
    for key in ("model", "tokenizer"):
        if manifest[key] not in manifest["files"]:
            raise TinyshipError(f"{path}: the {key} file {manifest[key]!r} is not listed in files: {FIX}")
    for name, expected in manifest["files"].items():
        _check_file(bundle, name, expected)
    limit = _position_limit(bundle, manifest)
    if limit is not None and manifest["max_length"] > limit:
        raise TinyshipError(f"{path}: max_length is {manifest['max_length']}, beyond the {limit} positions the "
                            f"model's config.json gives it: {FIX}")
    return manifest


def check_fit(predictor, manifest: dict, where: str | Path) -> None:
    """Refuse a manifest that does not fit the loaded model and tokenizer: labels that do not name the output
    columns, or a truncation the tokenizer cannot apply."""
    from tinyship.runtime.tasks import bundle_task  # here: reading a manifest needs no predictor, nor onnxruntime

    _check_labels(manifest["labels"], bundle_task(manifest["task"]), predictor.session.get_outputs()[0].shape, where)
    _check_truncation(predictor, where)


def _check_labels(labels: list[str], task, shape: list, where: str | Path) -> None:
    """One label per output column (when the model fixes the width); none for a task without classes."""
    width = shape[-1] if shape and isinstance(shape[-1], int) else None
    if not task.labelled:
        if labels:
            raise TinyshipError(f"{where}: labels must be empty for {task.name} (it has {len(labels)}): {FIX}")
    elif not labels or width not in (None, len(labels)):
        raise TinyshipError(f"{where}: labels lists {len(labels)} names but the model outputs "
                            f"{width or 'some'} columns (one per label): {FIX}")


def _check_truncation(predictor, where: str | Path) -> None:
    """tokenizers panics when the stride is not below the text tokens a window holds, fails on only_second without a
    pair, and silently stops truncating when max_length leaves no room beside the special tokens."""
    strategy, stride = predictor.truncation["strategy"], predictor.truncation["stride"]
    if strategy == "only_second" and predictor.pairs is not True:
        raise TinyshipError(f"{where}: truncation.strategy only_second cuts the second text of a pair, but this "
                            f"bundle does not say pairs: true: {FIX}")
    pairs = predictor.pairs is not False
    special = predictor.tokenizer.num_special_tokens_to_add(pairs)
    room = predictor.max_length - special
    if room < 1:
        raise TinyshipError(f"{where}: max_length {predictor.max_length} leaves no room for text beside the "
                            f"tokenizer's {special} special tokens: {FIX}")
    shared = pairs and strategy == "longest_first"
    if shared:
        room //= 2  # two long texts share the room
    if stride >= room:
        raise TinyshipError(f"{where}: truncation.stride is {stride}; it must be below the {room} text tokens a window "
                            f"holds (max_length {predictor.max_length} less {special} special tokens"
                            f"{', shared by two texts' if shared else ''}): {FIX}")


def _position_limit(bundle: Path, manifest: dict) -> int | None:
    """The longest input the model's position embeddings cover, from the bundle's config.json (None: not known)."""
    if "config.json" not in manifest["files"]:
        return None  # bundles may predate config.json; the model itself then says so at run time
    config = _read_json(bundle / "config.json")
    positions = config.get("max_position_embeddings") if isinstance(config, dict) else None
    if type(positions) is not int:
        return None
    return positions - POSITION_OFFSET.get(config.get("model_type"), 0)


def _check_file(bundle: Path, name: str, expected: str) -> None:
    """A listed file must be a plain file of the bundle itself (no folder, no link) with the listed sha256."""
    if name in ("", ".", "..") or Path(name).name != name or "\0" in name:
        raise TinyshipError(f"{bundle / MANIFEST_NAME} names a file outside the bundle ({name!r}): {FIX}")
    file = bundle / name
    try:
        if file.is_symlink():
            raise TinyshipError(f"{file} is a link (to {file.readlink()}); a bundle holds its own files: {FIX}")
        if not file.is_file():
            raise TinyshipError(f"{bundle} is incomplete: {name} is missing; {FIX}")
        actual = sha256_file(file)
    except OSError as e:
        raise TinyshipError(f"cannot read {file} ({e.strerror}): {FIX}") from None
    if actual != expected:
        raise TinyshipError(f"{file} is damaged (its sha256 does not match the manifest's files[{name!r}]): {FIX}")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise TinyshipError(f"{path} is damaged ({e}): {FIX}") from None
    except OSError as e:
        raise TinyshipError(f"cannot read {path} ({e.strerror}): {FIX}") from None


def batch_invariant(manifest: dict) -> bool:
    """Whether the bundle's model gives an input the same outputs in any batch (else it is served one per run).
    Bundles older than the field say it by their variant: dynamic INT8 scales activations over the padded batch,
    and fp16's rounding moves with padding."""
    variant = manifest.get("variant", "")
    return manifest.get("batch_invariant", not (variant.startswith("int8-dynamic") or variant == "fp16"))


def model_file(manifest: dict, model_format: str, bundle) -> str:
    """The name of the bundle's model file in model_format."""
    if model_format not in MODEL_FORMATS:
        raise TinyshipError(f"model_format {model_format!r}: use one of {', '.join(MODEL_FORMATS)}")
    target = MODEL_FORMATS[model_format]
    if target is None:
        return manifest["model"]
    record = manifest.get("targets", {}).get(target)
    if not isinstance(record, dict) or record.get("model") not in manifest["files"]:
        raise TinyshipError(f"{bundle} has no {model_format} model: add it with `tinyship convert {bundle} --target "
                            f"{target}`")
    return record["model"]


def model_files(manifest: dict) -> set[str]:
    """Every model file of the bundle: its own and its targets'."""
    return {manifest["model"], *(t["model"] for t in manifest.get("targets", {}).values() if "model" in t)}
