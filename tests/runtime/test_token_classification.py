import pytest
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

from helpers import tiny_tagger, token_data
from tinyship.export import ExportConfig, export
from tinyship.runtime import TokenClassifier, load
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.token_classification import entities

TEXTS = ["Alice visited Paris with Bob in June.", "tinyship ships models", "bob",
         "In June, alice wrote to Bob from Paris!"]


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, minilm_dir):
    work = tmp_path_factory.mktemp("tagger")
    model_dir = tiny_tagger(work / "model", minilm_dir)
    bundle = export(ExportConfig(model=str(model_dir), output=str(work / "bundle"), data=token_data(work),
                                 quantize="none", optimize=False))
    return model_dir, bundle


def test_entities_match_the_transformers_pipeline_on_the_pytorch_model(tagger):
    model_dir, bundle = tagger
    tag = load(bundle, batch_size=2)
    assert isinstance(tag, TokenClassifier)
    reference = pipeline("token-classification", model=AutoModelForTokenClassification.from_pretrained(model_dir),
                         tokenizer=AutoTokenizer.from_pretrained(str(model_dir)), aggregation_strategy="first")
    results = tag(TEXTS)
    assert len(results) == len(TEXTS) and sum(len(r["entities"]) for r in results) > 0
    for text, result, expected in zip(TEXTS, results, reference(TEXTS)):
        assert [(e["entity"], e["start"], e["end"]) for e in result["entities"]] == \
               [(e["entity_group"], e["start"], e["end"]) for e in expected]
        assert ([e["score"] for e in result["entities"]]
                == pytest.approx([float(e["score"]) for e in expected], abs=1e-4))
        assert all(e["word"] == text[e["start"] : e["end"]] for e in result["entities"])
        assert result["truncated"] is False
    assert tag(TEXTS[0]) == results[0]


def test_words_group_into_entities():
    words = [("B-PER", 0.9, 0, 5), ("I-PER", 0.7, 6, 11), ("O", 0.99, 12, 15), ("LOC", 0.8, 16, 21),
             ("LOC", 0.6, 22, 27), ("B-LOC", 0.5, 28, 30)]
    text = "Alice Smith saw North Korea or NK"
    assert entities(words, text) == [
        {"entity": "PER", "score": pytest.approx(0.8), "word": "Alice Smith", "start": 0, "end": 11},
        {"entity": "LOC", "score": pytest.approx(0.7), "word": "North Korea", "start": 16, "end": 27},
        {"entity": "LOC", "score": 0.5, "word": "or", "start": 28, "end": 30},
    ]


def test_long_texts_are_truncated_and_flagged(tagger):
    result = load(tagger[1])(" ".join(["alice"] * 400))
    assert result["truncated"] is True and all(e["end"] <= 2000 for e in result["entities"])


@pytest.mark.parametrize("bad", [None, [], [("alice", "bob")], ["ok", 3]])
def test_bad_inputs_are_named(tagger, bad):
    with pytest.raises(TinyshipError, match="must be a str"):
        load(tagger[1])(bad)


def test_a_lone_surrogate_is_refused_before_the_tokenizer_sees_it(tagger):
    with pytest.raises(TinyshipError, match="input 1 is not valid Unicode"):
        load(tagger[1])(["alice visited paris", "bob \ud800 in june"])
