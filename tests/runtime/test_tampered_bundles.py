"""Tampered bundles: load() refuses each with a TinyshipError that names what is wrong, and prints nothing.
The runtime's own schema checker agrees with jsonschema on every manifest here and on a real exported one."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator, validators

from tinyship.runtime import load
from tinyship.runtime.bundle import FORMAT_VERSION, MANIFEST_NAME, SCHEMA
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.schema import ANNOTATIONS, KEYWORDS, first_error

# JSON Schema counts 64.0 as an integer; the runtime does not (json gives a float, which tokenizers refuses)
STRICT = validators.extend(Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
    "integer", lambda checker, value: type(value) is int))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fields(**changes):
    """Set (or, with None, remove) manifest fields."""
    def tamper(bundle, manifest):
        return {k: v for k, v in {**manifest, **changes}.items() if v is not None}
    return tamper


def truncation(**changes):
    return lambda bundle, manifest: {**manifest, "truncation": {**manifest["truncation"], **changes}}


def session(**changes):
    return lambda bundle, manifest: {**manifest, "session": {**manifest["session"], **changes}}


def config(**changes):
    """Edit config.json and list its new checksum, so that only the edit is under test."""
    def tamper(bundle, manifest):
        path = bundle / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
        return {**manifest, "files": {**manifest["files"], "config.json": sha256(path)}}
    return tamper


def missing(name):
    def tamper(bundle, manifest):
        (bundle / name).unlink()
        return manifest
    return tamper


def damaged(name):
    def tamper(bundle, manifest):
        with open(bundle / name, "r+b") as f:
            f.seek(10)
            f.write(b"XYZ")
        return manifest
    return tamper


def link_to_passwd(bundle, manifest):
    (bundle / "passwd").symlink_to("/etc/passwd")
    return {**manifest, "files": {**manifest["files"], "passwd": sha256(Path("/etc/passwd"))}}


def tokenizer_linked_outside(bundle, manifest):
    """tokenizer.json moved out of the bundle and linked back: its checksum still matches."""
    outside = bundle.parent / "tokenizer.json"
    shutil.move(bundle / "tokenizer.json", outside)
    (bundle / "tokenizer.json").symlink_to(outside)
    return manifest


def model_outside(bundle, manifest):
    """The model named by a path that leaves the bundle, to a copy with the listed checksum."""
    shutil.copy(bundle / "model.onnx", bundle.parent / "model.onnx")
    return {**manifest, "model": "../model.onnx",
            "files": {**manifest["files"], "../model.onnx": manifest["files"]["model.onnx"]}}


CASES = [  # (tamper(bundle, manifest) -> the manifest to write, what the error must say)
    pytest.param(fields(task=None), "task is missing", id="task-missing"),
    pytest.param(fields(task="summarization"), 'task is "summarization", not one of text-classification',
                 id="task-unknown"),
    pytest.param(fields(task="text-regression"), "labels must be empty for regression",
                 id="task-of-another-model"),
    pytest.param(fields(labels="negative,positive"), 'labels is "negative,positive", not of type array',
                 id="labels-string"),
    pytest.param(fields(labels=[0, 1]), r"labels\[0\] is 0, not of type string", id="labels-numbers"),
    pytest.param(fields(labels=[]), "labels lists 0 names but the model outputs 2 columns", id="labels-empty"),
    pytest.param(fields(labels=["negative"]), "labels lists 1 names but the model outputs 2 columns",
                 id="labels-short"),
    pytest.param(fields(labels=["a", "b", "c"]), "labels lists 3 names but the model outputs 2", id="labels-long"),
    pytest.param(fields(labels=["negative", "negative"]), r'labels\[1\] repeats labels\[0\] \("negative"\)',
                 id="labels-duplicate"),
    pytest.param(fields(labels=["negative", ""]), r'labels\[1\] is "", shorter than its minLength 1',
                 id="labels-blank"),
    pytest.param(fields(task="question-answering"), "labels must be empty for question-answering", id="qa-labels"),
    pytest.param(fields(max_length="64"), 'max_length is "64", not of type integer', id="max-length-string"),
    pytest.param(fields(max_length=64.5), "max_length is 64.5, not of type integer", id="max-length-float"),
    pytest.param(fields(max_length=64.0), "max_length is 64.0, not of type integer", id="max-length-float-whole"),
    pytest.param(fields(max_length=True), "max_length is true, not of type integer", id="max-length-bool"),
    pytest.param(fields(max_length=-1), "max_length is -1, below its minimum 1", id="max-length-negative"),
    pytest.param(fields(max_length=0), "max_length is 0, below its minimum 1", id="max-length-zero"),
    pytest.param(fields(max_length=100000), "max_length is 100000, above its maximum", id="max-length-huge"),
    pytest.param(fields(max_length=129), "max_length is 129, beyond the 128 positions", id="max-length-over-positions"),
    pytest.param(fields(max_length=2), "max_length 2 leaves no room for text beside the tokenizer's 2 special tokens",
                 id="max-length-no-room"),
    pytest.param(config(max_position_embeddings=32), "max_length is 64, beyond the 32 positions",
                 id="config-positions"),
    pytest.param(config(model_type="roberta", max_position_embeddings=65), "max_length is 64, beyond the 63 positions",
                 id="config-roberta-offset"),
    pytest.param(fields(format_version="1"), 'format_version is "1", not of type integer', id="format-string"),
    pytest.param(fields(format_version=True), "format_version is true, not of type integer", id="format-true"),
    pytest.param(fields(format_version=-5), "format_version is -5, below its minimum 1", id="format-negative"),
    pytest.param(fields(format_version=0), "format_version is 0, below its minimum 1", id="format-zero"),
    pytest.param(fields(format_version=999), "format_version is 999, newer than this tinyship reads.*upgrade",
                 id="format-future"),
    pytest.param(fields(format_version=None), "format_version is missing", id="format-missing"),
    pytest.param(truncation(strategy="do_not_truncate"), 'truncation.strategy is "do_not_truncate", not one of',
                 id="truncation-strategy-unknown"),
    pytest.param(truncation(overlap=8), "truncation.overlap is not a field of truncation",
                 id="truncation-unknown-key"),  # tokenizers would print "Ignored unknown kwarg option" on stdout
    pytest.param(truncation(direction="left"), "truncation.direction is not a field of truncation",
                 id="truncation-key-not-in-format"),
    pytest.param(truncation(stride=-1), "truncation.stride is -1, below its minimum 0", id="stride-negative"),
    pytest.param(truncation(stride=62), "truncation.stride is 62; it must be below the 62 text tokens",
                 id="stride-no-room"),
    pytest.param(truncation(strategy="only_second"), "only_second cuts the second text of a pair",
                 id="truncation-only-second-single-texts"),
    pytest.param(fields(truncation="longest_first"), 'truncation is "longest_first", not of type object',
                 id="truncation-string"),
    pytest.param(session(disabled_optimizers="all"), 'session.disabled_optimizers is "all", not of type array',
                 id="session-optimizers-string"),
    pytest.param(session(threads=4), "session.threads is not a field of session", id="session-extra-key"),
    pytest.param(fields(pairs="yes"), 'pairs is "yes", not of type boolean', id="pairs-string"),
    pytest.param(fields(multi_label=1), "multi_label is 1, not of type boolean", id="multi-label-number"),
    pytest.param(fields(batch_invariant="no"), 'batch_invariant is "no", not of type boolean',
                 id="batch-invariant-string"),
    pytest.param(fields(precision="int4"), 'precision is "int4", not one of fp32, int8, fp16', id="precision-unknown"),
    pytest.param(fields(files=["model.onnx"]), r'files is \["model.onnx"\], not of type object', id="files-list"),
    pytest.param(fields(files=None), "files is missing", id="files-missing"),
    pytest.param(lambda b, m: {**m, "files": {**m["files"], "model.onnx": "0"}},
                 r"""files\['model.onnx'\] is "0", which does not match""", id="files-checksum-not-hex"),
    pytest.param(fields(model="other.onnx"), "model file 'other.onnx' is not listed in files", id="model-not-listed"),
    pytest.param(fields(model=7), "model is 7, not of type string", id="model-number"),
    pytest.param(missing("tokenizer.json"), "tokenizer.json is missing", id="file-missing"),
    pytest.param(damaged("model.onnx"), r"model.onnx is damaged \(its sha256 does not match", id="model-damaged"),
    pytest.param(damaged("config.json"), r"config.json is damaged \(its sha256 does not match", id="config-damaged"),
    pytest.param(link_to_passwd, "passwd is a link", id="link-to-etc-passwd"),
    pytest.param(tokenizer_linked_outside, "tokenizer.json is a link", id="tokenizer-linked-outside"),
    pytest.param(model_outside, r"names a file outside the bundle \('../model.onnx'\)", id="path-leaves-bundle"),
    pytest.param(lambda b, m: [1, 2], r"the manifest is \[1, 2\], not of type object", id="manifest-list"),
    pytest.param(lambda b, m: None, "the manifest is null, not of type object", id="manifest-null"),
]
FIXES = ("re-export the bundle", "upgrade tinyship", "this tinyship serves")
RAW_CASES = [  # manifests that are not JSON text at all
    pytest.param(lambda b, m: b'{"format_version": 1, "task": ', "tinyship.json is damaged", id="manifest-not-json"),
    pytest.param(lambda b, m: json.dumps(m).encode("utf-16"), "tinyship.json is damaged", id="manifest-not-utf8"),
]


@pytest.fixture
def tamper_bundle(fp32_bundle, tmp_path):
    """Apply a tamper to a fresh copy of the tiny bundle; returns the copy and the manifest it now has."""
    def apply(tamper):
        bundle = shutil.copytree(fp32_bundle, tmp_path / "bundle")
        path = bundle / MANIFEST_NAME
        manifest = tamper(bundle, json.loads(path.read_text()))
        path.write_bytes(manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode())
        return bundle, manifest
    return apply


@pytest.mark.parametrize("tamper, message", CASES + RAW_CASES)
def test_tampered_bundle_is_refused_by_name(tamper_bundle, capfd, tamper, message):
    bundle, _ = tamper_bundle(tamper)
    capfd.readouterr()
    with pytest.raises(TinyshipError, match=message) as refused:
        load(bundle)
    assert any(fix in str(refused.value) for fix in FIXES)
    assert capfd.readouterr().out == ""


@pytest.mark.parametrize("tamper, message", CASES)
def test_runtime_checker_agrees_with_jsonschema(tamper_bundle, tamper, message):
    _, manifest = tamper_bundle(tamper)
    assert (first_error(manifest, SCHEMA) is None) == STRICT(SCHEMA).is_valid(manifest)


def test_exported_manifest_is_valid_for_both(fp32_bundle):
    manifest = json.loads((fp32_bundle / MANIFEST_NAME).read_text())
    assert first_error(manifest, SCHEMA) is None
    assert Draft202012Validator(SCHEMA).is_valid(manifest) and STRICT(SCHEMA).is_valid(manifest)


def test_schema_is_draft_2020_12_and_uses_only_what_the_runtime_reads():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == f"urn:tinyship:bundle-manifest:{FORMAT_VERSION}"

    def keywords(schema):
        yield from schema
        for rule in [*schema.get("properties", {}).values(), schema.get("items"), schema.get("additionalProperties")]:
            if isinstance(rule, dict):
                yield from keywords(rule)

    assert set(keywords(SCHEMA)) <= KEYWORDS | ANNOTATIONS


def test_schema_describes_every_field_export_writes(fp32_bundle):
    manifest = json.loads((fp32_bundle / MANIFEST_NAME).read_text())
    assert set(manifest) <= set(SCHEMA["properties"])
    assert all("description" in rule for rule in SCHEMA["properties"].values())
