import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizerFast,
)

from tests.compress.test_finetuning import Interrupt
from tests.compress.test_students import make_other_student
from tinyship.compress import (
    LOSSES,
    DistillConfig,
    Phase,
    distill,
    student_from_teacher,
    uniform_layers,
    weights_digest,
)
from tinyship.compress.distillation import DistillationTrainer, attention_distance, teacher_precision
from tinyship.compress.states import forward_states
from tinyship.runtime.data import DataConfig, Examples, load_examples
from tinyship.runtime.errors import TinyshipError

INTERMEDIATE = {"embedding": 1.0, "hidden": 1.0, "attention": 1.0}


def test_uniform_mapping_is_tinybert_g():
    assert uniform_layers(6, 3) == [2, 4, 6]
    assert uniform_layers(12, 4) == [3, 6, 9, 12]
    assert uniform_layers(4, 4) == [1, 2, 3, 4]
    with pytest.raises(TinyshipError, match="use 1 to 6"):
        uniform_layers(6, 7)


def test_student_keeps_the_chosen_teacher_layers(tiny_model_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    student = student_from_teacher(teacher, [2, 4])
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    for s, t in zip(student.bert.encoder.layer, [teacher.bert.encoder.layer[1], teacher.bert.encoder.layer[3]]):
        for (name, a), (_, b) in zip(s.state_dict().items(), t.state_dict().items()):
            assert torch.equal(a, b), name
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert student.classifier.weight.data_ptr() != teacher.classifier.weight.data_ptr()  # a copy, not shared


def test_student_with_every_layer_computes_the_teacher(tiny_model_dir):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    student = student_from_teacher(teacher, [1, 2, 3, 4]).eval()
    ids = torch.tensor([[101, 2307, 2143, 102]])
    torch.testing.assert_close(student(input_ids=ids).logits, teacher(input_ids=ids).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("layers", [[], [0, 2], [2, 2], [5]])
def test_bad_layers_are_refused(tiny_model_dir, small_data, tmp_path, layers):
    with pytest.raises(TinyshipError, match="distinct teacher layer numbers from 1 to 4"):
        distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), output_dir=str(tmp_path / "s"), data=small_data,
                              layers=layers))


def test_a_bad_layer_map_is_refused(tiny_model_dir, small_data, tmp_path):
    with pytest.raises(TinyshipError, match=r"layer map \[1, 5\]: give one teacher layer \(1 to 4\)"):
        distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), output_dir=str(tmp_path / "s"), data=small_data,
                              layer_map=[1, 5]))


