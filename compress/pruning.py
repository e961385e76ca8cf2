"""Structured pruning: whole attention heads and FFN neurons, the least important first.

Importance scores are a registry of small functions (model, batches) -> (head scores, neuron scores), one tensor
per layer. Cutting a head removes its query, key and value rows and its columns of the attention output; cutting
a neuron removes its row of the FFN's first projection and its column of the second. A pruned model directory
is a save_pretrained directory whose config.json records each layer's kept heads (transformers' own
`pruned_heads`) and FFN width (`tinyship_pruning`); load_model rebuilds the slim layers before loading weights.
The format itself (and plain transformers' way in) is compress/tinyship_pruned.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch
import transformers
from transformers import AutoTokenizer

from tinyship.compress.config import PruneConfig, settings
from tinyship.compress.flops import PRUNING_KEY, layer_flops
from tinyship.compress.states import encoder_layers, logits_of
from tinyship.compress.tasks import task_of
from tinyship.compress.tinyship_pruned import ffn_widths, read_config, set_ffn_widths
from tinyship.compress.training import PadCollator, check_output, parameter_count, save_model
from tinyship.runtime.bench import timed
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import check_model_dir

log = logging.getLogger(__name__)

SUPPORTED = ("bert", "roberta", "xlm-roberta", "camembert", "electra")  # BERT's layer layout

IMPORTANCES: dict[str, Callable] = {}


def register(name: str):
    def add(fn):
        IMPORTANCES[name] = fn
        return fn

    return add


def load_model(model_dir: str | Path):
    """A model directory, plain or pruned, with its task head: the slim layers rebuilt, then the weights loaded
    exactly (a missing or mis-shaped weight is an error)."""
    from safetensors.torch import load_file

    model_dir = check_model_dir(model_dir)
    config = read_config(model_dir)
    task = task_of(config)
    widths = ffn_widths(config)
    if not widths:
        return getattr(transformers, task.head).from_pretrained(model_dir)
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise TinyshipError(f"{model_dir} has no model.safetensors: a pruned model needs its weights")
    model = getattr(transformers, task.head).from_config(config)  # applies config.pruned_heads
    set_ffn_widths(model, widths)
    state = {}
    for file in weights:
        state.update(load_file(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in (getattr(model, "_tied_weights_keys", None) or [])]
    if missing or unexpected:
        raise TinyshipError(f"{model_dir}: weights do not fit the recorded shapes (missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}): re-run `tinyship prune`")
    return model.eval()


def _check_architecture(model) -> None:
    if model.config.model_type not in SUPPORTED:
        raise TinyshipError(f"tinyship prunes {', '.join(SUPPORTED)} models, not {model.config.model_type}")


def _head_size(layer) -> int:
    return layer.attention.self.attention_head_size


@register("taylor")
def taylor(model, batches) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """|dL/dg| summed over the batches, for a gate g multiplying each head's output and each FFN neuron
    (Michel et al. 2019), then normalised per layer so that layers compare."""
    layers = encoder_layers(model)
    head_gates = [torch.ones(layer.attention.self.num_attention_heads, requires_grad=True) for layer in layers]
    neuron_gates = [torch.ones(layer.intermediate.dense.out_features, requires_grad=True) for layer in layers]
    hooks = []
    for layer, heads, neurons in zip(layers, head_gates, neuron_gates):
        hooks.append(layer.attention.self.register_forward_hook(_gate_heads(heads, _head_size(layer))))
        hooks.append(layer.intermediate.register_forward_hook(lambda m, i, out, g=neurons: out * g))
    task = task_of(model.config)
    head_scores = [torch.zeros_like(g) for g in head_gates]
    neuron_scores = [torch.zeros_like(g) for g in neuron_gates]
    try:
        for batch in batches:
            labels = batch.pop("labels")
            loss = task.labels(logits_of(model(**batch)), labels)
            grads = torch.autograd.grad(loss, head_gates + neuron_gates)
            for total, grad in zip(head_scores + neuron_scores, grads):
                total += grad.abs()
    finally:
        for hook in hooks:
            hook.remove()
    return [_normalised(s) for s in head_scores], [_normalised(s) for s in neuron_scores]


def _gate_heads(gate: torch.Tensor, head_size: int):
    def hook(module, inputs, output):
        context = output[0]
        shape = context.shape
        gated = (context.view(*shape[:-1], gate.numel(), head_size) * gate[:, None]).view(shape)
        return (gated, *output[1:])

    return hook


def _normalised(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.norm().clamp_min(1e-12)


@register("magnitude")
def magnitude(model, batches=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The L2 norm of every weight a head or neuron owns (no data needed), normalised per layer."""
    heads, neurons = [], []
    with torch.no_grad():
        for layer in encoder_layers(model):
            attention, size = layer.attention.self, _head_size(layer)
            rows = sum(getattr(attention, n).weight.pow(2).view(-1, size, attention.query.in_features).sum((1, 2))
                       for n in ("query", "key", "value"))
            columns = (layer.attention.output.dense.weight.pow(2).view(-1, attention.num_attention_heads, size)
                       .sum((0, 2)))
            heads.append(_normalised((rows + columns).sqrt()))
            first, second = layer.intermediate.dense.weight, layer.output.dense.weight
            neurons.append(_normalised((first.pow(2).sum(1) + second.pow(2).sum(0)).sqrt()))
    return heads, neurons


