"""An input's answer must not depend on what shares its batch (through the server, other clients' traffic).

Every variant the gate can ship is built from one tiny model and served through the runtime with the setting export
records for it: batched where its outputs are batch-invariant, one input per run where they are not (dynamic INT8,
whose activation scales span the whole padded batch)."""

import numpy as np
import pytest

from tinyship.compress.tasks import TASKS
from tinyship.export import ExportConfig, export
from tinyship.export.quantization import VARIANTS, batch_invariant_of
from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.predictor import TextClassifier

LABELS = ["negative", "positive"]  # the tiny model's (tests/conftest.py)
SHIPPABLE = ["fp32", *VARIANTS]
SHORT = ["a gripping, funny and moving film", "dull", "not bad at all", "an absolute triumph of style over substance"]
LONG = " ".join(["the plot wanders, the acting is wooden, and the two hours feel like four"] * 10)  # cut to 64 tokens


@pytest.fixture(scope="module")
def built(tiny_model_factory, small_data, tmp_path_factory):
    """Every variant of one tiny model (weights large enough that dynamic INT8's batch scales move its logits)."""
    work = tmp_path_factory.mktemp("invariance")
    model = tiny_model_factory(work / "model", initializer_range=0.5)
    bundle = export(ExportConfig(model=str(model), output=str(work / "bundle"), data=small_data, fp16=True,
                                 candidates_dir=str(work / "candidates")))
    return bundle, work / "candidates", read_manifest(bundle)


def served(built, name: str, batch_invariant: bool | None = None) -> TextClassifier:
    """The candidate as the runtime serves it: with the batch_invariant setting its export recorded, unless given."""
    bundle, candidates, manifest = built
    if not (candidates / name / "model.onnx").is_file():
        pytest.skip(f"{name} does not build with these tools: {manifest['metrics']['candidates'][name]['error']}")
    if batch_invariant is None:
        batch_invariant = manifest["metrics"]["candidates"][name]["batch_invariant"]
    return TextClassifier(candidates / name / "model.onnx", bundle / "tokenizer.json", LABELS, max_length=64,
                          batch_invariant=batch_invariant)


@pytest.mark.parametrize("name", SHIPPABLE)
def test_an_input_gets_the_same_logits_alone_and_beside_a_long_text(built, name):
    classify = served(built, name)
    alone = np.stack([classify.logits(text)[0] for text in SHORT])
    mixed = classify.logits([SHORT[0], LONG, *SHORT[1:]])
    np.testing.assert_allclose(np.delete(mixed, 1, axis=0), alone, atol=1e-4)


def test_export_records_the_setting_for_every_candidate_and_the_winner(built):
    bundle, _, manifest = built
    measured = manifest["metrics"]["candidates"]
    assert set(measured) == set(SHIPPABLE)
    for name, m in measured.items():
        assert "error" in m or m["batch_invariant"] == batch_invariant_of(name)
    assert {n for n in SHIPPABLE if not batch_invariant_of(n)} == {"int8-dynamic", "int8-dynamic-fused", "fp16"}
    assert manifest["batch_invariant"] == batch_invariant_of(manifest["variant"])
    assert load(bundle).batch_invariant == manifest["batch_invariant"]


@pytest.mark.parametrize("name", ["int8-dynamic", "int8-dynamic-fused"])
def test_dynamic_int8_one_input_per_run_is_identical_in_any_batch(built, name):
    one_per_run = served(built, name, batch_invariant=False)
    alone = np.stack([one_per_run.logits(text)[0] for text in SHORT])
    for batch in ([*SHORT, LONG], [LONG, SHORT[2], SHORT[0], SHORT[3], SHORT[1]], SHORT * 9):
        logits = one_per_run.logits(batch)
        np.testing.assert_array_equal(np.stack([logits[batch.index(text)] for text in SHORT]), alone)
    batched = served(built, name, batch_invariant=True)  # what the setting prevents: the long text moves the others
    mixed = batched.logits([*SHORT, LONG])[: len(SHORT)]
    assert np.abs(mixed - alone).max() > 1e-2


def test_the_gate_scores_dynamic_int8_as_the_runtime_serves_it(built, small_data):
    _, _, manifest = built
    examples = TASKS["classification"].load(small_data, "validation", LABELS)
    for name in ("int8-dynamic", "int8-dynamic-fused", "int8-static-minmax"):
        predicted = [LABELS.index(r["label"]) for r in served(built, name)(examples.texts)]
        accuracy = float(np.mean(np.array(predicted) == np.array(examples.labels)))
        assert manifest["metrics"]["candidates"][name]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