def soft_cross_entropy(student, teacher, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return LOSSES["prediction"](student.eval()(**batch).logits, teacher.eval()(**batch).logits).item()


def hidden_distance(student, teacher, tokenizer, texts, layer_map):
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    with torch.inference_mode():
        s, t = forward_states(student.eval(), batch), forward_states(teacher.eval(), batch)
    return sum(LOSSES["hidden"](s.hidden[m], t.hidden[n], batch["attention_mask"]).item()
               for m, n in enumerate(layer_map, 1))


@pytest.fixture(scope="module")
def wide_teacher(tiny_model_factory, tmp_path_factory):
    return tiny_model_factory(tmp_path_factory.mktemp("wide") / "teacher", initializer_range=0.5)  # layers matter


def test_task_distillation_runs_intermediate_then_prediction_phases(wide_teacher, small_data, tmp_path):
    out = tmp_path / "student"
    config = DistillConfig(min_steps=0, teacher=str(wide_teacher), output_dir=str(out), data=small_data, batch_size=16,
                           learning_rate=1e-3, phases=[Phase(INTERMEDIATE, 3), Phase({"prediction": 1}, 3)])
    assert distill(config) == out
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "negative", 1: "positive"}
    assert (out / "tokenizer.json").is_file() and not (tmp_path / "student.checkpoints").exists()
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["teacher_sha256"] == weights_digest(wide_teacher) and stage["layer_map"] == [2, 4]
    assert [p["phase"] for p in stage["phases"]] == [1, 2] and stage["tokenizers"] == "same"
    assert 0 <= stage["validation"]["eval_accuracy"] <= 1

    teacher = AutoModelForSequenceClassification.from_pretrained(wide_teacher)
    initial = student_from_teacher(teacher, [2, 4])
    texts = load_examples(small_data, "train").texts
    tokenizer = AutoTokenizer.from_pretrained(str(wide_teacher))
    # soft cross-entropy = entropy(teacher) + KL(teacher || student): lower means closer to the teacher
    before, after = (soft_cross_entropy(m, teacher, tokenizer, texts) for m in (initial, student))
    entropy = soft_cross_entropy(teacher, teacher, tokenizer, texts)
    assert after - entropy < 0.8 * (before - entropy)
    with pytest.raises(TinyshipError, match="already exists.*--force"):
        distill(config)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_intermediate_phase_pulls_hidden_states_toward_the_teacher(precision, wide_teacher, small_data, tmp_path):
    config = DistillConfig(min_steps=0, teacher=str(wide_teacher), output_dir=str(tmp_path / "s"), data=small_data,
                           batch_size=16, learning_rate=1e-3, phases=[Phase({"hidden": 1}, 3)], layers=[1, 3],
                           teacher_precision=precision)
    student = AutoModelForSequenceClassification.from_pretrained(distill(config))
    assert json.loads((tmp_path / "s" / "tinyship_stage.json").read_text())["teacher_precision"] == precision
    teacher = AutoModelForSequenceClassification.from_pretrained(wide_teacher)
    tokenizer, texts = AutoTokenizer.from_pretrained(str(wide_teacher)), load_examples(small_data, "validation").texts
    before = hidden_distance(student_from_teacher(teacher, [1, 3]), teacher, tokenizer, texts, [1, 3])
    assert hidden_distance(student, teacher, tokenizer, texts, [1, 3]) < 0.7 * before


def test_a_tinybert_shaped_student_learns_through_projections(tiny_model_dir, small_data, tmp_path):
    out = distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), output_dir=str(tmp_path / "s"),
                                data=small_data, student="tinybert-4", batch_size=32,
                                phases=[Phase({"embedding": 1, "hidden": 1}, 1), Phase({"prediction": 1}, 1)]))
    student = AutoModelForSequenceClassification.from_pretrained(out)
    shape = student.config
    assert ((shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, shape.num_attention_heads)
            == (4, 312, 1200, 12))
    assert not any("projection" in name for name in load_file(out / "model.safetensors"))  # projections stay behind
    assert json.loads((out / "tinyship_stage.json").read_text())["layer_map"] == [1, 2, 3, 4]


def test_the_attention_loss_compares_head_averaged_maps_when_head_counts_differ():
    torch.manual_seed(0)
    student, teacher, mask = torch.randn(2, 2, 5, 5), torch.randn(2, 4, 5, 5), torch.tensor([[1, 1, 1, 0, 0], [1] * 5])
    averaged = LOSSES["attention"](student.mean(1, keepdim=True), teacher.mean(1, keepdim=True), mask)
    torch.testing.assert_close(attention_distance(student, teacher, mask), averaged)
    same = teacher + 1
    torch.testing.assert_close(attention_distance(same, teacher, mask), LOSSES["attention"](same, teacher, mask))
    assert attention_distance(same, teacher, mask).item() == pytest.approx(1.0)  # per head, not averaged first (0)


