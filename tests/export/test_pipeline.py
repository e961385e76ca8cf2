import argparse
import json
import random
import shutil
from dataclasses import replace

import pytest
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

from tinyship.compress import DistillConfig, FinetuneConfig, Phase
from tinyship.compress.config import Student
from tinyship.export import CompressConfig, ExportConfig, compress, load_recipe
from tinyship.export.cli import _configure_compress, compress_config_from_args
from tinyship.export.pipeline import stages
from tinyship.runtime import load
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import main
from tinyship.runtime.data import DataConfig, load_examples
from tinyship.runtime.errors import TinyshipError


def test_pipeline_writes_bundle_and_report_and_reuses_finished_stages(tiny_model_dir, small_data, tmp_path, capsys):
    config = CompressConfig(
        output_dir=str(tmp_path / "run"),
        data=small_data,
        allow_weak_teacher=True,  # a tiny random model learns little from 64 examples
        finetune=FinetuneConfig(min_steps=0, model=str(tiny_model_dir), epochs=1, batch_size=16),
        distill=DistillConfig(min_steps=0, phases=[Phase({"hidden": 1}, 1), Phase({"prediction": 1}, 1)],
                              batch_size=16),
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
    assert f"Shipped: {shipped}: objective latency, the smallest file among the candidates as fast as" in markdown

    capsys.readouterr()
    compress(config)  # finished stages are reused, not retrained
    out = capsys.readouterr().out
    assert "teacher: reusing" in out and "student: reusing" in out
    shutil.copytree(tmp_path / "run" / "student", tmp_path / "moved" / "student")  # reused wherever it lies
    compress(CompressConfig(**{**config.__dict__, "output_dir": str(tmp_path / "moved"),
                               "teacher": str(tmp_path / "run" / "teacher")}))
    assert f"student: reusing {tmp_path / 'moved' / 'student'}" in capsys.readouterr().out
    stage_file = tmp_path / "run" / "student" / "tinyship_stage.json"  # as a tinyship without teacher_precision wrote
    stage = json.loads(stage_file.read_text())
    del stage["config"]["teacher_precision"]
    stage_file.write_text(json.dumps(stage))
    compress(config)  # a setting added since, at its default, is the same
    assert "student: reusing" in capsys.readouterr().out
    with pytest.raises(TinyshipError, match="made with other settings"):
        compress(replace(config, distill=replace(config.distill, teacher_precision="fp32")))
    changed = CompressConfig(**{**config.__dict__, "distill": DistillConfig(min_steps=0, batch_size=8)})
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
    recipe.write_text("output_dir: runs/x\ndata: {dataset: imdb, labels: [neg, pos]}\n"
                      "distill: {layers: [2, 4], phases: [{losses: {hidden: 1, attention: 0.5}, epochs: 1}]}\n")
    config = load_recipe(recipe)
    assert config.data.dataset == "imdb" and config.data.labels == ("neg", "pos")
    assert config.distill.layers == [2, 4] and config.distill.phases == [Phase({"hidden": 1, "attention": 0.5}, 1)]

    import argparse

    parser = argparse.ArgumentParser()
    _configure_compress(parser)
    args = parser.parse_args(["--recipe", str(recipe), "--distill-phase", "prediction:3", "--limit", "10"])
    config = compress_config_from_args(args)
    assert (config.output_dir == "runs/x" and config.distill.phases == [Phase({"prediction": 1}, 3)]
            and config.distill.layers == [2, 4])
    assert config.data.dataset == "imdb" and config.data.limit == 10
    assert config.distill.transfer is None
    config = compress_config_from_args(parser.parse_args(["--transfer", "imdb", "--transfer-examples", "500"]))
    assert config.distill.transfer == "imdb" and config.distill.transfer_examples == 500


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
        output_dir=str(tmp_path / "run"), teacher=str(tiny_model_dir), data=small_data, allow_weak_teacher=True,
        distill=DistillConfig(min_steps=0,
                              phases=[Phase({"hidden": 1, "attention": 1}, 1), Phase({"prediction": 1}, 1)],
                              batch_size=16),
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
    assert (prune_rounds(PruneConfig()) == []
            and prune_rounds(PruneConfig(heads=0.5)) == [{"heads": 0.5, "ffn": 0.0, "flops": None}])
    assert prune_rounds(PruneConfig(parameters=0.2)) == [{}]
    with pytest.raises(TinyshipError, match="steps 0"):
        PruneConfig(steps=0)
    with pytest.raises(TinyshipError, match="a parameters or latency target is reached in one round"):
        PruneConfig(parameters=0.2, steps=2)


def compress_args(*flags: str) -> CompressConfig:
    parser = argparse.ArgumentParser()
    _configure_compress(parser)
    return compress_config_from_args(parser.parse_args(list(flags)))


STUDENTS = {  # every way `tinyship compress` names a student, and the student the first distillation gets
    "directory": (["--student", "{dir}"], ("{dir}", None)),
    "directory cut to a count": (["--student", "{dir}", "--student-layers", "2"], ("{dir}", 2)),
    "directory cut to its layers": (["--student", "{dir}", "--layers", "1,3"], ("{dir}", (1, 3))),
    "shape": (["--student", "tinybert-4"], ("tinybert-4", None)),
    "layer count": (["--student-layers", "1"], (None, 1)),
    "kept layers": (["--layers", "1,3"], (None, (1, 3))),
    "default": ([], (None, None)),
}
PRUNING = {  # flag (or recipe) -> the number of prune-then-recover rounds
    "none": ([], "", 0),
    "flops": (["--prune-flops", "0.3"], "", 1),
    "flops in rounds": (["--prune-flops", "0.3", "--prune-steps", "2"], "", 2),
    "heads and ffn": ([], "prune: {heads: 0.25, ffn: 0.5}", 1),
    "parameters": ([], "prune: {parameters: 0.2}", 1),
    "latency": ([], "prune: {latency: 0.2}", 1),
}


@pytest.mark.parametrize("vocabulary", [False, True], ids=["", "vocabulary"])
@pytest.mark.parametrize("student", STUDENTS)
@pytest.mark.parametrize("pruning", PRUNING)
def test_every_student_and_pruning_choice_gives_valid_stage_configs(student, pruning, vocabulary, tiny_model_dir,
                                                                    tmp_path):
    flags, (model, layers) = STUDENTS[student]
    student_flags = [f.format(dir=tiny_model_dir) for f in flags]
    first = Student(model and model.format(dir=tiny_model_dir), layers)
    prune_flags, recipe, rounds = PRUNING[pruning]
    (tmp_path / "recipe.yaml").write_text(recipe)
    out = tmp_path / "run"
    config = compress_args("--recipe", str(tmp_path / "recipe.yaml"), "--out", str(out), *student_flags, *prune_flags,
                           *(["--prune-vocabulary"] if vocabulary else []))
    plan = stages(config)  # builds (and so validates) every stage's config

    suffixes = [f"-{k}" for k in range(1, rounds + 1)] if rounds > 1 else [""] * rounds
    assert [name for name, _ in plan] == ["teacher", "student",
                                          *(f"{s}{k}" for k in suffixes for s in ("pruned", "recovered")),
                                          *(["vocabulary"] if vocabulary else []), "bundle"]
    stage = dict(plan)
    assert stage["student"].spec == first
    model = str(out / "student")
    for k in suffixes:
        pruned, recovered = stage[f"pruned{k}"], stage[f"recovered{k}"]
        assert pruned.model == model and pruned.output_dir == str(out / f"pruned{k}")
        assert recovered.spec == Student(pruned.output_dir)  # whole: nothing of the first student's cut is left
        # each student layer learns from the same teacher layer: the ones it was cut from, else g(m) (None)
        cut_from = list(first.layers) if first.model is None and isinstance(first.layers, tuple) else None
        assert recovered.layer_map == cut_from and recovered.teacher == str(out / "teacher")
        assert all("attention" not in p.losses for p in recovered.phases)
        model = recovered.output_dir
    assert model == str(out / (f"recovered{suffixes[-1]}" if rounds else "student"))
    if vocabulary:  # cut last, from the final student, and exported
        assert stage["vocabulary"].model == model and stage["vocabulary"].data == config.data
        model = stage["vocabulary"].output_dir
    assert stage["bundle"].model == model


def test_student_and_prune_flags_replace_the_recipes_choice(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("distill: {student_layers: 2}\nprune: {heads: 0.5}\nallow_weak_teacher: true\n")
    config = compress_args("--recipe", str(recipe), "--layers", "1,3", "--prune-flops", "0.3")
    assert (config.distill.student_layers, config.distill.layers) == (None, [1, 3])
    assert (config.prune.heads, config.prune.flops) == (0.0, 0.3) and config.allow_weak_teacher
    assert compress_args("--recipe", str(recipe)).distill.student_layers == 2
    assert compress_args("--allow-weak-teacher", "--min-steps", "7").distill.min_steps == 7
    with pytest.raises(TinyshipError, match="give one of: a student"):
        compress_args("--student-layers", "2", "--layers", "1,3")


def noise_reviews(path, rows=300):
    """Three labels, two thirds one of them, on texts drawn from one word list whatever the label: nothing to learn."""
    rng = random.Random(0)
    words = ["film", "plot", "actor", "scene", "story", "music", "long", "slow", "the", "a", "was", "and", "it", "very"]
    labels = ["great"] * (rows * 2 // 3) + ["fine", "poor"] * (rows // 6)
    rng.shuffle(labels)
    lines = [" ".join(rng.choice(words) for _ in range(30)) + f",{label}" for label in labels]
    path.write_text("text,label\n" + "\n".join(lines) + "\n")
    return path


def test_a_weak_teacher_stops_the_run_unless_allowed_then_the_report_shows_the_baseline(tiny_model_dir, tmp_path,
                                                                                        capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("finetune: {epochs: 1, batch_size: 16}\ndata: {max_length: 32}\nprune: {importance: magnitude}\n"
                      "distill: {batch_size: 16, phases: [{losses: {hidden: 1}, epochs: 1}, "
                      "{losses: {prediction: 1}, epochs: 1}]}\n"
                      "export: {quantize: none, optimize: false}\n")
    reviews = noise_reviews(tmp_path / "reviews.csv")
    out = tmp_path / "run"
    args = ["compress", "--recipe", str(recipe), "--out", str(out), "--base-model", str(tiny_model_dir), "--train-file",
            str(reviews), "--student-layers", "1", "--prune-flops", "0.3", "--min-steps", "0"]
    assert main(args) == 2
    error = " ".join(capsys.readouterr().err.split())
    assert "is not clearly better than always predicting the most frequent label: accuracy" in error
    assert "macro-F1" in error and "more fine-tuning epochs" in error and "--allow-weak-teacher" in error
    assert (out / "teacher").is_dir() and not (out / "student").exists()  # stopped right after fine-tuning

    assert main([*args, "--allow-weak-teacher"]) == 0  # the teacher is reused, and the run goes on to a bundle
    printed = capsys.readouterr().out
    assert "teacher: reusing" in printed and "warning: the teacher is not clearly better" in printed
    assert "student on validation: accuracy" in printed and "macro-F1" in printed
    bundle = out / "bundle"
    assert read_manifest(bundle)["source_model"].endswith("recovered") and load(bundle)(["a long film"])[0]["label"]
    report = json.loads((out / "report.json").read_text())
    test_labels = load_examples(DataConfig(train_file=str(reviews)), "test", ["fine", "great", "poor"]).labels
    assert report["majority_baseline"]["label"] == "great"
    assert report["majority_baseline"]["accuracy"] == pytest.approx(test_labels.count(1) / len(test_labels))
    assert len(report["warnings"]) == 1 and "majority-class baseline" in report["warnings"][0]
    assert all(0 <= row["macro_f1"] <= 1 for row in report["rows"])
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("**Warning:** the teacher is not clearly better")
    assert "| model | accuracy | macro-F1 | kept |" in markdown
    assert "always predicting the most frequent label ('great') scores accuracy" in markdown

    assert main([*args, "--allow-weak-teacher"]) == 0  # a rerun reuses every stage, pruned and recovered included
    printed = capsys.readouterr().out
    assert all(f"{name}: reusing" in printed for name in ("teacher", "student", "pruned", "recovered"))

    assert main([*args, "--allow-weak-teacher", "--prune-vocabulary"]) == 0  # the final student's vocabulary cut last
    manifest = read_manifest(bundle)
    assert manifest["source_model"].endswith("vocabulary") and load(bundle)(["a long film"])[0]["label"]
    kept = manifest["vocabulary"]["kept"]
    assert kept < manifest["vocabulary"]["before"] and 0 <= manifest["vocabulary"]["pieces"]["changed_rate"] < 1
    assert Tokenizer.from_file(str(bundle / "tokenizer.json")).get_vocab_size() == kept


def test_edge_targets_reach_the_export_stage_from_flags_and_recipes(tmp_path):
    (tmp_path / "recipe.yaml").write_text("export: {targets: [mobile]}\n")
    for config in (compress_args("--target", "mobile"), compress_args("--recipe", str(tmp_path / "recipe.yaml"))):
        assert dict(stages(config))["bundle"].targets == ("mobile",)
    with pytest.raises(SystemExit):
        compress_args("--target")
    with pytest.raises(TinyshipError, match="unknown target 'watch': use one of mobile"):
        compress_args("--target", "watch")
