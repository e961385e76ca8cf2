"""`tinyship web` (runtime/web.py): the page, the page's npm packages and the bundle's web folder, nothing else,
with the headers that let onnxruntime-web use threads. The page itself runs in the edge checks (tests/edge)."""

import shutil
import threading
import urllib.error
import urllib.request

import pytest

from tinyship.export.targets import ConvertConfig, convert
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.web import server


@pytest.fixture
def site(fp32_bundle, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    convert(ConvertConfig(bundle=str(bundle), targets=("web",)))
    modules = tmp_path / "node_modules"
    (modules / "@huggingface" / "transformers" / "dist").mkdir(parents=True)
    (modules / "@huggingface" / "transformers" / "dist" / "transformers.js").write_text("export const x = 1;")
    (modules / "onnxruntime-web").mkdir()
    (modules / "onnxruntime-web" / "ort.wasm").write_bytes(b"\0asm")
    httpd = server(bundle, modules, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", bundle
    httpd.shutdown()
    httpd.server_close()


def get(url: str):
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, b""


def test_serves_the_page_the_packages_and_the_web_folder_cross_origin_isolated(site):
    base, bundle = site
    status, headers, body = get(base + "/")
    assert status == 200 and b"tinyship" in body and headers["Content-Type"].startswith("text/html")
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    assert get(base + "/app.js")[1]["Content-Type"] == "text/javascript"
    assert get(base + "/vendor/onnxruntime-web/ort.wasm")[1]["Content-Type"] == "application/wasm"
    status, _, body = get(base + "/models/model/onnx/model.onnx")
    assert status == 200 and body == (bundle / "model.onnx").read_bytes()


@pytest.mark.parametrize("path", ["/models/model/../tinyship.json", "/models/model/..%2f..%2fbundle/tinyship.json",
                                  "/vendor/../../bundle/model.onnx", "/models/model/", "/vendor/", "/nothing.js",
                                  "/models/other/config.json"])
def test_nothing_outside_the_three_roots_and_no_listings(site, path):
    assert get(site[0] + path)[0] == 404


def test_bad_input(fp32_bundle, tmp_path):
    with pytest.raises(TinyshipError, match=r"has no web folder: add it with `tinyship convert .* --target web`"):
        server(fp32_bundle, tmp_path, port=0)
    bundle = tmp_path / "bundle"
    shutil.copytree(fp32_bundle, bundle)
    convert(ConvertConfig(bundle=str(bundle), targets=("web",)))
    with pytest.raises(TinyshipError, match=r"no transformers.js in .*: run `npm ci --ignore-scripts` in the"):
        server(bundle, tmp_path / "missing", port=0)