def test_a_smaller_pretrained_student_cut_to_k_layers_learns_by_every_loss(tiny_model_dir, minilm_dir, small_data,
                                                                          tmp_path, monkeypatch, capsys):
    """A student from another directory (24 wide, 2 heads, 3 layers), cut to 2 of its layers: embeddings and hidden
    states through projections to the teacher's width 32, attention maps averaged over heads, predictions."""
    seen = {}

    def recording(name):
        loss = LOSSES[name]

        def record(student, teacher, *args):  # heads of attention maps, else widths; and the projection's input width
            projection = args[1] if len(args) > 1 else None
            axis = 1 if student.dim() == 4 else -1
            seen.setdefault(name, set()).add((student.shape[axis], teacher.shape[axis],
                                              getattr(projection, "in_features", None)))
            value = loss(student, teacher, *args)
            assert torch.isfinite(value)
            return value

        return record

    for name in ("embedding", "hidden", "attention", "prediction"):
        monkeypatch.setitem(LOSSES, name, recording(name))
    student_dir = make_other_student(tmp_path / "pretrained", minilm_dir)
    out = distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), student=str(student_dir), student_layers=2,
                                output_dir=str(tmp_path / "s"), data=small_data, batch_size=32,
                                phases=[Phase({**INTERMEDIATE, "prediction": 1}, 1)]))
    printed = capsys.readouterr().out
    assert ("the student has 2 attention heads and the teacher 4: the attention loss compares each model's maps "
            "averaged") in printed
    assert seen["embedding"] == seen["hidden"] == {(24, 32, 24)}  # a projection from 24 to the teacher's 32
    assert seen["attention"] == {(1, 1, None)} and seen["prediction"] == {(2, 2, None)}  # 2 and 4 heads, averaged
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert ((student.config.num_hidden_layers, student.config.hidden_size, student.config.num_attention_heads)
            == (2, 24, 2))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["layer_map"] == [2, 4] and stage["tokenizers"] == "same"  # g(m) = m*4/2
    assert stage["config"]["student_layers"] == 2 and stage["student_sha256"] == weights_digest(student_dir)