@register("group")
def group_magnitude(model, batches=None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """torch-pruning's group magnitude importance: each head's and neuron's channels scored together with every
    weight the dependency graph couples to them (query, key, value and the attention output; both FFN
    projections), normalised per layer."""
    import torch_pruning as tp

    graph = _dependency_graph(model)
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    heads, neurons = [], []
    with torch.no_grad():
        for layer in encoder_layers(model):
            for linear, scores, size in ((layer.attention.self.query, heads, _head_size(layer)),
                                         (layer.intermediate.dense, neurons, 1)):
                group = graph.get_pruning_group(linear, tp.prune_linear_out_channels,
                                                idxs=list(range(linear.out_features)))
                scores.append(_normalised(importance(group).view(-1, size).sum(1)))
    return heads, neurons


def choose(scores: list[torch.Tensor], fraction: float, scope: str) -> tuple[list[list[int]], int]:
    """The indices to remove in each layer (lowest scores first), and how many layers kept their best head or
    neuron because the target would have emptied them."""
    removed = [[] for _ in scores]
    if scope == "uniform":
        for k, layer in enumerate(scores):
            removed[k] = layer.argsort()[: round(fraction * len(layer))].tolist()
    else:
        ranked = sorted(((float(s), k, i) for k, layer in enumerate(scores) for i, s in enumerate(layer)))
        for _, k, i in ranked[: round(fraction * sum(len(layer) for layer in scores))]:
            removed[k].append(i)
    held = 0
    for k, layer in enumerate(scores):
        if len(removed[k]) >= len(layer):
            removed[k] = [i for i in removed[k] if i != int(layer.argmax())]
            held += 1
    return [sorted(r) for r in removed], held


def cut(model, heads: list[list[int]], neurons: list[list[int]]) -> None:
    """Remove the given heads (indices among each layer's current heads) and FFN neurons, in place, through
    torch-pruning's dependency graph: a head's query, key and value rows and its attention-output columns, a
    neuron's row and column of the two FFN projections. Head counts and config.pruned_heads follow."""
    import torch_pruning as tp

    _check_architecture(model)
    graph = _dependency_graph(model)
    layers = encoder_layers(model)
    for k, (layer, dead_heads, dead_neurons) in enumerate(zip(layers, heads, neurons)):
        attention, size = layer.attention.self, _head_size(layer)
        if dead_heads:
            channels = [h * size + i for h in dead_heads for i in range(size)]
            graph.get_pruning_group(attention.query, tp.prune_linear_out_channels, idxs=channels).prune()
            original = sorted(set(range(attention.num_attention_heads + len(layer.attention.pruned_heads)))
                              - layer.attention.pruned_heads)
            layer.attention.pruned_heads |= {original[h] for h in dead_heads}
            attention.num_attention_heads -= len(dead_heads)
            attention.all_head_size = attention.num_attention_heads * size
            model.config.pruned_heads[k] = sorted(layer.attention.pruned_heads)
        if dead_neurons:
            graph.get_pruning_group(layer.intermediate.dense, tp.prune_linear_out_channels, idxs=dead_neurons).prune()
    model.config.intermediate_size = max(layer.intermediate.dense.out_features for layer in layers)
    setattr(model.config, PRUNING_KEY,
            {"intermediate_sizes": [layer.intermediate.dense.out_features for layer in layers]})


def _dependency_graph(model):
    """torch-pruning's graph of which weights' channels are coupled, traced on a short example."""
    import torch_pruning as tp

    ids = torch.full((1, 8), min(1000, model.config.vocab_size - 1))
    return tp.DependencyGraph().build_dependency(model, example_inputs={"input_ids": ids,
                                                                         "attention_mask": torch.ones_like(ids)})


def prune(config: PruneConfig) -> Path:
    """Score, cut and save; returns the pruned model directory."""
    out = check_output(config)
    model_dir = check_model_dir(config.model)
    model = load_model(model_dir)
    _check_architecture(model)
    task = task_of(model.config)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    before, flops_before = parameter_count(model), encoder_flops(model)
    batches = []
    if config.importance == "taylor":
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]  # as distill reads them
        examples = task.load(config.data, "train", labels)
        rows = task.encode(examples, tokenizer, config.data.max_length)[: config.examples]
        if not rows:
            raise TinyshipError(f"no training examples in {examples.source}: the taylor importance needs some "
                                "(or use --importance magnitude)")
        collate = PadCollator({"input_ids": tokenizer.pad_token_id or 0, "labels": -100})
        batches = [collate(rows[i : i + config.batch_size]) for i in range(0, len(rows), config.batch_size)]
        log.info(f"scoring heads and neurons of {model_dir} on {len(rows)} examples of {examples.source}")
    model.eval()
    head_scores, neuron_scores = IMPORTANCES[config.importance](model, batches)
    head_fraction, ffn_fraction = config.fractions
    if config.parameters is not None:  # the same fraction of every layer's prunable weights, sized to the target
        head_fraction = ffn_fraction = config.parameters * before / prunable_parameters(model)
        if head_fraction >= 1:
            raise TinyshipError(f"removing {config.parameters:.0%} of the parameters would take every head and neuron: "
                                f"heads and neurons hold {prunable_parameters(model) / before:.0%} of them "
                                "(the rest is embeddings and the head)")
    measured = {}
    if config.latency is not None:
        head_fraction = ffn_fraction = measured_fraction(model, head_scores, neuron_scores, config)
        measured = {"latency_fraction_removed": head_fraction}
    heads, held = choose(head_scores, head_fraction, config.scope)
    if held:
        log.info(f"{held} layer(s) would have lost every head: each keeps its most important one")
    neurons, _ = choose(neuron_scores, ffn_fraction, config.scope)
    cut(model, heads, neurons)
    after, flops_after = parameter_count(model), encoder_flops(model)
    record = {"config": settings(config), "source": str(model_dir), "parameters": {"before": before, "after": after},
              **({"latency_128_tokens": measured} if measured else {}),
              "encoder_flops_128_tokens": {"before": flops_before, "after": flops_after},
              "heads_kept": [encoder_layers(model)[k].attention.self.num_attention_heads for k in range(len(heads))],
              "ffn_kept": getattr(model.config, PRUNING_KEY)["intermediate_sizes"]}
    log.info(f"kept heads per layer {record['heads_kept']}, FFN widths {record['ffn_kept']}; "
          f"parameters {before / 1e6:.2f}M -> {after / 1e6:.2f}M; encoder FLOPs kept {flops_after / flops_before:.1%}")
    save_model(model, tokenizer, out, record)
    log.info(f"pruned model written to {out} (load it with tinyship.compress.load_model, or with transformers' "
          "from_pretrained(..., trust_remote_code=True))")
    return out


