import numpy as np
import onnx
import pytest

from tinyship.compress.tasks import TASKS
from tinyship.export.config import OBJECTIVES, ExportConfig
from tinyship.export.evaluation import choose, evaluate, task_logits
from tinyship.runtime.errors import TinyshipError


def measured(**latency_and_accuracy):
    """Hand-made candidates: name=(median ms, accuracy[, MB]); their runs spread 1% (p90 over the median)."""
    return {name: {"accuracy": accuracy, "median_ms": ms, "p90_ms": 1.01 * ms,
                   "size_bytes": int(mb[0] * 1e6) if mb else 10**6}
            for name, (ms, accuracy, *mb) in latency_and_accuracy.items()}


def test_gate_ships_the_fastest_variant_within_the_budget():
    candidates = measured(fp32=(10.0, 0.850), **{"int8-bad": (2.0, 0.700), "int8-good": (3.0, 0.842),
                                                  "int8-slow": (4.0, 0.851)})
    choice = choose(candidates, "accuracy", budget=0.01)
    assert choice.winner == "int8-good"
    assert choice.passed == {"fp32": True, "int8-bad": False, "int8-good": True, "int8-slow": True}
    assert "int8-bad (accuracy 0.7000, 15.00 points worse)" in choice.reason
    assert choice.reason.startswith("int8-good: objective latency, the smallest file among the candidates as fast as "
                                    "the fastest (int8-good, 3.00 ms;")
    assert "within the accuracy budget of 1.00 points (3.00 ms, 1.0 MB, accuracy 0.8420" in choice.reason


# The demo's export candidates (runs/demo/bundle/tinyship.json, metrics.candidates): median ms, p90 ms, bytes.
DEMO = {"fp32": (1.8758, 1.9544, 69622927), "fp32-fused": (1.9264, 1.9966, 69574440),
        "int8-dynamic": (0.5734, 0.5974, 17527317), "int8-dynamic-fused": (0.5487, 0.5809, 17468973),
        "int8-static-entropy": (0.5887, 0.6108, 53726639), "int8-static-minmax": (0.6188, 0.6416, 53726639)}


def demo(**changed):
    """The demo's candidates, all within the budget, with some (median ms, p90 ms) changed."""
    return {name: {"accuracy": 0.83, "median_ms": changed.get(name.replace("-", "_"), timing)[0],
                   "p90_ms": changed.get(name.replace("-", "_"), timing)[1], "size_bytes": timing[2]}
            for name, timing in DEMO.items()}


def test_within_noise_of_the_fastest_the_smallest_ships():
    assert choose(demo(), "accuracy", 0.01).winner == "int8-dynamic-fused"
    # static INT8 3% faster than dynamic, within noise (issue 14): the three times smaller dynamic file ships
    choice = choose(demo(int8_static_entropy=(0.5330, 0.5420)), "accuracy", 0.01)
    assert choice.winner == "int8-dynamic-fused" and choice.noise_band == pytest.approx(0.05)
    assert ("as fast as the fastest (int8-static-entropy, 0.53 ms; as fast: a median latency within 5.0% of it"
            in choice.reason)
    # clearly faster (10%): static ships, size notwithstanding
    assert choose(demo(int8_static_entropy=(0.4950, 0.5000)), "accuracy", 0.01).winner == "int8-static-entropy"


def test_the_noise_band_is_the_fastests_own_spread_when_wider_than_five_percent():
    steady, jittery = (0.5100, 0.5150), (0.5100, 0.5610)  # p90 1% and 10% over the median
    # dynamic 7.6% slower
    assert choose(demo(int8_static_entropy=steady), "accuracy", 0.01).winner == "int8-static-entropy"
    choice = choose(demo(int8_static_entropy=jittery), "accuracy", 0.01)
    assert choice.winner == "int8-dynamic-fused" and choice.noise_band == pytest.approx(0.10)
    assert "within 10.0% of it, the larger of 5% and its own run-to-run spread (p90 - median) / median" in choice.reason


def test_each_objective():
    candidates = measured(fp32=(10.0, 0.85, 100), big=(1.0, 0.85, 50), mid=(1.3, 0.85, 20), small=(3.0, 0.85, 10))
    shipped = {objective: choose(candidates, "accuracy", 0.01, objective) for objective in OBJECTIVES}
    assert {o: c.winner for o, c in shipped.items()} == {"latency": "big", "size": "small", "balanced": "mid"}
    assert shipped["size"].reason.startswith("small: objective size, the smallest file, within the accuracy budget")
    assert shipped["balanced"].reason.startswith("mid: objective balanced, the lowest median latency x file size,")
    assert "also within the budget: fp32 (10.00 ms, 100.0 MB), big (1.00 ms, 50.0 MB)" in shipped["balanced"].reason


