import json

import pytest
from transformers import AutoModelForSequenceClassification

from tinyship.compress import DistillConfig, FinetuneConfig, Phase
from tinyship.export import CompressConfig, ExportConfig, compress, load_recipe
from tinyship.export.cli import _configure_compress, compress_config_from_args
from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.errors import TinyshipError


def test_pipeline_writes_bundle_and_report_and_reuses_finished_stages(tiny_model_dir, small_data, tmp_path, capsys):
    config = CompressConfig(
        output_dir=str(tmp_path / "run"),
        data=small_data,
        finetune=FinetuneConfig(model=str(tiny_model_dir), epochs=1, batch_size=16),
        distill=DistillConfig(phases=[Phase({"hidden": 1}, 1), Phase({"prediction": 1}, 1)], batch_size=16),
    )
    bundle = compress(config)
    assert load(bundle)(["a fine film"])[0]["label"] in ("negative", "positive")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    shipped = read_manifest(bundle)["variant"]
    names = [row["model"] for row in report["rows"]]
    assert names[:3] == ["teacher (PyTorch fp32)", "student (PyTorch fp32)", "student (ONNX fp32)"]
    assert names[3:] == ([] if shipped == "fp32" else [f"student (ONNX {shipped})"])
    teacher, student, onnx_fp32, bundled = report["rows"][0], report["rows"][1], report["rows"][2], report["rows"][-1]
    assert teacher["parameters"] > student["parameters"] == onnx_fp32["parameters"]
    assert student["accuracy"] == pytest.approx(onnx_fp32["accuracy"], abs=2 / report["test_examples"])
    assert bundled["size_bytes"] == (bundle / "model.onnx").stat().st_size
    assert bundled["size_reduction"] == pytest.approx(teacher["size_bytes"] / bundled["size_bytes"])
    assert bundled["speedup"] == pytest.approx(teacher["median_ms"] / bundled["median_ms"])
    assert report["latency"]["threads"] == 1 and report["latency"]["batch_size"] == 1
    assert report["machine"]["cpu"] and isinstance(report["machine"]["flags"], list)
    assert report["export_gate"]["gate"]["winner"] == shipped
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert markdown.count("| student") == len(names) - 1 and "| int8-static-entropy | int8 |" in markdown
    assert f"Shipped: {shipped}: the fastest within the budget" in markdown

    capsys.readouterr()
    compress(config)  # finished stages are reused, not retrained
    out = capsys.readouterr().out
    assert "teacher: reusing" in out and "student: reusing" in out
    changed = CompressConfig(**{**config.__dict__, "distill": DistillConfig(batch_size=8)})
    with pytest.raises(TinyshipError, match="made with other settings"):
        compress(changed)

    teacher_dir = tmp_path / "run" / "teacher"  # a retrained teacher makes the old student stale
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    model.classifier.bias.data += 1
    model.save_pretrained(teacher_dir)
    with pytest.raises(TinyshipError, match="another teacher"):
        compress(config)


def test_bad_quantize_is_refused_before_any_training(tmp_path):
    with pytest.raises(TinyshipError, match="unknown quantize 'int3'"):
        compress(CompressConfig(output_dir=str(tmp_path / "run"), export=ExportConfig(quantize="int3")))
    assert not (tmp_path / "run" / "teacher").exists()
    with pytest.raises(TinyshipError, match="no model directory at"):
        compress(CompressConfig(output_dir=str(tmp_path / "run"), teacher=str(tmp_path / "missing")))


def test_recipe_and_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("output_dir: runs/x\ndata: {dataset: imdb, labels: [neg, pos]}\ndistill: {layers: [2, 4], phases: [{losses: {hidden: 1, attention: 0.5}, epochs: 1}]}\n")
    config = load_recipe(recipe)
    assert config.data.dataset == "imdb" and config.data.labels == ("neg", "pos")
    assert config.distill.layers == [2, 4] and config.distill.phases == [Phase({"hidden": 1, "attention": 0.5}, 1)]

    import argparse

    parser = argparse.ArgumentParser()
    _configure_compress(parser)
    args = parser.parse_args(["--recipe", str(recipe), "--distill-phase", "prediction:3", "--limit", "10"])
    config = compress_config_from_args(args)
    assert config.output_dir == "runs/x" and config.distill.phases == [Phase({"prediction": 1}, 3)] and config.distill.layers == [2, 4]
    assert config.data.dataset == "imdb" and config.data.limit == 10


