"""tinyship.export.measure: the matrix-product count the benchmarks set against the CPU's ceilings."""

import json

import pytest

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.compress.pruning import cut, encoder_flops
from tinyship.compress.training import save_model
from tinyship.export.measure import matmul_gop


def test_matmul_gop_from_config_counts_what_the_pruned_model_computes(tiny_model_dir, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert matmul_gop(config, 64) == pytest.approx(encoder_flops(model, 64) / 1e9, rel=1e-12)

    cut(model, [[1], [], [0, 3], [2]], [list(range(0, 64, 3)), [5], list(range(40)), []])
    save_model(model, AutoTokenizer.from_pretrained(str(tiny_model_dir)), tmp_path / "pruned", {})
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())  # pruned heads and widths, as saved
    for tokens in (16, 128):
        assert matmul_gop(config, tokens) == pytest.approx(encoder_flops(model, tokens) / 1e9, rel=1e-12)
    # by hand at 16 tokens, hidden 32: kept heads of 8 give widths 24, 32, 16, 24; FFN widths 42, 63, 24, 64
    by_hand = sum(2 * (4 * 16 * 32 * w + 2 * 16 * 16 * w + 2 * 16 * 32 * f) for w, f in zip((24, 32, 16, 24), (42, 63, 24, 64)))
    assert matmul_gop(config, 16) == pytest.approx(by_hand / 1e9, rel=1e-12)
