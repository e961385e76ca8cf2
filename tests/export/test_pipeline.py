import json

import pytest

from tinyship.compress import DistillConfig, FinetuneConfig
from tinyship.export import CompressConfig, compress, load_recipe
from tinyship.export.cli import _configure_compress, compress_config_from_args
from tinyship.runtime import load
from tinyship.runtime.errors import TinyshipError


def test_pipeline_writes_bundle_and_report_and_reuses_finished_stages(tiny_model_dir, small_data, tmp_path, capsys):
    config = CompressConfig(
        output_dir=str(tmp_path / "run"),
        data=small_data,
        finetune=FinetuneConfig(model=str(tiny_model_dir), epochs=1, batch_size=16),
        distill=DistillConfig(epochs=1, batch_size=16),
    )
    bundle = compress(config)
    assert load(bundle)(["a fine film"])[0]["label"] in ("negative", "positive")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    names = [row["model"] for row in report["rows"]]
    assert names == ["teacher (PyTorch fp32)", "student (PyTorch fp32)", "student (ONNX fp32)", "student (ONNX int8 dynamic)"]
    teacher, student = report["rows"][0], report["rows"][1]
    assert teacher["parameters"] > student["parameters"] and teacher["speedup"] == 1.0
    assert all(0 <= row["accuracy"] <= 1 and row["median_ms"] <= row["p99_ms"] for row in report["rows"])
    assert report["latency"]["threads"] == 1 and report["latency"]["batch_size"] == 1
    assert report["machine"]["cpu"] and isinstance(report["machine"]["flags"], list)
    assert (tmp_path / "run" / "report.md").read_text().count("| student") == 3

    compress(config)  # finished stages are reused, not retrained
    assert "teacher: reusing" in capsys.readouterr().out
    changed = CompressConfig(**{**config.__dict__, "distill": DistillConfig(epochs=2, batch_size=16)})
    with pytest.raises(TinyshipError, match="made with other settings"):
        compress(changed)


def test_recipe_and_flags(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("output_dir: runs/x\ndata: {dataset: imdb, labels: [neg, pos]}\ndistill: {layers: [2, 4], epochs: 1}\n")
    config = load_recipe(recipe)
    assert config.data.dataset == "imdb" and config.data.labels == ("neg", "pos")
    assert config.distill.layers == [2, 4] and config.distill.epochs == 1

    import argparse

    parser = argparse.ArgumentParser()
    _configure_compress(parser)
    args = parser.parse_args(["--recipe", str(recipe), "--distill-epochs", "3", "--limit", "10"])
    config = compress_config_from_args(args)
    assert config.output_dir == "runs/x" and config.distill.epochs == 3 and config.distill.layers == [2, 4]
    assert config.data.dataset == "imdb" and config.data.limit == 10


@pytest.mark.parametrize(
    "text, message",
    [
        ("distill: {epoch: 3}", "unknown key 'epoch'; known keys: .*epochs"),
        ("distill: {output_dir: elsewhere}", "unknown key 'output_dir'"),
        ("export: {model: elsewhere}", "unknown key 'model'"),
        ("distill: 3", "expected a mapping"),
        ("data: [", "not valid YAML"),
    ],
)
def test_bad_recipes_name_the_problem(tmp_path, text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(TinyshipError, match=message):
        load_recipe(recipe)