def char_tokenizer_student(path, tiny_model_factory):
    """A student whose tokenizer (MiniLM's vocabulary, so the same ids for single characters) reads one piece per
    character: its pieces do not line up with the teacher's."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    tiny_model_factory(path, layers=2)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.BertPreTokenizer(),
                                                       pre_tokenizers.Split(Regex("."), "isolated")])
    tokenizer.save(str(path / "tokenizer.json"))
    return path


def test_misaligned_tokenizers_fall_back_to_the_prediction_loss_each_model_reading_its_own_ids(
        tiny_model_dir, tiny_model_factory, small_data, tmp_path, monkeypatch, capsys):
    student_dir = char_tokenizer_student(tmp_path / "chars", tiny_model_factory)
    assert AutoTokenizer.from_pretrained(student_dir)("a film")["input_ids"] == [101, 1037, 1042, 1045, 1048, 1049, 102]
    teacher_inputs = []
    teacher_states = DistillationTrainer.teacher_states

    def recording(self, inputs, index, split):
        teacher_inputs.extend(ids[mask.bool()].tolist()
                              for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"]))
        return teacher_states(self, inputs, index, split)

    monkeypatch.setattr(DistillationTrainer, "teacher_states", recording)
    out = distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), student=str(student_dir),
                                output_dir=str(tmp_path / "s"), data=small_data, batch_size=32,
                                phases=[Phase(INTERMEDIATE, 1), Phase({"prediction": 1}, 1)]))
    printed = capsys.readouterr().out
    assert ("the teacher's and the student's tokenizers cut text into different pieces (" in printed
            and "pieces by the student's tokenizer and" in printed)
    assert ("the embedding, hidden, attention losses compare states position by position and are dropped; "
            "the prediction and labels losses run, each model reading its own tokenization") in printed
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["tokenizers"] == "different: prediction loss only" and len(stage["phases"]) == 1
    teacher_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # trained, evaluated
    texts = [t for split in ("train", "validation") for t in load_examples(small_data, split).texts]
    teacher_ids = {tuple(ids) for ids in teacher_tokenizer(texts, truncation=True, max_length=64)["input_ids"]}
    assert {tuple(ids) for ids in teacher_inputs} == teacher_ids


def test_auto_runs_the_teacher_in_bf16_where_the_cpu_computes_it(monkeypatch):
    assert teacher_precision("fp32") == "fp32" and teacher_precision("bf16") == "bf16"
    for avx512_bf16, amx, expected in [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        assert teacher_precision("auto") == expected


def test_bf16_teacher_states_come_back_in_fp32_close_to_the_fp32_ones(wide_teacher):
    teacher = AutoModelForSequenceClassification.from_pretrained(wide_teacher).eval()
    inputs = dict(AutoTokenizer.from_pretrained(str(wide_teacher))(["a fine film", "dull"], padding=True,
                                                                     return_tensors="pt"))
    with torch.no_grad():
        exact = forward_states(teacher, inputs, [1])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = forward_states(teacher, inputs, [1]).float()
    assert {t.dtype for t in (rounded.logits, *rounded.hidden, *rounded.attention.values())} == {torch.float32}
    for a, b in zip(exact.hidden, rounded.hidden):
        assert ((a - b).norm() / a.norm()).item() < 0.05


def test_config_errors_are_clear(tiny_model_dir, small_data, tmp_path):
    with pytest.raises(TinyshipError, match="not both|give one of"):
        DistillConfig(min_steps=0, student_layers=2, layers=[1, 2])
    with pytest.raises(TinyshipError, match="teacher_precision 'fp16': use auto, fp32, bf16"):
        DistillConfig(min_steps=0, teacher_precision="fp16")
    with pytest.raises(TinyshipError, match="general distillation has no labels"):
        DistillConfig(min_steps=0, stage="general", phases=[Phase({"prediction": 1}, 1)])
    with pytest.raises(TinyshipError, match="student 'tinybert-3' is neither a model directory nor a shape"):
        distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), output_dir=str(tmp_path / "s"), data=small_data,
                              student="tinybert-3"))
    with pytest.raises(TinyshipError, match="unknown loss 'hiden'"):
        distill(DistillConfig(min_steps=0, teacher=str(tiny_model_dir), output_dir=str(tmp_path / "s"), data=small_data,
                              phases=[Phase({"hiden": 1}, 1)]))


def test_distill_needs_a_fine_tuned_teacher_with_safetensors(tmp_path, small_data, minilm_dir):
    with pytest.raises(TinyshipError, match="no teacher"):
        distill(DistillConfig(min_steps=0, output_dir=str(tmp_path / "s")))
    with pytest.raises(TinyshipError,
                       match="a BertModel, not a fine-tuned model of a task tinyship distils.*--stage general"):
        distill(DistillConfig(min_steps=0, teacher=minilm_dir, output_dir=str(tmp_path / "s"), data=small_data))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text("{}")
    (tmp_path / "t" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(TinyshipError, match="no model.safetensors.*pickles"):
        distill(DistillConfig(min_steps=0, teacher=str(tmp_path / "t"), output_dir=str(tmp_path / "s"),
                              data=small_data))


def run(teacher, data, out, callbacks=(), **settings):
    defaults = {"batch_size": 16, "save_steps": 3, "min_steps": 0,
                "phases": [Phase(INTERMEDIATE, 1), Phase({"prediction": 1}, 2)]}
    config = DistillConfig(teacher=str(teacher), output_dir=str(out), data=data, **{**defaults, **settings})
    return load_file(distill(config, callbacks=list(callbacks)) / "model.safetensors")


def test_each_phase_takes_the_minimum_steps_and_one_that_predicts_keeps_its_best(tiny_model_dir, small_data, tmp_path,
                                                                                  capsys):
    run(tiny_model_dir, small_data, tmp_path / "s", min_steps=7, save_steps=100,
        phases=[Phase({"hidden": 1}, 1), Phase({"prediction": 1}, 1)])
    stage = json.loads((tmp_path / "s" / "tinyship_stage.json").read_text())
    assert capsys.readouterr().out.count("fewer than the minimum of 7 optimiser steps: training 2 epochs (8 steps") == 2
    # 64 examples / 16: 4 steps an epoch
    assert [(p["epochs"], p["steps"]) for p in stage["phases"]] == [(2, 8), (2, 8)]
    assert stage["phases"][0]["best_checkpoint_step"] is None  # matching hidden states: no validation metric to pick by
    assert stage["phases"][1]["best_checkpoint_step"] in (4, 8)
    validation = stage["validation"]
    assert validation["eval_examples"] == len(load_examples(small_data, "validation"))
    assert {"eval_accuracy", "eval_macro_f1", "eval_majority_baseline", "eval_majority_macro_f1"} <= set(validation)


def test_a_killed_distillation_resumes_to_the_same_weights(tiny_model_dir, small_data, tmp_path):
    reference = run(tiny_model_dir, small_data, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model_dir, small_data, tmp_path / "resumed", [Interrupt(step=6)])  # mid-epoch 2 of phase 2
    checkpoints = tmp_path / "resumed.checkpoints"
    assert (checkpoints / "phase-1.safetensors").is_file() and (checkpoints / "phase-2" / "checkpoint-6").is_dir()
    resumed = run(tiny_model_dir, small_data, tmp_path / "resumed")
    phases = json.loads((tmp_path / "resumed" / "tinyship_stage.json").read_text())["phases"]
    assert [(p["phase"], p["steps"]) for p in phases] == [(1, 4), (2, 8)]  # phase 1's record kept from the first run
    assert reference.keys() == resumed.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize("precision, atol", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_cached_teacher_logits_train_the_same_student(precision, atol, tiny_model_dir, small_data, tmp_path, capsys):
    """The same student whether the teacher runs live or its logits are cached: in fp32 to within float error, in
    bf16 (whose rounding depends on how rows are batched) to within bf16's."""
    live = run(tiny_model_dir, small_data, tmp_path / "live", teacher_precision=precision)
    shared = tmp_path / "logits"
    cached = run(tiny_model_dir, small_data, tmp_path / "cached", cache_teacher=True, teacher_logits_dir=str(shared),
                 teacher_precision=precision)
    for name in live:
        torch.testing.assert_close(cached[name], live[name], rtol=0, atol=atol, msg=name)
    kept = logit_files(shared)
    assert len(kept) == 2 and "teacher logits: reusing" not in capsys.readouterr().out  # training and validation
    again = run(tiny_model_dir, small_data, tmp_path / "again", cache_teacher=True, teacher_logits_dir=str(shared),
                teacher_precision=precision)
    printed = capsys.readouterr().out
    assert all(f"teacher logits: reusing {path}" in printed for path in kept) and logit_files(shared) == kept
    for name in live:
        torch.testing.assert_close(again[name], cached[name], rtol=0, atol=0, msg=name)
    run(tiny_model_dir, DataConfig(limit=32, max_length=64), tmp_path / "other", cache_teacher=True,
        teacher_logits_dir=str(shared), teacher_precision=precision)
    assert len(logit_files(shared)) == 4  # other data: other logits
    other = "bf16" if precision == "fp32" else "fp32"
    run(tiny_model_dir, small_data, tmp_path / other, cache_teacher=True, teacher_logits_dir=str(shared),
        teacher_precision=other)
    assert len(logit_files(shared)) == 6  # logits of the other precision are kept apart


