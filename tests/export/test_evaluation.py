import numpy as np
import onnx
import pytest

from tinyship.compress.tasks import TASKS
from tinyship.export.evaluation import choose, evaluate, task_logits


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


def batch_dependent_model(path):
    """An ONNX model whose score for a row is its ids' sum over the largest id in the whole batch: like dynamic
    INT8's activation scale, what shares the batch changes each row's output."""
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    nodes = [helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["x", "axis"], ["sums"], keepdims=1),
             helper.make_node("ReduceMax", ["x"], ["largest"], keepdims=0),
             helper.make_node("Div", ["sums", "largest"], ["logits"])]
    axis = helper.make_tensor("axis", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(nodes, "batch-dependent", [ids], [logits], [axis])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_gate_runs_a_model_that_is_not_batch_invariant_one_row_per_run(tmp_path):
    model = batch_dependent_model(tmp_path / "model.onnx")
    rows = [{"input_ids": [1, 2, 3], "labels": 0.0}, {"input_ids": [10, 20], "labels": 0.0},
            {"input_ids": [5], "labels": 1.0}]
    regression = TASKS["regression"]
    alone = ((6 / 3) ** 2 + (30 / 20) ** 2 + (5 / 5 - 1) ** 2) / 3  # each row scaled by its own largest id
    assert evaluate(model, rows, regression, pad_id=0, batch_invariant=False) == pytest.approx(alone)
    together = ((6 / 20) ** 2 + (30 / 20) ** 2 + (5 / 20 - 1) ** 2) / 3  # all three in one run: by the batch's 20
    assert evaluate(model, rows, regression, pad_id=0) == pytest.approx(together)


def span_model(path):
    """An ONNX QA model whose start and end logits are the input ids themselves."""
    from onnx import TensorProto, helper

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "tokens"])
               for name in ("start_logits", "end_logits")]
    nodes = [helper.make_node("Cast", ["input_ids"], [name], to=TensorProto.FLOAT) for name in ("start_logits", "end_logits")]
    graph = helper.make_graph(nodes, "spans", [ids], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_gate_scores_spans_on_each_rows_own_tokens_never_padding(tmp_path):
    model = span_model(tmp_path / "model.onnx")
    rows = [{"input_ids": [1, 5, 2], "labels": [1, 1]}, {"input_ids": [3, 1, 2, 9, 4], "labels": [3, 3]}]
    qa = TASKS["question-answering"]
    assert evaluate(model, rows, qa, pad_id=99) == 1.0  # the first row is padded with 99s beside the second
    assert evaluate(model, [*rows, {"input_ids": [7, 1], "labels": [1, 1]}], qa, pad_id=99) == pytest.approx(2 / 3)
    start, end = np.array([0.0, 1.0, 9.0]), np.array([0.0, 2.0, 9.0])
    assert task_logits([start, end], qa).tolist() == [[0.0, 0.0], [1.0, 2.0], [9.0, 9.0]]
    assert task_logits([start], TASKS["classification"]) is start


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
