"""The latency-budget search's candidates: cuts, pruning, precisions, and the order they are trained in."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import pytest

from tinyship.compress import DistillConfig, FinetuneConfig, Phase
from tinyship.export import CompressConfig, ExportConfig, compress, load_recipe
from tinyship.export.budget import (
    PRUNE_FRACTIONS,
    BudgetConfig,
    Trial,
    candidates,
    cut,
    fastest,
    more_pruned,
    pruned,
    remeasured,
    training_order,
)
from tinyship.export.cli import _configure_compress, compress_config_from_args
from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.profile import Shape

MINILM = Shape(384, 32, 30522, (12, 11, 10, 9, 8, 7), (1536, 1500, 1400, 1300, 1200, 1100))


def toy_latency(shape: Shape, precision: str) -> float:
    """1 ms per million encoder weights plus 0.1 ms per layer in INT8; fp32 three times slower."""
    ms = shape.encoder_weights / 1e6 + 0.1 * shape.layers
    return ms if precision == "int8" else 3 * ms


def test_a_cut_keeps_layers_uniformly_as_the_student_is_cut():
    three = cut(MINILM, 3)
    assert three.heads == (11, 9, 7) and three.ffn == (1500, 1300, 1100)  # layers 2, 4, 6
    assert cut(MINILM, 6) == MINILM


def test_pruning_removes_the_fraction_of_each_layers_heads_and_neurons():
    half = pruned(MINILM, 0.5)
    assert half.heads == (6, 6, 5, 4, 4, 4) and half.ffn == (768, 750, 700, 650, 600, 550)
    assert pruned(Shape(384, 32, 100, (1,), (10,)), 0.75).heads == (1,)  # a layer keeps a head


def test_every_cut_fraction_and_precision_is_a_candidate_with_its_prediction():
    found = candidates({"teacher": MINILM}, toy_latency)
    assert len(found) == 6 * len(PRUNE_FRACTIONS) * 2
    for c in found:
        assert c.predicted_ms == toy_latency(c.shape, c.precision) and c.shape.layers == c.layers
    assert fastest(found).name == "l1-p75-int8"


def test_training_order_takes_the_least_pruning_per_depth_that_fits_largest_first():
    found = candidates({"teacher": MINILM}, toy_latency)
    budget = 4.0
    order = training_order(found, budget)
    assert all(c.predicted_ms <= budget for c in order)
    assert len({c.layers for c in order}) == len(order)  # one per depth
    weights = [c.shape.encoder_weights for c in order]
    assert weights == sorted(weights, reverse=True)
    for c in order:  # no less pruned version of that depth fits
        assert not any(o.layers == c.layers and o.prune_flops < c.prune_flops and o.predicted_ms <= budget
                       for o in found)
    assert training_order(found, 0.01) == []


def test_a_depth_measured_over_its_budget_is_tried_next_pruned_further():
    found = candidates({"teacher": MINILM}, toy_latency)
    by_name = {c.name: c for c in found}
    assert more_pruned(found, by_name["l2-p25-int8"]) == by_name["l2-p50-int8"]
    assert more_pruned(found, by_name["l2-p50-fp32"]) == by_name["l2-p75-fp32"]
    assert more_pruned(found, by_name["l2-p75-int8"]) is None


def test_trials_measured_here_are_timed_again_together_before_the_winner_is_chosen(fp32_bundle):
    found = candidates({"teacher": MINILM}, toy_latency)
    slow = Trial(found[0], str(fp32_bundle), 0.8, None, 1, "fp32", 1.0, measured_ms=999.0, meets=False)
    fast = replace(slow, measured_ms=0.001, meets=True)
    again = remeasured([slow, fast], BudgetConfig(latency_ms=500, tokens=16))
    first, second = (t.measured_ms for t in again)
    assert 0 < first < 500 and 0 < second < 500  # the same file, timed again: within, both
    assert all(t.meets for t in again) and [t.metric for t in again] == [0.8, 0.8]


def device_profile(path, ms_per_layer: float = 1.0) -> str:
    """A profile of a made-up device where a layer costs ms_per_layer in INT8 (three times that in fp32), pruned or
    not, plus 0.1 ms."""
    import onnxruntime as ort

    from tinyship.runtime.profile import COST_TERMS, PROFILE_FORMAT

    def model(per_layer):
        return {"coefficients": {**dict.fromkeys(COST_TERMS, 0.0), "fixed": 0.1, "layers": per_layer}}

    path.write_text(json.dumps({"format": PROFILE_FORMAT, "onnxruntime": ort.__version__,
                                "machine": {"cpu": "a made-up device", "cores": 4},
                                "cost_models": {"int8/128/1": model(ms_per_layer),
                                                "fp32/128/1": model(3 * ms_per_layer)}}))
    return str(path)


@pytest.fixture(scope="module")
def budget_run(tiny_model_dir, small_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("budget")
    return CompressConfig(
        output_dir=str(work / "run"), data=small_data, allow_weak_teacher=True,
        finetune=FinetuneConfig(min_steps=0, model=str(tiny_model_dir), epochs=1, batch_size=16),
        distill=DistillConfig(min_steps=0, phases=[Phase({"prediction": 1}, 1)], batch_size=16),
        export=ExportConfig(quantize="dynamic", optimize=False, objective="size", accuracy_budget=1.0),  # INT8 ships
        budget=BudgetConfig(latency_ms=2.5, device_profile=device_profile(work / "device.json")))


def test_a_budget_ships_the_most_accurate_student_predicted_within_it(budget_run):
    bundle = compress(budget_run)
    out = Path(budget_run.output_dir)
    report = json.loads((out / "budget.json").read_text())
    assert len(report["candidates"]) == 4 * len(PRUNE_FRACTIONS) * 2  # the tiny teacher's 4 layers
    tried = [t["candidate"] for t in report["trials"]]
    assert tried[0] == "l2-p00-int8" and set(tried) <= {"l2-p00-int8", "l1-p00-int8"}  # 3 layers: 3.1 ms
    manifest = read_manifest(bundle)
    record = manifest["budget"]
    assert record["latency_ms"] == 2.5 and record["latency"] == "predicted by the device profile"
    assert record["device"] == "a made-up device" and record["margin_ms"] == pytest.approx(2.5 - record["predicted_ms"])
    winner = max((t for t in report["trials"] if t["meets"]), key=lambda t: t["metric"])
    assert record["candidate"] == winner["candidate"] and manifest["metrics"]["validation"] == winner["metric"]
    assert load(bundle)(["a fine film"])[0]["label"] in ("negative", "positive")  # the copy is a sealed bundle
    markdown = (out / "budget.md").read_text()
    assert "| l2-p00-int8 |" in markdown and "| l4-p75 |" in markdown and (out / "budget.png").stat().st_size > 0


def test_a_budget_no_student_meets_names_the_fastest_and_its_metric(budget_run):
    tight = replace(budget_run, budget=replace(budget_run.budget, latency_ms=0.5))
    with pytest.raises(TinyshipError, match=r"no student runs within 0.5 ms .* the fastest tried, l1-p00-int8, takes "
                                            r"1.10 ms with validation 0\.\d{4}") as error:
        compress(tight)
    assert "Raise --latency-budget" in str(error.value)


def test_the_budget_flags_and_recipe_key_set_the_search(tmp_path):
    parser = argparse.ArgumentParser()
    _configure_compress(parser)
    args = parser.parse_args(["--latency-budget", "2", "--length", "64", "--threads", "2",
                              "--device-profile", "p.json"])
    assert compress_config_from_args(args).budget == BudgetConfig(2.0, 64, 2, "p.json")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("budget: {latency_ms: 4, trials: 2}\n")
    assert load_recipe(recipe).budget == BudgetConfig(latency_ms=4, trials=2)


def test_a_profile_that_is_not_one_stops_the_search_before_training(budget_run, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(TinyshipError, match="is not a tinyship device profile"):
        compress(replace(budget_run, budget=replace(budget_run.budget, device_profile=str(bad))))