def logit_files(directory):
    return sorted(p for p in directory.glob("*.npy") if not p.name.endswith(".keys.npy"))


def test_a_larger_training_set_takes_the_rows_it_shares_from_an_earlier_cache(tiny_model_dir, small_data, tmp_path,
                                                                              capsys):
    import numpy as np

    (tmp_path / "transfer.txt").write_text("\n".join(f"the film number {i} was a fine piece of work ."
                                                     for i in range(40)))
    shared, prediction = tmp_path / "logits", [Phase({"prediction": 1}, 1)]
    run(tiny_model_dir, small_data, tmp_path / "a", cache_teacher=True, teacher_logits_dir=str(shared),
        phases=prediction)
    first = {p: np.load(p) for p in logit_files(shared)}
    capsys.readouterr()
    run(tiny_model_dir, small_data, tmp_path / "b", cache_teacher=True, teacher_logits_dir=str(shared),
        phases=prediction, transfer=str(tmp_path / "transfer.txt"), transfer_examples=32)
    printed = capsys.readouterr().out
    assert "teacher logits: 64 of 96 examples found" in printed and "teacher: 32 examples in" in printed
    (larger,) = [np.load(p) for p in logit_files(shared) if p not in first]
    (train,) = [logits for path, logits in first.items() if f"reusing {path}" not in printed]  # validation: reused
    np.testing.assert_array_equal(larger[:64], train)  # the training rows come first, the transfer text after them


