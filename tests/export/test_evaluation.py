import numpy as np
import pytest

from tinyship.compress.tasks import TASKS
from tinyship.export.evaluation import batches, choose, task_logits


def measured(**latency_and_accuracy):
    return {name: {"accuracy": accuracy, "median_ms": ms} for name, (ms, accuracy) in latency_and_accuracy.items()}


def test_gate_ships_the_fastest_variant_within_the_budget():
    candidates = measured(fp32=(10.0, 0.850), **{"int8-bad": (2.0, 0.700), "int8-good": (3.0, 0.842),
                                                  "int8-slow": (4.0, 0.851)})
    choice = choose(candidates, "accuracy", budget=0.01)
    assert choice.winner == "int8-good"
    assert choice.passed == {"fp32": True, "int8-bad": False, "int8-good": True, "int8-slow": True}
    assert "int8-bad (accuracy 0.7000, 15.00 points worse)" in choice.reason
    assert choice.reason.startswith("int8-good: the fastest within the budget of 1.00 points (3.00 ms")


def test_gate_budget_edge_failed_variants_and_fp32_fallback():
    within = measured(fp32=(10.0, 0.85), int8=(2.0, 0.84))
    assert choose(within, "accuracy", budget=0.01).winner == "int8"  # exactly one point is within
    assert choose(within, "accuracy", budget=0.005).winner == "fp32"  # nothing quantized passes: fp32 ships
    broken = {**within, "fp16": {"error": "cannot run here: no kernel"}}
    choice = choose(broken, "accuracy", budget=0.005)
    assert choice.winner == "fp32" and not choice.passed["fp16"] and "fp16 (cannot run here: no kernel)" in choice.reason


def test_gate_for_a_metric_where_lower_is_better():
    candidates = {"fp32": {"mse": 0.10, "median_ms": 5.0}, "int8": {"mse": 0.105, "median_ms": 1.0},
                  "int8-worse": {"mse": 0.2, "median_ms": 0.5}}
    choice = choose(candidates, "mse", budget=0.01)
    assert choice.winner == "int8" and not choice.passed["int8-worse"]


def test_batches_sort_pad_and_keep_labels_with_their_rows():
    rows = [{"input_ids": [1] * n, "attention_mask": [1] * n, "labels": n} for n in (5, 2, 9, 3)]
    got = list(batches(rows, ["input_ids", "attention_mask", "token_type_ids"], pad_id=7, batch_size=2))
    (first, first_labels), (second, second_labels) = got
    assert first["input_ids"].tolist() == [[1, 1, 7], [1, 1, 1]] and first_labels.tolist() == [2, 3]
    assert second["attention_mask"].tolist() == [[1] * 5 + [0] * 4, [1] * 9] and second_labels.tolist() == [5, 9]
    assert not second["token_type_ids"].any()  # rows without token types get zeros
    tokens = [{"input_ids": [1, 1, 1], "attention_mask": [1, 1, 1], "labels": [-100, 2, -100]},
              {"input_ids": [1], "attention_mask": [1], "labels": [-100]}]
    _, labels = next(batches(tokens, ["input_ids"], pad_id=0, per_token=True))
    assert labels.tolist() == [[-100, -100, -100], [-100, 2, -100]]


def test_span_logits_never_pick_padding():
    start = np.array([[0.0, 1.0, 9.0]])  # the padded position has the largest logit
    end = np.array([[0.0, 2.0, 9.0]])
    stacked = task_logits([start, end], ["start_logits", "end_logits"], np.array([[1, 1, 0]]))
    assert stacked.shape == (1, 3, 2)
    assert TASKS["question-answering"].score(stacked, np.array([[1, 1]])) == (1.0, 1.0)
    assert task_logits([start], ["logits"], np.ones((1, 3))) is start


@pytest.mark.parametrize("metric", ["accuracy", "exact_match"])
def test_the_baseline_always_passes(metric):
    candidates = {"fp32": {metric: 0.0, "median_ms": 1.0}}
    assert choose(candidates, metric, budget=0.0).winner == "fp32"


def test_a_load_time_fusion_is_turned_off_only_when_clearly_faster(monkeypatch):
    from tinyship.export import evaluation

    def timed(speedup):
        return lambda path, feed, threads, disabled_optimizers=(): {
            "median_ms": 10.0 / (speedup if "SkipLayerNormFusion" in disabled_optimizers else 1.0), "p99_ms": 11.0}

    monkeypatch.setattr(evaluation, "latency", timed(1.25))
    assert evaluation.fastest_session("model.onnx", {}, 1) == (["SkipLayerNormFusion"], {"median_ms": 8.0, "p99_ms": 11.0})
    monkeypatch.setattr(evaluation, "latency", timed(1.02))  # within timing noise: keep onnxruntime's default
    assert evaluation.fastest_session("model.onnx", {}, 1) == ([], {"median_ms": 10.0, "p99_ms": 11.0})
