"""Web: a bundle's web folder (export --target web) loaded by transformers.js in headless Chromium from the page
`tinyship web` serves, all files local, gives the Python runtime's labels on every input and its scores within
SCORE_TOLERANCE. Speed is measured by benchmarks/edge, not here."""

import pytest

from benchmarks.lab.browser import page_for
from tinyship.export import ExportConfig, export
from tinyship.runtime import load
from tinyship.runtime.data import load_examples

SCORE_TOLERANCE = 1e-3
EXTRA = ["ok", "the plot wanders and the acting is wooden, " * 40, "Un film étonnant, drôle et émouvant.", "🙂 great"]


@pytest.fixture(scope="module")
def web_bundle(tiny_model_dir, small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("web") / "bundle"
    return export(ExportConfig(model=str(tiny_model_dir), output=str(out), data=small_data, quantize="dynamic",
                               targets=("web",)))


def test_transformers_js_in_chromium_matches_the_python_runtime(web_bundle, small_data):
    texts = [*load_examples(small_data, "test").texts[:40], *EXTRA]
    python = load(web_bundle, threads=1)(texts, top_k=None)
    with page_for(web_bundle) as page:
        browser = [page.evaluate("text => window.tinyship.scores(text)", text) for text in texts]
        status = page.evaluate("document.getElementById('status').textContent")
    assert "WASM" in status and "cross-origin isolated: yes" in status
    assert [b[0]["label"] for b in browser] == [p["label"] for p in python]
    for b, p in zip(browser, python):
        assert {s["label"]: s["score"] for s in b} == pytest.approx(p["scores"], abs=SCORE_TOLERANCE)