def test_a_teacher_bundle_within_tolerance_computes_the_cached_logits(tiny_model_dir, fp32_bundle, small_data, tmp_path,
                                                                       capsys):
    cached = run(tiny_model_dir, small_data, tmp_path / "cached", cache_teacher=True, teacher_precision="fp32")
    bundled = run(tiny_model_dir, small_data, tmp_path / "bundled", teacher_bundle=str(fp32_bundle),
                  teacher_precision="fp32")
    record = json.loads((tmp_path / "bundled" / "tinyship_stage.json").read_text())["teacher_logits"]
    assert record["engine"] == "bundle" and record["tolerance"] == 0.005
    assert record["bundle"]["validation_accuracy"] == record["pytorch"]["validation_accuracy"]  # fp32: the same answers
    assert record["bundle"]["examples_per_second"] > 0 and record["pytorch"]["examples_per_second"] > 0
    assert "the bundle computes the teacher's logits" in capsys.readouterr().out
    for name in cached:
        torch.testing.assert_close(bundled[name], cached[name], rtol=0, atol=1e-4, msg=name)


def test_a_teacher_bundle_over_the_tolerance_leaves_the_logits_to_pytorch(tiny_model_dir, small_data, tmp_path, capsys):
    from tinyship.export import ExportConfig, export

    flipped = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        flipped.classifier.weight.neg_(), flipped.classifier.bias.neg_()  # every prediction the other class
    flipped.save_pretrained(tmp_path / "flipped")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "flipped")
    bundle = export(ExportConfig(model=str(tmp_path / "flipped"), output=str(tmp_path / "bundle"), quantize="none",
                                 data=small_data))
    run(tiny_model_dir, small_data, tmp_path / "s", teacher_bundle=str(bundle), phases=[Phase({"prediction": 1}, 1)])
    record = json.loads((tmp_path / "s" / "tinyship_stage.json").read_text())["teacher_logits"]
    torch_accuracy, bundle_accuracy = record["pytorch"]["validation_accuracy"], record["bundle"]["validation_accuracy"]
    assert torch_accuracy > 0.5 and bundle_accuracy == pytest.approx(1 - torch_accuracy)  # the bundle worse
    assert record["engine"] == "pytorch"
    assert "over the tolerance: the PyTorch teacher computes them" in capsys.readouterr().out


def test_a_teacher_bundle_gives_the_logits_the_runtime_serves(tiny_model_dir, small_data, tmp_path):
    """Dynamic INT8 is not batch-invariant: the cached logits are the ones its runtime computes, one input per run."""
    import numpy as np

    from tinyship import runtime
    from tinyship.export import ExportConfig, export

    bundle = export(ExportConfig(model=str(tiny_model_dir), output=str(tmp_path / "bundle"), quantize="dynamic",
                                 optimize=False, data=small_data))
    run(tiny_model_dir, small_data, tmp_path / "s", teacher_bundle=str(bundle), teacher_bundle_tolerance=1.0,
        teacher_logits_dir=str(tmp_path / "logits"), phases=[Phase({"prediction": 1}, 1)])
    cached = [np.load(path) for path in logit_files(tmp_path / "logits")]
    served = [runtime.load(bundle).logits(load_examples(small_data, split).texts) for split in ("train", "validation")]
    assert len(cached) == 2 and not np.allclose(served[0], served[1])
    for logits in served:  # each split's, as the runtime serves them
        assert sum(np.allclose(ours, logits, rtol=0, atol=1e-6) for ours in cached) == 1