def measured_fraction(model, head_scores, neuron_scores, config: PruneConfig, tokens: int = 128) -> float:
    """The smallest fraction of heads and neurons (to 1/64) whose removal measures at least config.latency of the
    model's PyTorch latency gone (batch 1, 128 tokens, 1 thread), found by bisection on trial cuts."""
    import copy

    base = _latency_ms(model, tokens)
    low, high, best = 0.0, 63 / 64, None
    while high - low > 1 / 64:
        middle = (low + high) / 2
        trial = copy.deepcopy(model)
        cut(trial, choose(head_scores, middle, config.scope)[0], choose(neuron_scores, middle, config.scope)[0])
        removed = 1 - _latency_ms(trial, tokens) / base
        if removed >= config.latency:
            high, best = middle, (middle, removed)
        else:
            low = middle
    if best is None:
        raise TinyshipError(f"removing heads and neurons cannot take {config.latency:.0%} of the latency here (the "
                            "embeddings and the rest stay): set a smaller --latency")
    log.info(f"measured: removing {best[0]:.1%} of heads and neurons removes {best[1]:.1%} of the latency "
             f"at {tokens} tokens")
    return best[0]


def _latency_ms(model, tokens: int, runs: int = 30) -> float:
    ids = torch.full((1, tokens), min(1000, model.config.vocab_size - 1))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            return timed(lambda: model(input_ids=ids), 5, runs)["median_ms"]
    finally:
        torch.set_num_threads(threads)


def prunable_parameters(model) -> int:
    """The weights that heads and FFN neurons own: q, k, v and the attention output, both FFN projections (biases
    of the outputs excepted). Removing a fraction of every head and neuron removes that fraction of these."""
    total = 0
    for layer in encoder_layers(model):
        attention = layer.attention.self
        total += 3 * (attention.query.in_features + 1) * attention.all_head_size
        total += layer.attention.output.dense.in_features * layer.attention.output.dense.out_features
        total += ((layer.intermediate.dense.in_features + 1 + layer.output.dense.out_features)
                  * layer.intermediate.dense.out_features)
    return total


def encoder_flops(model, tokens: int = 128) -> int:
    """compress.flops.layer_flops() summed over the model's layers, at their kept widths."""
    return sum(layer_flops(tokens, layer.attention.self.query.in_features, layer.attention.self.all_head_size,
                           layer.intermediate.dense.out_features) for layer in encoder_layers(model))
