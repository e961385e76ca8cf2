import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, TrainerCallback

from tinyship.compress import FinetuneConfig, finetune
from tinyship.runtime.errors import TinyshipError


def test_finetune_saves_a_classifier_with_label_names(tiny_model_dir, small_data, tmp_path):
    out = finetune(FinetuneConfig(min_steps=0, model=str(tiny_model_dir), output_dir=str(tmp_path / "teacher"),
                                  data=small_data, epochs=1, batch_size=16))
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "special_tokens_map.json", "tinyship_stage.json", "tokenizer.json",
         "tokenizer_config.json", "vocab.txt"]
    )


def test_finetune_is_reproducible_from_a_headless_model(tiny_model_dir, small_data, tmp_path):
    from transformers import BertModel

    BertModel.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "base")  # no classifier: a fresh head
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (tmp_path / "base" / name).write_bytes((tiny_model_dir / name).read_bytes())
    runs = [
        load_file(finetune(FinetuneConfig(min_steps=0, model=str(tmp_path / "base"),
                                          output_dir=str(tmp_path / f"run{i}"), data=small_data, epochs=1,
                                          batch_size=16)) / "model.safetensors")
        for i in range(2)
    ]
    assert all(torch.equal(runs[0][name], runs[1][name]) for name in runs[0])


class Interrupt(TrainerCallback):
    """Stop training as a kill would, after a given step (after that step's checkpoint, if any)."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            raise KeyboardInterrupt


def run(tiny_model_dir, small_data, out, callbacks=(), **settings):
    config = FinetuneConfig(model=str(tiny_model_dir), output_dir=str(out), data=small_data,
                            **{"epochs": 2, "batch_size": 16, "save_steps": 3, "min_steps": 0, **settings})
    return finetune(config, callbacks=list(callbacks))


def test_killed_run_resumes_to_the_same_weights(tiny_model_dir, small_data, tmp_path):
    reference = load_file(run(tiny_model_dir, small_data, tmp_path / "straight") / "model.safetensors")
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model_dir, small_data, tmp_path / "resumed", [Interrupt(step=3)])  # mid-epoch 1 of 2
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.checkpoints" / "checkpoint-3").is_dir()
    resumed = load_file(run(tiny_model_dir, small_data, tmp_path / "resumed") / "model.safetensors")
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6, msg=name)


def test_existing_output_is_refused_without_force(tiny_model_dir, small_data, tmp_path):
    (tmp_path / "teacher").mkdir()
    with pytest.raises(TinyshipError, match="already exists: pass --force"):
        finetune(FinetuneConfig(min_steps=0, model=str(tiny_model_dir), output_dir=str(tmp_path / "teacher"),
                                data=small_data))


def test_checkpoints_of_other_settings_are_not_resumed(tiny_model_dir, small_data, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model_dir, small_data, tmp_path / "out", [Interrupt(step=3)])
    with pytest.raises(TinyshipError, match="interrupted run with other settings.*--force"):
        run(tiny_model_dir, small_data, tmp_path / "out", learning_rate=1e-3)
    assert run(tiny_model_dir, small_data, tmp_path / "out", learning_rate=1e-3, force=True).is_dir()


class Evaluations(TrainerCallback):
    """The validation accuracy at each evaluation, by step."""

    def __init__(self):
        self.accuracy = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.accuracy.setdefault(state.global_step, metrics["eval_accuracy"])


def test_small_data_trains_the_minimum_steps_and_keeps_the_best_checkpoint(tiny_model_dir, small_data, tmp_path,
                                                                           capsys):
    seen = Evaluations()
    out = run(tiny_model_dir, small_data, tmp_path / "teacher", [seen], epochs=1, min_steps=14, save_steps=100,
              learning_rate=1e-2)
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert "fewer than the minimum of 14 optimiser steps: training 4 epochs (16 steps" in capsys.readouterr().out
    assert stage["epochs"] == 4 and stage["steps"] == 16  # 64 examples in batches of 16: 4 steps an epoch
    assert sorted(seen.accuracy) == [4, 8, 12, 16]  # every epoch (sooner than save_steps), the last step included
    best = max(seen.accuracy, key=lambda step: (seen.accuracy[step], -step))
    assert seen.accuracy[best] > seen.accuracy[16]  # this run's last weights are not its best...
    assert stage["best_checkpoint_step"] == best  # ...and the saved model is the best checkpoint's
    assert stage["validation"]["eval_accuracy"] == pytest.approx(seen.accuracy[best])
    assert set(stage["validation"]) >= {"eval_macro_f1", "eval_majority_baseline", "eval_majority_macro_f1"}
