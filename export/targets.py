"""Edge targets: what a bundle needs to run beyond CPython on x86, added at export (`tinyship export --target`) or to
a bundle already made (`tinyship convert`). Each target (TARGETS) writes its files into the bundle being written and
returns what the manifest records of it under targets[name]. Needs onnxruntime, not torch."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tinyship.export.bundling import seal_bundle
from tinyship.runtime.bundle import MANIFEST_NAME, read_manifest
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import sha256_file, writing_directory
from tinyship.runtime.flags import comma_separated, flag
from tinyship.runtime.predictor import PAD_TOKENS

log = logging.getLogger(__name__)

TARGETS: dict[str, Callable[[Path, dict], dict]] = {}
ORT_MODEL, OPERATORS_CONFIG = "model.ort", "required_operators.config"
TARGETS_FLAG = flag("comma-separated edge targets to add to the bundle: mobile (model.ort, onnxruntime's own format, "
                    "and required_operators.config, the operators a reduced onnxruntime build needs); web (web/, the "
                    "folder transformers.js loads in a browser)", "--target", type=comma_separated(str),
                    metavar="TARGETS")
WEB = "web"
WEB_DTYPES = {  # the bundle's precision -> transformers.js's dtype and the file it loads for it
    "fp32": ("fp32", "model.onnx"), "int8": ("q8", "model_quantized.onnx"), "fp16": ("fp16", "model_fp16.onnx")}
WEB_TASKS = ("text-classification", "token-classification", "question-answering")  # transformers.js pipelines
DEVICE_SPECIFIC = ["NchwcTransformer"]  # x86 blocked layouts: an ORT-format model for every CPU leaves them out


def target(name: str):
    def add(fn):
        TARGETS[name] = fn
        return fn

    return add


def check_targets(names) -> tuple[str, ...]:
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        raise TinyshipError(f"unknown target {unknown[0]!r}: use one of {', '.join(TARGETS)}")
    return tuple(names)


def add_targets(bundle: Path, manifest: dict, names) -> dict:
    """Write each named target's files into bundle (a directory being written) and record them in manifest."""
    for name in check_targets(names):
        log.info(f"adding the {name} target")
        manifest.setdefault("targets", {})[name] = TARGETS[name](bundle, manifest)
    return manifest


@target("mobile")
def mobile(bundle: Path, manifest: dict) -> dict:
    """model.ort, the model in onnxruntime's own format (what onnxruntime-android, onnxruntime-objc and minimal
    builds load), its graph optimised once here with the bundle's session settings; and required_operators.config,
    the operators it uses, which a reduced-operator build of onnxruntime takes (build.py --include_ops_by_config)."""
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(bundle / ORT_MODEL)
    options.add_session_config_entry("session.save_model_format", "ORT")
    arm = manifest.get("quantization", {}).get("preset") == "arm64"
    options.add_session_config_entry("session.qdqisint8allowed", "1" if arm else "0")  # as onnxruntime's converter
    disabled = [*manifest.get("session", {}).get("disabled_optimizers", []), *DEVICE_SPECIFIC]
    try:
        ort.InferenceSession(str(bundle / manifest["model"]), options, providers=["CPUExecutionProvider"],
                             disabled_optimizers=disabled)
        logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs the temporary path
        create_config_from_models([bundle / ORT_MODEL], bundle / OPERATORS_CONFIG, False)
    except Exception as e:  # onnxruntime's errors are untyped
        raise TinyshipError(f"cannot convert {manifest['model']} to the ORT format: {e}") from None
    return {"model": ORT_MODEL, "operators_config": OPERATORS_CONFIG,
            "operators": operators(bundle / OPERATORS_CONFIG), "optimized_without": disabled}


