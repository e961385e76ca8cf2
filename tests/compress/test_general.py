import json

import torch
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from tinyship.compress import DistillConfig, Phase, distill, student_from_teacher
from tinyship.compress.corpus import TextCorpus, corpus_lines
from tinyship.compress.losses import LOSSES
from tinyship.compress.states import forward_states
from tinyship.runtime.data import DataConfig

TEXTS = [f"the {w} film was {v} and the actors were {u} in every scene" for w in ("first", "second", "third", "last")
         for v in ("good", "dull", "long", "short") for u in ("fine", "tired", "loud")]


def test_a_corpus_streams_windows_of_long_documents(tiny_model_dir, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("one short line\n\n" + " ".join(["word"] * 150) + "\n")
    (tmp_path / "docs" / "b.txt").write_text("another line\n")
    assert list(corpus_lines(str(tmp_path / "docs"))) == ["one short line", " ".join(["word"] * 150), "another line"]
    corpus = TextCorpus(str(tmp_path / "docs"), AutoTokenizer.from_pretrained(tiny_model_dir), max_length=64)
    windows = list(corpus.windows())
    # 150 pieces: 62 + 62 + 26, each with [CLS] and [SEP]
    assert [len(w["input_ids"]) for w in windows] == [5, 64, 64, 28, 4]
    assert corpus.count() == 5
    first = [w["input_ids"] for w in corpus]
    corpus.set_epoch(1)
    assert sorted(map(tuple, first)) == sorted(tuple(w["input_ids"]) for w in corpus)  # every window, each epoch


def test_built_in_corpora_stream_lines():
    treebank = corpus_lines("treebank")
    lines = [next(treebank) for _ in range(200)]
    assert all(line.strip() == line and line for line in lines)
    assert any("[UNK]" in line for line in lines) and not any("<unk>" in line for line in lines)
    assert len(next(corpus_lines("imdb")).split()) > 20  # review texts of the built-in IMDB train split


def test_general_distillation_saves_an_encoder_closer_to_the_teacher(tiny_model_factory, tmp_path):
    teacher_dir = tiny_model_factory(tmp_path / "teacher", initializer_range=0.5)
    AutoModel.from_pretrained(teacher_dir).save_pretrained(tmp_path / "pretrained")  # a pre-trained encoder
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(tmp_path / "pretrained")
    (tmp_path / "corpus.txt").write_text("\n".join(TEXTS) + "\n")
    config = DistillConfig(min_steps=0, stage="general", teacher=str(tmp_path / "pretrained"),
                           corpus=str(tmp_path / "corpus.txt"),
                           output_dir=str(tmp_path / "general"), student_layers=2, batch_size=8, learning_rate=3e-3,
                           phases=[Phase({"embedding": 1, "hidden": 1, "attention": 1}, 6)])
    out = distill(config)
    stage = json.loads((out / "tinyship_stage.json").read_text())
    assert stage["phases"][0]["steps"] == 36 and "validation" not in stage  # 48 windows / 8 per batch * 6 epochs
    student = AutoModel.from_pretrained(out).eval()
    assert student.config.architectures == ["BertModel"] and student.config.num_hidden_layers == 2

    teacher = AutoModel.from_pretrained(tmp_path / "pretrained").eval()
    batch = dict(AutoTokenizer.from_pretrained(out)(TEXTS[:8], padding=True, return_tensors="pt"))

    def distance(model):
        with torch.no_grad():
            s, t = forward_states(model, batch), forward_states(teacher, batch)
        return sum(LOSSES["hidden"](s.hidden[m], t.hidden[n], batch["attention_mask"]).item()
                   for m, n in ((1, 2), (2, 4)))

    assert distance(student) < 0.9 * distance(student_from_teacher(teacher, [2, 4]))

    # the general student then starts a task distillation, with a fresh head
    task = distill(DistillConfig(min_steps=0, teacher=str(teacher_dir), student=str(out),
                                 output_dir=str(tmp_path / "task"), data=DataConfig(limit=32, max_length=64),
                                 batch_size=16, phases=[Phase({"hidden": 1}, 1), Phase({"prediction": 1}, 1)]))
    model = AutoModelForSequenceClassification.from_pretrained(task)
    assert model.config.num_hidden_layers == 2 and model.config.id2label == {0: "negative", 1: "positive"}
    assert json.loads((task / "tinyship_stage.json").read_text())["layer_map"] == [2, 4]
