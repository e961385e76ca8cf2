import argparse
import json

import pytest

from tinyship.compress import Phase
from tinyship.compress.config import parse_phase
from tinyship.runtime.cli import main


def test_phases_are_written_loss_weight_epochs():
    assert (parse_phase("embedding,hidden,attention:2")
            == Phase({"embedding": 1.0, "hidden": 1.0, "attention": 1.0}, 2.0))
    assert parse_phase("prediction=1,labels=0.5:3") == Phase({"prediction": 1.0, "labels": 0.5}, 3.0)
    with pytest.raises(argparse.ArgumentTypeError, match="LOSS\\[=WEIGHT\\],...:EPOCHS"):
        parse_phase("prediction")


def test_distill_help_names_the_default_method(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "embedding,hidden,attention:2 then prediction:3" in text and "tinybert-4" in text


def test_distill_errors_are_one_line(tiny_model_dir, tmp_path, capsys):
    assert main(["distill", "--teacher", str(tiny_model_dir), "--out", str(tmp_path / "s"), "--phase", "hiden:1"]) == 2
    assert "tinyship distill: error: unknown loss 'hiden'" in capsys.readouterr().err
    assert main(["distill", "--stage", "general", "--corpus", str(tmp_path / "none.txt"), "--out", str(tmp_path / "g"),
                 "--teacher", str(tiny_model_dir)]) == 2
    assert f"corpus '{tmp_path / 'none.txt'}' not found: give a text file" in capsys.readouterr().err


def test_augment_writes_a_training_file(tmp_path, capsys):
    train = tmp_path / "train.csv"
    train.write_text("text,label\ngood film,pos\nbad film,neg\n")
    vectors = tmp_path / "v.txt"
    vectors.write_text("good 1 0\ngreat 1 0.1\nbad -1 0\nfilm 0 1\nmovie 0.1 1\n")
    out = tmp_path / "aug.jsonl"
    assert main(["augment", "--train-file", str(train), "--validation-file", str(train), "--vectors", str(vectors),
                 "--copies", "2", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and {r["label"] for r in rows} == {"pos", "neg"}
    assert main(["augment", "--train-file", str(train), "--out", str(out)]) == 2
    assert "already exists: pass --force" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["prune", "m", "--flops", "2"], "argument --flops: 2 is out of range: give 0 to 1"),
    (["prune", "m", "--heads", "-0.1"], "argument --heads: -0.1 is out of range: give 0 to 1"),
    (["distill", "--temperature", "0"], "argument --temperature: 0 is out of range"),
    (["distill", "--batch-size", "0"], "argument --batch-size: 0 is out of range: give 1 or more"),
    (["finetune", "--epochs", "nan"], "argument --epochs: nan is out of range"),
    (["augment", "--probability", "1.5"], "argument --probability: 1.5 is out of range: give 0 to 1"),
    (["export", "m", "--threads", "100000"], "argument --threads: 100000 is out of range: give 1 to"),
    (["export", "m", "--calibration-examples", "many"],
     "argument --calibration-examples: 'many' is not a whole number"),
    (["compress", "--prune-flops", "abc"], "argument --prune-flops: 'abc' is not a number: give 0 to 1"),
    (["compress", "--student-layers", "-3"], "argument --student-layers: -3 is out of range: give 1 or more"),
    (["compress", "--min-steps", "-1"], "argument --min-steps: -1 is out of range: give 0 or more"),
])
def test_stage_numbers_are_checked_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and message in err and "Traceback" not in err