@pytest.mark.parametrize(
    "text, message",
    [
        ("distill: {epoch: 3}", "unknown key 'epoch'; known keys: .*phases"),
        ("distill: {phases: [{losses: {hidden: 1}, epoch: 1}]}", r"distill, phases\[0\]: unknown key 'epoch'"),
        ("distill: {phases: [{losses: {hidden: one}, epochs: 1}]}", "losses is .*; expected a mapping of str to float"),
        ("distill: {output_dir: elsewhere}", "unknown key 'output_dir'"),
        ("export: {model: elsewhere}", "unknown key 'model'"),
        ("distill: 3", "expected a mapping"),
        ("data: [", "not valid YAML"),
        ("data: {labels: 'neg,pos'}", "data: labels is 'neg,pos'; expected a list of str or null"),
        ("distill: {layers: 3}", "layers is 3; expected a list of int or null"),
        ("finetune: {epochs: three}", "epochs is 'three'; expected float"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(TinyshipError, match=message):
        load_recipe(recipe)


def test_pipeline_prunes_and_recovers_when_asked(tiny_model_dir, small_data, tmp_path):
    from tinyship.compress import PruneConfig, load_model
    from tinyship.compress.states import encoder_layers

    config = CompressConfig(
        output_dir=str(tmp_path / "run"), teacher=str(tiny_model_dir), data=small_data,
        distill=DistillConfig(phases=[Phase({"hidden": 1, "attention": 1}, 1), Phase({"prediction": 1}, 1)], batch_size=16),
        prune=PruneConfig(flops=0.5, importance="magnitude"), export=ExportConfig(quantize="dynamic", optimize=False),
    )
    bundle = compress(config)
    recovered = load_model(tmp_path / "run" / "recovered")
    assert sum(layer.intermediate.dense.out_features for layer in encoder_layers(recovered)) == 64  # half of 2 x 64
    stage = json.loads((tmp_path / "run" / "recovered" / "tinyship_stage.json").read_text())
    assert [list(p["losses"]) for p in stage["config"]["phases"]] == [["hidden"], ["prediction"]]  # no attention loss
    assert read_manifest(bundle)["source_model"].endswith("recovered")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["rows"][1]["parameters"] == sum(p.numel() for p in recovered.parameters())


def test_prune_flag_and_recipe(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    _configure_compress(parser)
    prune = compress_config_from_args(parser.parse_args(["--prune-flops", "0.4", "--prune-steps", "2"])).prune
    assert prune.fractions == (0.4, 0.4) and prune.steps == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prune: {heads: 0.2, ffn: 0.3, scope: uniform}\n")
    assert load_recipe(recipe).prune.fractions == (0.2, 0.3)
    recipe.write_text("prune: {model: elsewhere}\n")
    with pytest.raises(TinyshipError, match="unknown key 'model'"):
        load_recipe(recipe)


def test_iterative_pruning_reaches_the_target_in_rounds():
    from tinyship.compress import PruneConfig
    from tinyship.export.pipeline import prune_rounds

    rounds = prune_rounds(PruneConfig(flops=0.64, steps=2))
    assert len(rounds) == 2 and rounds[0] == {"heads": pytest.approx(0.4), "ffn": pytest.approx(0.4), "flops": None}
    assert prune_rounds(PruneConfig()) == [] and prune_rounds(PruneConfig(heads=0.5)) == [{"heads": 0.5, "ffn": 0.0, "flops": None}]
    assert prune_rounds(PruneConfig(parameters=0.2)) == [{}]
    with pytest.raises(TinyshipError, match="steps 0"):
        PruneConfig(steps=0)
    with pytest.raises(TinyshipError, match="a parameters or latency target is reached in one round"):
        PruneConfig(parameters=0.2, steps=2)