@target("web")
def web(bundle: Path, manifest: dict) -> dict:
    """web/, the folder transformers.js loads with pipeline(task, folder) in a browser (onnxruntime-web, WASM):
    config.json with the labels, the precision to load (transformers.js_config.dtype) and the task, tokenizer.json,
    tokenizer_config.json and onnx/ with the model named as transformers.js names that precision."""
    if manifest["task"] not in WEB_TASKS:
        raise TinyshipError(f"transformers.js has no pipeline for {manifest['task']}: the web target takes "
                            f"{', '.join(WEB_TASKS)} bundles")
    dtype, model_name = WEB_DTYPES[manifest.get("precision", "fp32")]
    folder = bundle / WEB
    shutil.rmtree(folder, ignore_errors=True)  # a conversion's copy of an earlier one
    (folder / "onnx").mkdir(parents=True)
    shutil.copyfile(bundle / manifest["model"], folder / "onnx" / model_name)
    shutil.copyfile(bundle / manifest["tokenizer"], folder / "tokenizer.json")
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    config["transformers.js_config"] = {"dtype": dtype}
    config["tinyship"] = {"task": manifest["task"]}  # for the page: which pipeline to run (transformers.js skips it)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokenizer = json.loads((bundle / manifest["tokenizer"]).read_text(encoding="utf-8"))
    tokenizer_config = web_tokenizer_config(tokenizer, manifest)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n", encoding="utf-8")
    return {"folder": WEB, "dtype": dtype, "task": manifest["task"],
            "files": {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
                      if p.is_file()}}


def web_tokenizer_config(tokenizer: dict, manifest: dict) -> dict:
    """What transformers.js reads beside tokenizer.json: the special tokens its pipelines look for (question
    answering finds the context after sep_token), the length, and a class that returns token_type_ids when the
    model takes them (its base class does not: a text pair's second segment would read as the first)."""
    processor = tokenizer.get("post_processor") or {}
    if processor.get("type") == "TemplateProcessing":
        ends = [piece["SpecialToken"]["id"] for piece in processor["single"] if "SpecialToken" in piece]
        cls, sep = (ends[0], ends[-1]) if ends else (None, None)
    else:  # BertProcessing, RobertaProcessing: [token, id] pairs
        cls, sep = (processor.get(k, [None])[0] for k in ("cls", "sep"))
    added = [t["content"] for t in tokenizer.get("added_tokens", [])]
    pad = (tokenizer.get("padding") or {}).get("pad_token") or next((t for t in PAD_TOKENS if t in added), None)
    mask = next((t for t in ("[MASK]", "<mask>") if t in added), None)
    special = {"cls_token": cls, "sep_token": sep, "pad_token": pad, "unk_token": tokenizer["model"].get("unk_token"),
               "mask_token": mask}
    type_ids = "token_type_ids" in manifest.get("inputs", [])
    return {"tokenizer_class": "BertTokenizer" if type_ids else "PreTrainedTokenizer",
            "model_max_length": manifest["max_length"], **{k: v for k, v in special.items() if v}}


def operators(config_file: Path) -> dict[str, list[str]]:
    """The operators a required_operators.config lists, as {"domain;opset": [op, ...]}."""
    found = {}
    for line in config_file.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            domain, opset, ops = line.split(";")
            found[f"{domain};{opset}"] = sorted(ops.split(","))
    return found


@dataclass
class ConvertConfig:
    """Add edge targets to a bundle already made; the bundle is rewritten whole (its manifest lists the new files)."""

    bundle: str = field(default="", metadata=flag("a bundle directory (from `tinyship export`)", "bundle"))
    targets: tuple[str, ...] = field(default=(), metadata=TARGETS_FLAG)

    def __post_init__(self):
        self.targets = check_targets(self.targets)
        if not self.targets:
            raise TinyshipError(f"no target: give --target, one or more of {', '.join(TARGETS)}")


def convert(config: ConvertConfig) -> Path:
    """Rewrite config.bundle with the targets' files added; returns the bundle directory."""
    bundle = Path(config.bundle)
    manifest = read_manifest(bundle)
    with writing_directory(bundle) as tmp:
        for name in manifest["files"]:
            shutil.copyfile(bundle / name, tmp / name)
        for record in manifest.get("targets", {}).values():
            if "folder" in record:
                shutil.copytree(bundle / record["folder"], tmp / record["folder"])
        seal_bundle(tmp, add_targets(tmp, manifest, config.targets), bundle)
    log.info(f"{bundle}: added {', '.join(config.targets)} ({MANIFEST_NAME} lists the files)")
    return bundle
