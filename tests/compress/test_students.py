import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from tinyship.compress import DistillConfig, load_model
from tinyship.compress.config import Student, with_student
from tinyship.compress.students import build_student, load_teacher
from tinyship.runtime.errors import TinyshipError


def make_other_student(path, minilm_dir, layers=3):
    """A pre-trained-like student unlike the 4-layer, 32-wide, 4-head tiny teacher: 24 wide, 2 heads, MiniLM's
    tokenizer (so the two align by position)."""
    torch.manual_seed(1)
    config = BertConfig(vocab_size=30522, hidden_size=24, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def other_student(tmp_path_factory, minilm_dir):
    return make_other_student(tmp_path_factory.mktemp("other") / "student", minilm_dir)


def built(teacher_dir, **choice):
    teacher, task = load_teacher(teacher_dir, "task")
    return build_student(DistillConfig(teacher=str(teacher_dir), **choice), teacher, teacher_dir, task)


def same_layers(model, source, kept: list[int]) -> bool:
    pairs = [(model.bert.encoder.layer[i], source.bert.encoder.layer[n - 1]) for i, n in enumerate(kept)]
    return len(model.bert.encoder.layer) == len(kept) and all(
        torch.equal(a, b) for s, t in pairs for a, b in zip(s.state_dict().values(), t.state_dict().values()))


@pytest.mark.parametrize("choice, kept, layer_map", [
    (dict(student_layers=2), [1, 3], [2, 4]),  # uniform cut of 3 layers to 2: m*3//2; map g(m) = m*4//2
    (dict(layers=[2, 3]), [2, 3], [2, 4]),
    (dict(student_layers=1, layer_map=[3]), [3], [3]),
    (dict(), [1, 2, 3], [1, 2, 4]),  # whole: g(m) = m*4//3
])
def test_a_student_directory_is_cut_to_its_own_layers(choice, kept, layer_map, tiny_model_dir, other_student):
    student, tokenizer_dir, mapped = built(tiny_model_dir, student=str(other_student), **choice)
    source = AutoModelForSequenceClassification.from_pretrained(other_student)
    assert same_layers(student, source, kept) and student.config.num_hidden_layers == len(kept)
    assert student.config.hidden_size == 24 and tokenizer_dir == other_student
    assert mapped == layer_map


@pytest.mark.parametrize("choice, error", [
    (dict(student_layers=4), r"a student of 4 layers from a 3-layer student \(.*\): use 1 to 3"),
    (dict(layers=[1, 4]), r"layers \[1, 4\]: give distinct student \(.*\) layer numbers from 1 to 3"),
    (dict(student_layers=2, layer_map=[1, 2, 3]),
     r"layer map \[1, 2, 3\]: give one teacher layer .* student's 2 layers"),
])
def test_a_bad_cut_of_a_student_directory_is_refused(choice, error, tiny_model_dir, other_student):
    with pytest.raises(TinyshipError, match=error):
        built(tiny_model_dir, student=str(other_student), **choice)


def test_a_pruned_student_is_not_cut(tiny_model_dir, small_data, tmp_path):
    from tinyship.compress import PruneConfig, prune

    pruned = prune(PruneConfig(model=str(tiny_model_dir), output_dir=str(tmp_path / "p"), data=small_data, heads=0.25,
                               importance="magnitude"))
    with pytest.raises(TinyshipError, match="is pruned .* and is not cut: leave out the layer count"):
        built(tiny_model_dir, student=str(pruned), student_layers=2)
    student, _, layer_map = built(tiny_model_dir, student=str(pruned))
    assert type(student) is type(load_model(pruned)) and layer_map == [1, 2, 3, 4]


ACCEPTED = [
    dict(),  # half the teacher's layers
    dict(student_layers=2),
    dict(layers=[1, 3]),
    dict(student="tinybert-4"),
    dict(student="runs/small"),
    dict(student="runs/small", student_layers=2),
    dict(student="runs/small", layers=[1, 3]),
]
REFUSED = {  # a combination -> its error
    "count and layers": (dict(student_layers=2, layers=[1, 3]), "give one of: a student layer count .* not both"),
    "directory, count and layers": (dict(student="runs/small", student_layers=2, layers=[1, 3]), "not both"),
    "shape and count": (dict(student="tinybert-4", student_layers=2),
                        "the shape tinybert-4 has 4 layers of its own: leave out .* or give a model directory to cut"),
    "shape and layers": (dict(student="tinybert-6", layers=[1, 2]), "the shape tinybert-6 has 6 layers of its own"),
}


@pytest.mark.parametrize("choice", ACCEPTED)
def test_the_meaningful_student_choices_are_accepted(choice):
    config = DistillConfig(**choice)
    assert {k: getattr(config, k) for k in choice} == choice
    assert config.spec.directory == ("runs/small" if choice.get("student") == "runs/small" else None)


@pytest.mark.parametrize("name", REFUSED)
def test_the_other_student_choices_are_refused(name):
    choice, error = REFUSED[name]
    with pytest.raises(TinyshipError, match=error):
        DistillConfig(**choice)


@pytest.mark.parametrize("choice, layer_map", [
    (dict(layers=[1, 3]), [1, 3]),  # the teacher layers it was cut from
    (dict(student_layers=2), None),  # uniform: g(m) over the pruned student's layers gives the same map
    (dict(student="runs/small", layers=[2, 3]), None),  # the student's own layers: not a map to the teacher
    (dict(student="runs/small", student_layers=2, layer_map=[1, 4]), [1, 4]),
    (dict(student="tinybert-4"), None),
])
def test_a_pruned_student_replaces_any_choice_and_keeps_learning_from_the_same_teacher_layers(choice, layer_map):
    recovery = with_student(DistillConfig(**choice), "runs/pruned")
    assert (recovery.student, recovery.student_layers, recovery.layers) == ("runs/pruned", None, None)
    assert recovery.layer_map == layer_map and recovery.spec == Student("runs/pruned")
