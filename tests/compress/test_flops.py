"""tinyship.compress.flops: one matrix-product count, from a model's modules or from its saved config."""

import json

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.compress.flops import config_flops
from tinyship.compress.pruning import cut, encoder_flops
from tinyship.compress.training import save_model


def test_flops_from_config_count_what_the_pruned_model_computes(tiny_model_dir, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config_flops(config, 64) == encoder_flops(model, 64)

    cut(model, [[1], [], [0, 3], [2]], [list(range(0, 64, 3)), [5], list(range(40)), []])
    save_model(model, AutoTokenizer.from_pretrained(str(tiny_model_dir)), tmp_path / "pruned", {})
    config = json.loads((tmp_path / "pruned" / "config.json").read_text())  # pruned heads and widths, as saved
    for tokens in (16, 128):
        assert config_flops(config, tokens) == encoder_flops(model, tokens)
    # by hand at 16 tokens, hidden 32: kept heads of 8 give widths 24, 32, 16, 24; FFN widths 42, 63, 24, 64
    by_hand = sum(2 * (4 * 16 * 32 * w + 2 * 16 * 16 * w + 2 * 16 * 32 * f)
                  for w, f in zip((24, 32, 16, 24), (42, 63, 24, 64)))
    assert config_flops(config, 16) == by_hand
