import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from tinyship.compress import PruneConfig, load_model, prune
from tinyship.compress.pruning import IMPORTANCES, choose, cut
from tinyship.compress.states import encoder_layers
from tinyship.compress.training import save_model
from tinyship.export import ExportConfig, export
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.data import DataConfig
from tinyship.runtime.errors import TinyshipError

TEXTS = ["a gripping, funny and moving film", "dull", "the plot wanders and the acting is wooden"]
HEADS = [[1], [], [0, 3], [2]]  # per layer, of 4
NEURONS = [list(range(0, 64, 3)), [5], list(range(40)), []]  # per layer, of 64


def encode(model_dir, texts=TEXTS):
    return AutoTokenizer.from_pretrained(str(model_dir))(texts, padding=True, return_tensors="pt")


def masked_logits(model, inputs, heads, neurons):
    """The unpruned model with the given heads' outputs and neurons' activations zeroed."""
    hooks = []
    for layer, dead_heads, dead_neurons in zip(encoder_layers(model), heads, neurons):
        size = layer.attention.self.attention_head_size

        def zero_heads(module, args, output, dead=dead_heads, size=size):
            context = output[0].clone()
            for h in dead:
                context[..., h * size : (h + 1) * size] = 0
            return (context, *output[1:])

        def zero_neurons(module, args, output, dead=dead_neurons):
            output = output.clone()
            output[..., dead] = 0
            return output

        hooks += [layer.attention.self.register_forward_hook(zero_heads),
                  layer.intermediate.register_forward_hook(zero_neurons)]
    with torch.inference_mode():
        logits = model(**inputs).logits
    for hook in hooks:
        hook.remove()
    return logits


def test_pruned_model_equals_the_masked_model_and_reloads_exactly(tiny_model_dir, tmp_path):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    inputs = encode(tiny_model_dir)
    expected = masked_logits(model, inputs, HEADS, NEURONS)
    cut(model, HEADS, NEURONS)
    layers = encoder_layers(model)
    assert [layer.attention.self.num_attention_heads for layer in layers] == [3, 4, 2, 3]
    assert [layer.attention.self.all_head_size for layer in layers] == [24, 32, 16, 24]  # no stale attributes
    assert [layer.intermediate.dense.out_features for layer in layers] == [64 - 22, 63, 24, 64]
    with torch.inference_mode():
        torch.testing.assert_close(model(**inputs).logits, expected, atol=1e-5, rtol=1e-5)

    save_model(model, AutoTokenizer.from_pretrained(str(tiny_model_dir)), tmp_path / "pruned", {})
    reloaded = load_model(tmp_path / "pruned")
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(**inputs).logits, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="trust_remote_code=True"):  # never silently wrong weights
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    with pytest.raises(RuntimeError, match="size mismatch"):
        BertForSequenceClassification.from_pretrained(tmp_path / "pruned")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned", trust_remote_code=True).eval()
    with torch.inference_mode():  # transformers alone, through the code the directory carries
        torch.testing.assert_close(plain(**inputs).logits, expected, atol=1e-5, rtol=1e-5)

    bundle = export(ExportConfig(model=str(tmp_path / "pruned"), output=str(tmp_path / "bundle"),
                                 data=DataConfig(limit=64, max_length=64),
                                 quantize="dynamic"))
    manifest = read_manifest(bundle)
    assert max(manifest["metrics"]["parity_max_abs_diff"].values()) <= 1e-4
    config = json.loads((bundle / "config.json").read_text())  # a plain graph: optimum reads the base architecture
    assert config["model_type"] == "bert" and "auto_map" not in config
    fused = manifest["metrics"]["candidates"]["fp32-fused"]
    assert "error" in fused or fused["accuracy"] == manifest["metrics"]["candidates"]["fp32"]["accuracy"]
    assert "error" not in manifest["metrics"]["candidates"]["int8-dynamic"]


@pytest.mark.parametrize("importance", ["taylor", "magnitude", "group"])
def test_a_useless_head_ranks_last(importance, tiny_model_dir, small_data):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    attention = encoder_layers(model)[1].attention
    size = attention.self.attention_head_size
    with torch.no_grad():  # head 2 of layer 1 contributes nothing
        for linear in (attention.self.query, attention.self.key, attention.self.value):
            linear.weight[2 * size : 3 * size] = 0
            linear.bias[2 * size : 3 * size] = 0
        attention.output.dense.weight[:, 2 * size : 3 * size] = 0
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0, 0])
    heads, neurons = IMPORTANCES[importance](model, [batch])
    assert int(torch.stack(heads).flatten().argmin()) == 1 * 4 + 2
    assert [len(layer) for layer in neurons] == [64] * 4


def test_choose_global_uniform_and_keep_one():
    scores = [torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.9, 0.8, 0.7, 0.6])]
    assert choose(scores, 0.5, "uniform") == ([[0, 1], [2, 3]], 0)
    assert choose(scores, 0.5, "global") == ([[0, 1, 2], []], 1)  # the four lowest are all layer 0's: it keeps its best
    assert choose(scores, 0.0, "global") == ([[], []], 0)


def test_prune_end_to_end_records_what_it_kept(tiny_model_dir, small_data, tmp_path, capsys):
    out = prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), data=small_data, heads=0.25,
                            ffn=0.5, examples=32))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert sum(stage["heads_kept"]) == 12 and sum(stage["ffn_kept"]) == 128
    assert stage["parameters"]["after"] < stage["parameters"]["before"]
    model = load_model(out)
    assert [layer.intermediate.dense.out_features for layer in encoder_layers(model)] == stage["ffn_kept"]
    again = prune(PruneConfig(model=str(out), output_dir=str(tmp_path / "q"), data=small_data, heads=0.9,
                              importance="magnitude"))  # a pruned model prunes further; every layer keeps a head
    assert json.loads((again / "tinyship_stage.json").read_text())["heads_kept"] == [1, 1, 1, 1]
    assert "would have lost every head: each keeps its most important one" in capsys.readouterr().out


