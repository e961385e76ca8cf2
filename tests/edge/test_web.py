"""Web: a bundle's web folder (export --target web) loaded by transformers.js in headless Chromium from the page
`tinyship web` serves, all files local, gives the Python runtime's results on every input: for classification the
same labels and scores within SCORE_TOLERANCE (INT8), for token classification the same entities, for question
answering the same answers. Speed is measured by benchmarks/edge, not here."""

import re

import pytest
from transformers import BertForQuestionAnswering

from benchmarks.lab.browser import page_for
from helpers import WORDS, squad_data, tiny, tiny_tagger, token_data
from tinyship.export import ExportConfig, export
from tinyship.runtime import load
from tinyship.runtime.data import load_examples
from tinyship.runtime.token_classification import entities, first_pieces

SCORE_TOLERANCE = 1e-3
FP32_TOLERANCE = 1e-5  # fp32 in WASM and native differ by summation order only
EXTRA = ["ok", "the plot wanders and the acting is wooden, " * 40, "Un film étonnant, drôle et émouvant.", "🙂 great"]


@pytest.fixture(scope="module")
def web_bundle(tiny_model_dir, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "bundle"
    return export(ExportConfig(model=str(tiny_model_dir), output=str(out), data=small_data, quantize="dynamic",
                               objective="size", targets=("web",)))  # INT8, whatever the timings


def test_transformers_js_in_chromium_matches_the_python_runtime(web_bundle, small_data):
    texts = [*load_examples(small_data, "test").texts[:40], *EXTRA]
    python = load(web_bundle, threads=1)(texts, top_k=None)
    with page_for(web_bundle) as page:
        browser = [page.evaluate("text => window.tinyship.run(text)", text) for text in texts]
        status = page.evaluate("document.getElementById('status').textContent")
    assert "(text-classification)" in status and "WASM" in status and "cross-origin isolated: yes" in status
    assert [b[0]["label"] for b in browser] == [p["label"] for p in python]
    for b, p in zip(browser, python):
        assert {s["label"]: s["score"] for s in b} == pytest.approx(p["scores"], abs=SCORE_TOLERANCE)


def test_a_token_classifier_tags_every_word_as_the_python_runtime_does(minilm_dir, tmp_path):
    model_dir = tiny_tagger(tmp_path / "model", minilm_dir)
    bundle = export(ExportConfig(model=str(model_dir), output=str(tmp_path / "bundle"), data=token_data(tmp_path),
                                 quantize="none", targets=("web",)))
    texts = ["Alice visited Paris with Bob in June.", "tinyship ships models", "bob",
             "In June, alice wrote to Bob from Paris!", " ".join(WORDS * 3)]
    tagger = load(bundle, threads=1)
    with page_for(bundle) as page:
        browser = [page.evaluate("text => window.tinyship.run(text)", text) for text in texts]
    for text, tokens, expected in zip(texts, browser, tagger(texts)):
        encoding = tagger.encode([text])[0]
        by_index = {token["index"]: token for token in tokens}  # every non-special token, "O" included
        assert sorted(by_index) == [k for k, word in enumerate(encoding.word_ids) if word is not None]
        words = [(by_index[k]["entity"], by_index[k]["score"], start, end)
                 for k, start, end in first_pieces(encoding.word_ids, encoding.offsets)]
        got = entities(words, text)
        assert [(e["entity"], e["start"], e["end"]) for e in got] == \
               [(e["entity"], e["start"], e["end"]) for e in expected["entities"]]
        assert [e["score"] for e in got] == pytest.approx([e["score"] for e in expected["entities"]],
                                                          abs=FP32_TOLERANCE)


def test_a_question_answerer_finds_the_python_runtimes_answer(minilm_dir, tmp_path):
    model_dir = tiny(BertForQuestionAnswering, tmp_path / "model", minilm_dir)
    bundle = export(ExportConfig(model=str(model_dir), output=str(tmp_path / "bundle"),
                                 data=squad_data(tmp_path, max_length=64), quantize="none", targets=("web",)))
    context = "in 1907 alice wrote a letter about the sea, and bob read it in june."  # under 30 tokens: no length cap
    pairs = [(q, context) for q in ("who wrote the letter?", "when did bob read it?", "what was it about?")]
    answers = load(bundle, threads=1)(pairs, top_k=3)
    with page_for(bundle) as page:
        best = [page.evaluate("input => window.tinyship.run(input)", list(pair)) for pair in pairs]
        top = [page.evaluate("([q, c]) => window.tinyship.pipeline(q, c, {top_k: 3})", list(pair)) for pair in pairs]
    plain = lambda text: re.sub(r"\s+", "", text.lower())  # noqa: E731  transformers.js decodes the answer's pieces
    assert [plain(b["answer"]) for b in best] == [plain(a["answer"]) for a in answers]
    # the same three best spans in the same order; transformers.js's scores are smaller by a factor per input, its
    # softmax also spanning [CLS]
    assert [[plain(t["answer"]) for t in ts] for ts in top] == [[plain(a["answer"]) for a in r["answers"]]
                                                                for r in answers]
