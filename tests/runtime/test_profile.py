"""The cost model (fit and prediction over shapes), shapes read from model configs, and a profile's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.profile import (
    COST_TERMS,
    PROFILE_FORMAT,
    Shape,
    features,
    fit,
    predict_ms,
    profile_risks,
    read_profile,
    shape_of,
)

BERT = {"hidden_size": 384, "num_attention_heads": 12, "num_hidden_layers": 3, "intermediate_size": 1536,
        "vocab_size": 30522}


def test_shape_of_a_plain_config():
    assert shape_of(BERT) == Shape(384, 32, 30522, (12, 12, 12), (1536, 1536, 1536))


def test_shape_of_a_pruned_config_counts_each_layers_heads_and_neurons():
    pruned = {**BERT, "pruned_heads": {"0": [1, 2], "2": [0, 3, 5, 7]},
              "tinyship_pruning": {"intermediate_sizes": [1000, 1536, 200]}}
    assert shape_of(pruned) == Shape(384, 32, 30522, (10, 12, 8), (1000, 1536, 200))


def random_shapes(count: int, seed: int) -> list[Shape]:
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(count):
        layers = int(rng.integers(1, 7))
        shapes.append(Shape(int(rng.choice([128, 384, 768])), 32, 1000, tuple(rng.integers(1, 13, layers).tolist()),
                            tuple(rng.integers(64, 3073, layers).tolist())))
    return shapes


def test_fit_recovers_a_linear_cost_and_predicts_unseen_shapes():
    truth = dict(zip(COST_TERMS, np.random.default_rng(0).uniform(0.1, 1.0, len(COST_TERMS)) *
                     np.array([1, 1e-3, 0.1, 1e-4, 1e-7, 1e-4, 1e-2, 1e-7, 1e-5])))
    shapes = random_shapes(40, seed=1)
    coefficients = fit(shapes, [predict_ms(truth, s) for s in shapes])
    for unseen in random_shapes(10, seed=2):
        assert predict_ms(coefficients, unseen) == pytest.approx(predict_ms(truth, unseen), rel=1e-6)


def test_fit_never_gives_a_term_a_negative_cost():
    shapes = random_shapes(30, seed=3)
    # a latency that falls with the number of layers: least squares alone prices layers below zero
    latencies = [5.0 - 0.3 * s.layers + 1e-6 * sum(s.hidden * f for f in s.ffn) for s in shapes]
    unconstrained, *_ = np.linalg.lstsq(np.stack([features(s) for s in shapes]), latencies, rcond=None)
    assert unconstrained.min() < 0
    coefficients = fit(shapes, latencies)
    assert min(coefficients.values()) >= 0
    assert coefficients.keys() == COST_TERMS.keys()


def test_a_pruned_layer_costs_less_than_a_full_one():
    coefficients = fit(random_shapes(40, seed=4), [1.0 + 1e-3 * sum(s.ffn) + 0.05 * sum(s.heads)
                                                   for s in random_shapes(40, seed=4)])
    full = Shape(384, 32, 1000, (12, 12), (1536, 1536))
    pruned = Shape(384, 32, 1000, (12, 6), (1536, 700))
    assert predict_ms(coefficients, pruned) < predict_ms(coefficients, full)


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the device profile"),
    ("{not json", "cannot read the device profile"),
    ('{"format": "something else"}', "is not a tinyship device profile"),
    (json.dumps({"format": PROFILE_FORMAT, "cost_models": {"int8/64/1": {}}}), "no int8 model at 128 tokens on 1"),
])
def test_a_profile_that_cannot_serve_says_why_and_how_to_make_one(tmp_path, content, message):
    path = tmp_path / "profile.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(TinyshipError, match=message) as error:
        read_profile(path, tokens=128, threads=1)
    assert "tinyship bench --profile" in str(error.value) or "--lengths 128 --threads 1" in str(error.value)


def test_a_profile_from_another_onnxruntime_or_task_is_a_stated_risk():
    import onnxruntime as ort

    same = {"onnxruntime": ort.__version__}
    assert profile_risks(same, "classification") == []
    older, = profile_risks({"onnxruntime": "1.0.0"}, "classification")
    assert "onnxruntime 1.0.0" in older and ort.__version__ in older and "profile the device again" in older
    other, = profile_risks(same, "token-classification")
    assert "token-classification" in other and "head" in other