def test_ties_go_to_the_faster():
    same_size = measured(fp32=(10.0, 0.85, 100), slower=(2.0, 0.85, 10), faster=(1.5, 0.85, 10))
    assert choose(same_size, "accuracy", 0.01, "size").winner == "faster"
    assert choose(same_size, "accuracy", 0.01, "latency").winner == "faster"


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_a_small_fast_candidate_over_the_budget_never_ships(objective):
    candidates = measured(fp32=(10.0, 0.85, 100), int8=(2.0, 0.845, 25), broken=(1.0, 0.80, 5))
    choice = choose(candidates, "accuracy", 0.01, objective)
    assert choice.winner == "int8" and not choice.passed["broken"]
    assert "over the budget or failed: broken (accuracy 0.8000, 5.00 points worse)" in choice.reason


def test_an_unknown_objective_is_refused_with_the_choices():
    with pytest.raises(TinyshipError, match="unknown objective 'smallest': use one of latency, size, balanced"):
        ExportConfig(objective="smallest")


def test_the_objective_comes_from_export_and_compress_flags_and_from_a_recipe(tmp_path):
    import argparse

    from tinyship.export.cli import _configure_compress, _configure_export, compress_config_from_args

    def parser(configure):
        made = argparse.ArgumentParser()
        configure(made)
        return made

    assert parser(_configure_export).parse_args(["model"]).objective == "latency"
    assert parser(_configure_export).parse_args(["model", "--objective", "balanced"]).objective == "balanced"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("export: {objective: size}\n")
    compress = parser(_configure_compress)
    assert compress_config_from_args(compress.parse_args(["--recipe", str(recipe)])).export.objective == "size"
    flagged = compress.parse_args(["--recipe", str(recipe), "--objective", "latency"])
    assert compress_config_from_args(flagged).export.objective == "latency"


def test_gate_budget_edge_failed_variants_and_fp32_fallback():
    within = measured(fp32=(10.0, 0.85), int8=(2.0, 0.84))
    assert choose(within, "accuracy", budget=0.01).winner == "int8"  # exactly one point is within
    assert choose(within, "accuracy", budget=0.005).winner == "fp32"  # nothing quantized passes: fp32 ships
    broken = {**within, "fp16": {"error": "cannot run here: no kernel"}}
    choice = choose(broken, "accuracy", budget=0.005)
    assert (choice.winner == "fp32" and not choice.passed["fp16"]
            and "fp16 (cannot run here: no kernel)" in choice.reason)


def test_gate_for_a_metric_where_lower_is_better():
    candidates = {"fp32": {"mse": 0.10, "median_ms": 5.0}, "int8": {"mse": 0.105, "median_ms": 1.0},
                  "int8-worse": {"mse": 0.2, "median_ms": 0.5}}
    candidates = {name: {**m, "p90_ms": m["median_ms"], "size_bytes": 1000} for name, m in candidates.items()}
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
    nodes = [helper.make_node("Cast", ["input_ids"], [name], to=TensorProto.FLOAT)
             for name in ("start_logits", "end_logits")]
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
    candidates = {"fp32": {metric: 0.0, "median_ms": 1.0, "p90_ms": 1.0, "size_bytes": 1000}}
    assert choose(candidates, metric, budget=0.0).winner == "fp32"


def test_a_load_time_fusion_is_turned_off_only_when_clearly_faster(monkeypatch):
    from tinyship.export import evaluation

    def timed(speedup):
        return lambda path, feed, threads, disabled_optimizers=(): {
            "median_ms": 10.0 / (speedup if "SkipLayerNormFusion" in disabled_optimizers else 1.0), "p99_ms": 11.0}

    monkeypatch.setattr(evaluation, "latency", timed(1.25))
    assert (evaluation.fastest_session("model.onnx", {}, 1)
            == (["SkipLayerNormFusion"], {"median_ms": 8.0, "p99_ms": 11.0}))
    monkeypatch.setattr(evaluation, "latency", timed(1.02))  # within timing noise: keep onnxruntime's default
    assert evaluation.fastest_session("model.onnx", {}, 1) == ([], {"median_ms": 10.0, "p99_ms": 11.0})
