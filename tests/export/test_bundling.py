"""write_bundle: the manifest is checked against the runtime's schema before the bundle is renamed into place."""

import pytest

from tinyship.export.bundling import write_bundle
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.errors import TinyshipError

FIELDS = {"task": "text-classification", "labels": ["negative", "positive"], "max_length": 64, "variant": "fp32"}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "candidate.onnx"
    path.write_bytes(b"not read by write_bundle or read_manifest")
    return path


def test_written_manifest_reads_back(tiny_model_dir, model_file, tmp_path):
    out = write_bundle(tmp_path / "bundle", model_file, tiny_model_dir, FIELDS)
    manifest = read_manifest(out)
    assert {k: manifest[k] for k in FIELDS} == FIELDS and manifest["format_version"] == 1
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "config.json"}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"labels": ["positive", "positive"]}, r"labels\[1\] repeats labels\[0\]"),
        ({"max_length": 0}, "max_length is 0, below its minimum 1"),
        ({"truncation": {"strategy": "longest_first", "stride": 0, "direction": "left"}},
         "truncation.direction is not a field"),
        ({"task": None}, "task is missing"),
    ],
)
def test_invalid_manifest_is_not_written(tiny_model_dir, model_file, tmp_path, change, message):
    fields = {k: v for k, v in {**FIELDS, **change}.items() if v is not None}
    with pytest.raises(TinyshipError, match=f"{message}.*: nothing was written"):
        write_bundle(tmp_path / "bundle", model_file, tiny_model_dir, fields)
    assert [p.name for p in tmp_path.iterdir()] == ["candidate.onnx"]  # no bundle, no temporary directory left
