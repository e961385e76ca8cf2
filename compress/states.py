"""What the intermediate losses compare: a model's embedding output, layer outputs and attention maps.

Attention maps are rebuilt from each layer's query and key projections, caught by forward hooks, so
they come out the same under any attention implementation (eager, sdpa) and need no output_attentions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from tinyship.runtime.errors import TinyshipError


@dataclass
class States:
    logits: torch.Tensor | None
    hidden: tuple[torch.Tensor, ...] = ()  # the embedding output, then each layer's output
    attention: dict[int, torch.Tensor] | None = None  # 1-based layer -> [batch, heads, query, key]

    def float(self) -> States:
        """The states in fp32, as the losses compare them (a teacher run under bf16 autocast gives bf16)."""
        return States(None if self.logits is None else self.logits.float(), tuple(h.float() for h in self.hidden),
                      None if self.attention is None else {n: a.float() for n, a in self.attention.items()})


def encoder_layers(model) -> torch.nn.ModuleList:
    layers = getattr(getattr(model.base_model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TinyshipError(
            f"{type(model).__name__} has no encoder.layer list: tinyship distils BERT-style encoders "
            "(bert, roberta, mpnet, electra, ...)"
        )
    return layers


def query_key(layer: torch.nn.Module) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """A layer's query and key projections (named query/key in BERT and RoBERTa, q/k in MPNet)."""
    linears = {name.rsplit(".", 1)[-1]: m for name, m in layer.named_modules() if isinstance(m, torch.nn.Linear)}
    query, key = linears.get("query", linears.get("q")), linears.get("key", linears.get("k"))
    if query is None or key is None:
        raise TinyshipError(f"no query/key projections found in {type(layer).__name__}: "
                            "the attention loss cannot read its maps")
    return query, key


def attention_map(query: torch.Tensor, key: torch.Tensor, head_size: int, mask, kind: str) -> torch.Tensor:
    """[batch, heads, query, key] scores q·k/sqrt(d) (before softmax, as TinyBERT), or their softmax over real keys.
    Models that add a position bias to the scores (MPNet's relative positions) are compared without it."""
    batch, length, width = query.shape
    shape = (batch, length, width // head_size, head_size)
    q, k = query.view(shape).transpose(1, 2), key.view(shape).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_size)
    if kind == "scores":
        return scores
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :].bool(), torch.finfo(scores.dtype).min)
    return scores.softmax(dim=-1)


def logits_of(outputs) -> torch.Tensor | None:
    """A model output's logits: [batch, classes], [batch, tokens, classes], or for extractive QA [batch, tokens, 2]
    (start and end stacked last); None for a bare encoder."""
    if getattr(outputs, "start_logits", None) is not None:
        return torch.stack([outputs.start_logits, outputs.end_logits], dim=-1)
    return getattr(outputs, "logits", None)


def forward_states(model, inputs: dict, attention_layers=(), attention: str = "scores") -> States:
    """Run model on inputs, returning its logits, every hidden state and the maps of attention_layers (1-based)."""
    layers = encoder_layers(model)
    config = model.config
    head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    caught: dict[tuple[int, str], torch.Tensor] = {}
    hooks = []
    for n in attention_layers:
        for name, module in zip("qk", query_key(layers[n - 1])):
            hooks.append(module.register_forward_hook(
                lambda _m, _i, output, key=(n, name): caught.__setitem__(key, output)))
    try:
        outputs = model(**inputs, output_hidden_states=True, return_dict=True)
    finally:
        for hook in hooks:
            hook.remove()
    mask = inputs.get("attention_mask")
    maps = {n: attention_map(caught[n, "q"], caught[n, "k"], head_size, mask, attention) for n in attention_layers}
    return States(logits_of(outputs), outputs.hidden_states, maps)
