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
    (bundle_copy / MANIFEST_NAME).write_text(
        json.dumps({**manifest, "session": {"disabled_optimizers": ["SkipLayerNormFusion"]}}))
    assert load(bundle_copy).logits(["a fine film"]) == pytest.approx(before, abs=1e-5)
    assert seen[-1] == ["SkipLayerNormFusion"]
    (bundle_copy / MANIFEST_NAME).write_text(json.dumps({**manifest, "session": {"disabled_optimizers": "all"}}))
    with pytest.raises(TinyshipError, match='session.disabled_optimizers is "all", not of type array'):
        load(bundle_copy)


def write_manifest(bundle, **changes):
    path = bundle / MANIFEST_NAME
    manifest = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps({k: v for k, v in manifest.items() if v is not None}))


@pytest.mark.parametrize(
    "batch_invariant, variant, expected",
    [
        (False, "fp32", False),  # the manifest says so
        (True, "int8-dynamic", True),
        (None, "int8-dynamic", False),  # a bundle from before batch_invariant: its variant tells
        (None, "int8-dynamic-fused", False),
        (None, "int8-static-minmax", True),
        (None, "fp32", True),
    ],
)
def test_batch_invariance_reaches_the_predictor(bundle_copy, batch_invariant, variant, expected):
    """A batch-invariant model runs the three inputs together; any other runs each alone."""
    write_manifest(bundle_copy, batch_invariant=batch_invariant, variant=variant)
    classify = load(bundle_copy)
    runs, real = [], classify.session

    class Recording:
        def run(self, names, feed):
            runs.append(len(feed["input_ids"]))
            return real.run(names, feed)

        def __getattr__(self, name):
            return getattr(real, name)

    classify.session = Recording()
    classify.logits(["a gem", "a dull mess", "fine"])
    assert classify.batch_invariant is expected and runs == ([3] if expected else [1, 1, 1])


def test_model_with_wider_positions_takes_the_longer_max_length(bundle_copy):
    """max_length up to the model's position limit (128 here) loads; the tokenizer then cuts at that length."""
    write_manifest(bundle_copy, max_length=128)
    classify = load(bundle_copy)
    assert classify.max_length == 128
    assert classify("word " * 300)["truncated"] is True


def test_pair_model_stride_shares_the_room(bundle_copy):
    """Two long texts share max_length less 3 special tokens; tokenizers panics unless the stride fits either half."""
    write_manifest(bundle_copy, pairs=True, truncation={"strategy": "longest_first", "stride": 30})
    with pytest.raises(TinyshipError, match="truncation.stride is 30; it must be below the 30 .*shared by two texts"):
        load(bundle_copy)
    write_manifest(bundle_copy, truncation={"strategy": "longest_first", "stride": 29})
    long = "word " * 100
    assert load(bundle_copy).logits([(long, long)]).shape == (1, 2)