def test_a_teacher_bundle_of_another_model_is_refused(tiny_model_dir, fp32_bundle, small_data, tmp_path):
    import shutil

    other = shutil.copytree(fp32_bundle, tmp_path / "other")
    manifest = json.loads((other / "tinyship.json").read_text())
    (other / "tinyship.json").write_text(json.dumps({**manifest, "labels": ["bad", "good"]}))
    with pytest.raises(TinyshipError,
                       match=r"predicts labels \['bad', 'good'\].*give the bundle exported from this teacher"):
        run(tiny_model_dir, small_data, tmp_path / "s", teacher_bundle=str(other))
    with pytest.raises(TinyshipError, match="leave out --no-cache-teacher"):
        DistillConfig(teacher_bundle=str(fp32_bundle), cache_teacher=False)


def test_gradient_accumulation_matches_the_full_batch(tiny_model_dir, tmp_path):
    """Two half batches accumulated make one full batch: the same updates (dropout off, one batch per epoch)."""
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, hidden_dropout_prob=0.0,
                                                                 attention_probs_dropout_prob=0.0)
    teacher.save_pretrained(tmp_path / "teacher")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "teacher")
    data, phases = DataConfig(limit=16, max_length=64), [Phase({"prediction": 1}, 3)]
    one = run(tmp_path / "teacher", data, tmp_path / "one", phases=phases)
    two = run(tmp_path / "teacher", data, tmp_path / "two", phases=phases, gradient_accumulation_steps=2, batch_size=8)
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=0, atol=1e-6, msg=name)


def tokenizer_with_vocab(path, vocab: list[str]):
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True)


def teacher_with_tokenizer(path, tokenizer):
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize("kind", ["shifted", "characters"])
def test_a_teacher_with_another_tokenizer(kind, tiny_model_dir, minilm_dir, small_data, tmp_path, capsys):
    """Ids shifted by 4 (as MPNet against BERT) keep the pieces: intermediate losses align by position.
    A tokenizer that cuts text otherwise leaves only the prediction loss, and the tool says so."""
    vocab = (tiny_model_dir / "vocab.txt").read_text().splitlines()
    if kind == "shifted":
        vocab = [f"[unused-{i}]" for i in range(4)] + vocab
    else:
        vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [c for c in "abcdefghijklmnopqrstuvwxyz"]
                 + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"])
    teacher = teacher_with_tokenizer(tmp_path / "teacher", tokenizer_with_vocab(tmp_path / "vocab", vocab))
    out = distill(DistillConfig(min_steps=0, teacher=str(teacher), student=str(tiny_model_dir),
                                output_dir=str(tmp_path / "s"), data=small_data, batch_size=32, layer_map=[1, 1, 2, 2],
                                phases=[Phase(INTERMEDIATE, 1), Phase({"prediction": 1}, 1)]))
    stage = json.loads((out / "tinyship_stage.json").read_text())
    printed = capsys.readouterr().out
    if kind == "shifted":
        assert stage["tokenizers"] == "aligned by position" and len(stage["phases"]) == 2
        assert (AutoTokenizer.from_pretrained(teacher)("a film")["input_ids"]
                == [i + 4 for i in AutoTokenizer.from_pretrained(tiny_model_dir)("a film")["input_ids"]])
    else:
        assert stage["tokenizers"] == "different: prediction loss only" and len(stage["phases"]) == 1
        assert "the embedding, hidden, attention losses compare states position by position and are dropped" in printed
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(tiny_model_dir).get_vocab()


