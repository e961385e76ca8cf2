import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tinyship.compress import LOSSES, DistillConfig, distill, student_from_teacher, uniform_layers, weights_digest
from tinyship.runtime.data import load_examples
from tinyship.runtime.errors import TinyshipError


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
def test_bad_layers_are_refused(tiny_model_dir, layers):
    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    with pytest.raises(TinyshipError, match="distinct teacher layer numbers from 1 to 4"):
        student_from_teacher(teacher, layers)


def prediction_loss(student, teacher, tokenizer, texts):
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        return LOSSES["prediction"](student.eval()(**batch).logits, teacher.eval()(**batch).logits).item()


def test_distill_saves_a_reloadable_student_closer_to_the_teacher(tiny_model_factory, small_data, tmp_path):
    tiny_model_dir = tiny_model_factory(tmp_path / "teacher", initializer_range=0.5)  # layers matter
    out = tmp_path / "student"
    config = DistillConfig(teacher=str(tiny_model_dir), output_dir=str(out), data=small_data, epochs=3,
                           batch_size=16, learning_rate=1e-3)
    assert distill(config) == out
    student = AutoModelForSequenceClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 2 and student.config.id2label == {0: "negative", 1: "positive"}
    assert (out / "tokenizer.json").is_file() and not (tmp_path / "student.checkpoints").exists()
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["teacher_sha256"] == weights_digest(tiny_model_dir) and stage["config"]["layers"] is None

    teacher = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    initial = student_from_teacher(teacher, [2, 4])
    texts = load_examples(small_data, "train").texts
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    # soft cross-entropy = entropy(teacher) + KL(teacher || student): lower means closer to the teacher
    before, after = (prediction_loss(m, teacher, tokenizer, texts) for m in (initial, student))
    entropy = prediction_loss(teacher, teacher, tokenizer, texts)
    assert after - entropy < 0.8 * (before - entropy)
    with pytest.raises(TinyshipError, match="already exists.*--force"):
        distill(config)


def test_layer_count_and_layer_list_are_exclusive(tiny_model_dir, small_data, tmp_path):
    with pytest.raises(TinyshipError, match="not both"):
        distill(DistillConfig(teacher=str(tiny_model_dir), output_dir=str(tmp_path / "s"), data=small_data,
                              student_layers=2, layers=[1, 2]))


def test_distill_needs_a_teacher_with_safetensors(tmp_path, small_data):
    with pytest.raises(TinyshipError, match="no teacher"):
        distill(DistillConfig(output_dir=str(tmp_path / "s")))
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.json").write_text("{}")
    (tmp_path / "t" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(TinyshipError, match="no model.safetensors.*pickles"):
        distill(DistillConfig(teacher=str(tmp_path / "t"), output_dir=str(tmp_path / "s"), data=small_data))
