"""The encoder's matrix-product count, declared once: pruning targets it, the benchmarks set it against the CPU's
GEMM ceilings."""

from __future__ import annotations

from tinyship.compress.tinyship_pruned import KEY as PRUNING_KEY


def layer_flops(tokens: int, hidden: int, attention_width: int, ffn_width: int) -> int:
    """Multiply-adds x 2 of one layer's matrix products for one sequence: the query, key, value and output
    projections and the attention products over its kept heads (attention_width = heads x head size), and the
    FFN's two products. Linear in kept heads and in kept neurons."""
    return 2 * (4 * tokens * hidden * attention_width + 2 * tokens * tokens * attention_width
                + 2 * tokens * hidden * ffn_width)


def config_flops(config: dict, tokens: int) -> int:
    """layer_flops() summed over an encoder described by its config.json, per-layer widths of a pruned model
    (pruned_heads, and tinyship's per-layer FFN widths) included."""
    hidden, heads, layers = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    head_size = hidden // heads
    pruned = config.get("pruned_heads") or {}
    widths = (config.get(PRUNING_KEY) or {}).get("intermediate_sizes") or [config["intermediate_size"]] * layers
    return sum(layer_flops(tokens, hidden, (heads - len(pruned.get(str(k), pruned.get(k, [])))) * head_size, widths[k])
               for k in range(layers))