def test_bad_pruning_inputs(tiny_model_dir, tmp_path):
    with pytest.raises(TinyshipError, match="heads 1.0: give the fraction to remove"):
        PruneConfig(heads=1.0)
    with pytest.raises(TinyshipError, match="ffn -0.1"):
        PruneConfig(ffn=-0.1)
    with pytest.raises(TinyshipError, match="unknown importance 'random'"):
        PruneConfig(importance="random")
    from transformers import MPNetConfig, MPNetForSequenceClassification

    MPNetForSequenceClassification(MPNetConfig(vocab_size=30527, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4,
                                               intermediate_size=64)).save_pretrained(tmp_path / "mpnet")
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(tmp_path / "mpnet")
    with pytest.raises(TinyshipError,
                       match="tinyship prunes bert, roberta, xlm-roberta, camembert, electra models, not mpnet"):
        prune(PruneConfig(model=str(tmp_path / "mpnet"), output_dir=str(tmp_path / "out"), importance="magnitude"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny_model_dir / "config.json").read_text())
    with pytest.raises(TinyshipError, match="no model|safetensors|tokenizer"):
        prune(PruneConfig(model=str(tmp_path / "empty"), output_dir=str(tmp_path / "out")))


def test_a_pruned_student_recovers_by_distillation_and_keeps_its_shape(tiny_model_dir, small_data, tmp_path):
    from tinyship.compress import DistillConfig, Phase, distill, weights_digest

    pruned = prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), data=small_data, heads=0.25,
                               ffn=0.5, importance="magnitude"))
    before = load_model(pruned)
    out = distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), student=str(pruned),
                                output_dir=str(tmp_path / "s"), data=small_data, batch_size=16,
                                phases=[Phase({"hidden": 1}, 1), Phase({"prediction": 1}, 1)]))
    after = load_model(out)
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(after) == shapes(before)  # recovery trains the slim layers, it does not regrow them
    assert any(not torch.equal(a, b) for a, b in zip(after.state_dict().values(), before.state_dict().values()))
    stage = json.loads((out / "tinyship_stage.json").read_text())  # what it was made from: a rerun's check
    assert (stage["student_sha256"] == weights_digest(pruned)
            and stage["teacher_sha256"] == weights_digest(tiny_model_dir))


def test_a_flops_target_removes_that_share_of_encoder_flops(tiny_model_dir, small_data, tmp_path):
    from tinyship.compress.pruning import encoder_flops

    out = prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), data=small_data, flops=0.5,
                            importance="magnitude", scope="uniform"))
    flops = json.loads((out / "tinyship_stage.json").read_text())["encoder_flops_128_tokens"]
    assert flops["after"] == pytest.approx(0.5 * flops["before"], rel=1e-9)  # uniform: exactly half of each layer
    assert encoder_flops(load_model(out)) == flops["after"]
    by_hand = 2 * 4 * (4 * 128 * 32 * 32 + 2 * 128 * 128 * 32 + 2 * 128 * 32 * 64)  # 4 layers, hidden 32, FFN 64
    assert flops["before"] == by_hand
    with pytest.raises(TinyshipError, match="give one target: flops, parameters, latency, or heads and ffn"):
        PruneConfig(flops=0.3, heads=0.2)


def test_a_parameters_target_removes_that_share_of_all_parameters(tiny_model_dir, small_data, tmp_path):
    from tinyship.compress.pruning import prunable_parameters

    # q, k, v with biases; output; FFN
    assert prunable_parameters(load_model(tiny_model_dir)) == 4 * (3 * 33 * 32 + 32 * 32 + (32 + 1 + 32) * 64)
    out = prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), data=small_data,
                            parameters=0.02, importance="magnitude", scope="uniform"))
    removed = json.loads((out / "tinyship_stage.json").read_text())["parameters"]
    assert (removed["before"] - removed["after"]) / removed["before"] == pytest.approx(0.02, abs=0.004)
    with pytest.raises(TinyshipError, match="would take every head and neuron: heads and neurons hold"):
        prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "q"), data=small_data, parameters=0.5,
                          importance="magnitude"))


def test_a_latency_target_is_met_as_measured(tiny_model_dir, small_data, tmp_path, monkeypatch):
    from tinyship.compress import pruning

    full = pruning.encoder_flops(load_model(tiny_model_dir))
    # a deterministic stand-in for the clock: a fixed cost plus one proportional to the encoder's FLOPs
    monkeypatch.setattr(pruning, "_latency_ms", lambda model, tokens: 1.0 + pruning.encoder_flops(model) / full)
    out = prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), data=small_data, latency=0.25,
                            importance="magnitude"))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    fraction = stage["latency_128_tokens"]["latency_fraction_removed"]
    assert 0.5 <= fraction <= 0.5 + 1 / 32  # removing half the FLOPs removes a quarter of 1 + 1
    assert sum(stage["ffn_kept"]) == 4 * 64 - round(fraction * 4 * 64)
    with pytest.raises(TinyshipError, match="cannot take 60% of the latency"):
        prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "q"), data=small_data, latency=0.6,
                          importance="magnitude"))
    with pytest.raises(TinyshipError, match="a parameters or latency target is reached in one round"):
        PruneConfig(latency=0.2, steps=3)