def test_two_processes_under_torchrun(tiny_model_dir, tmp_path):
    """Data-parallel training on CPU: torchrun starts 2 processes (gloo); each step takes a batch from each."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tinyship = Path(sys.executable).parent / "tinyship"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", f"--master-port={port}",
               str(tinyship), "distill", "--teacher", str(tiny_model_dir), "--out", str(tmp_path / "s"),
               "--limit", "64", "--max-length", "64", "--batch-size", "8", "--phase", "hidden,attention:1",
               "--phase", "prediction:1", "--min-steps", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    stage = json.loads((tmp_path / "s" / "tinyship_stage.json").read_text())
    assert stage["processes"] == 2
    assert [p["steps"] for p in stage["phases"]] == [4, 4]  # 64 examples / (8 per process * 2 processes)
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "s").config.num_hidden_layers == 2
    assert not (tmp_path / "s.checkpoints").exists()


def test_a_teacher_much_larger_than_its_student_caches_its_logits_by_default(capsys):
    from transformers import BertConfig, BertModel

    from tinyship.compress.distillation import _cache_teacher

    def model(hidden):
        return BertModel(BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=4 * hidden))

    big, small = model(64), model(16)  # 8.6 times the parameters
    assert _cache_teacher(DistillConfig(), big, small) is True
    assert "the teacher has 8.6x the student's parameters: its logits are computed once" in capsys.readouterr().out
    assert _cache_teacher(DistillConfig(), small, big) is False and _cache_teacher(DistillConfig(), big, big) is False
    assert _cache_teacher(DistillConfig(cache_teacher=False), big, small) is False  # as told, either way
    assert _cache_teacher(DistillConfig(cache_teacher=True), small, big) is True


def test_each_phase_records_its_examples_per_second(tiny_model_dir, small_data, tmp_path):
    run(tiny_model_dir, small_data, tmp_path / "s", phases=[Phase({"prediction": 1}, 1)])
    stage = json.loads((tmp_path / "s" / "tinyship_stage.json").read_text())
    assert stage["phases"][0]["examples_per_second"] > 0


def test_transfer_text_joins_the_training_set_labelled_by_the_teacher_alone(tiny_model_dir, small_data, tmp_path,
                                                                           capsys):
    sentences = [f"the film number {i} was a {'fine' if i % 2 else 'dull'} piece of work ." for i in range(40)]
    (tmp_path / "transfer.txt").write_text("\n".join(sentences))
    run(tiny_model_dir, small_data, tmp_path / "s", cache_teacher=True, transfer=str(tmp_path / "transfer.txt"),
        transfer_examples=32, phases=[Phase({"prediction": 1, "labels": 1}, 1)])
    assert "transfer text: 32 sentences of" in capsys.readouterr().out
    stage = json.loads((tmp_path / "s" / "tinyship_stage.json").read_text())
    assert stage["phases"][0]["steps"] == 6  # (64 + 32) examples / 16
    assert math.isfinite(stage["phases"][0]["train_loss"])
    assert stage["config"]["transfer_examples"] == 32


def test_labels_loss_of_a_batch_of_transfer_text_alone_is_zero():
    logits = torch.randn(4, 2, requires_grad=True)
    loss = LOSSES["labels"](logits, torch.full((4,), -100))
    loss.backward()
    assert loss.item() == 0 and logits.grad.abs().sum() == 0


def test_transfer_text_is_refused_where_it_cannot_teach():
    from tinyship.compress.distillation import _with_transfer
    from tinyship.compress.tasks import TASKS

    pairs = Examples(texts=["a"], labels=[0], label_names=["x"], text_pairs=["b"])
    with pytest.raises(TinyshipError, match="the general stage reads unlabelled text through --corpus"):
        DistillConfig(stage="general", transfer="imdb")
    with pytest.raises(TinyshipError,
                       match="transfer text teaches classifiers of single texts; this is token-classification"):
        _with_transfer(DistillConfig(transfer="imdb"), TASKS["token-classification"], pairs, None)
    with pytest.raises(TinyshipError, match="this is classification of text pairs: leave out --transfer"):
        _with_transfer(DistillConfig(transfer="imdb"), TASKS["classification"], pairs, None)
