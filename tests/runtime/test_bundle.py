import json
import shutil

import pytest

from tinyship.runtime import FORMAT_VERSION, load
from tinyship.runtime.bundle import MANIFEST_NAME, read_manifest
from tinyship.runtime.errors import TinyshipError


@pytest.fixture
def bundle_copy(fp32_bundle, tmp_path):
    return shutil.copytree(fp32_bundle, tmp_path / "bundle")


def test_manifest_records_task_labels_and_checksums(fp32_bundle):
    manifest = read_manifest(fp32_bundle)
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["task"] == "text-classification" and manifest["labels"] == ["negative", "positive"]
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "config.json"}
    assert manifest["precision"] == "fp32" and manifest["quantization"]["mode"] == "none"
    assert manifest["metrics"]["metric"] == "accuracy" and 0 <= manifest["metrics"]["validation"] <= 1


def test_damaged_model_is_refused(bundle_copy):
    with open(bundle_copy / "model.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(TinyshipError, match="model.onnx is damaged"):
        load(bundle_copy)


def test_missing_file_and_missing_manifest_are_refused(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(TinyshipError, match="tokenizer.json is missing"):
        load(bundle_copy)
    (bundle_copy / MANIFEST_NAME).unlink()
    with pytest.raises(TinyshipError, match="not a tinyship bundle"):
        load(bundle_copy)
    with pytest.raises(TinyshipError, match="no bundle at"):
        load(bundle_copy / "nowhere")


def test_newer_format_is_refused(bundle_copy):
    path = bundle_copy / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(TinyshipError, match="newer than this tinyship reads.*upgrade"):
        load(bundle_copy)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: [1, 2], "no format_version"),
        (lambda m: {k: v for k, v in m.items() if k != "files"}, "no valid 'files'"),
        (lambda m: {**m, "files": {}}, "the model file 'model.onnx' has no checksum"),
        (lambda m: {k: v for k, v in m.items() if k != "labels"}, "no valid 'labels'"),
        (lambda m: {**m, "files": {**m["files"], "../model.onnx": "0"}}, "outside the bundle"),
    ],
)
def test_manifest_that_skips_or_escapes_checks_is_refused(bundle_copy, edit, message):
    path = bundle_copy / MANIFEST_NAME
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))
    with pytest.raises(TinyshipError, match=message):
        load(bundle_copy)


def test_the_manifest_session_settings_reach_onnxruntime(bundle_copy, monkeypatch):
    from tinyship.runtime import predictor

    manifest = json.loads((bundle_copy / MANIFEST_NAME).read_text())
    seen = []
    real = predictor.ort.InferenceSession

    def recording(*args, disabled_optimizers=None, **kwargs):
        seen.append(disabled_optimizers)
        return real(*args, disabled_optimizers=disabled_optimizers, **kwargs)

    monkeypatch.setattr(predictor.ort, "InferenceSession", recording)
    before = load(bundle_copy).logits(["a fine film"])
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps({**manifest, "session": {"disabled_optimizers": ["SkipLayerNormFusion"]}}))
    assert load(bundle_copy).logits(["a fine film"]) == pytest.approx(before, abs=1e-5)
    assert seen[-1] == ["SkipLayerNormFusion"]
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps({**manifest, "session": {"disabled_optimizers": "all"}}))
    with pytest.raises(TinyshipError, match="session.disabled_optimizers must be a list of names"):
        load(bundle_copy)
