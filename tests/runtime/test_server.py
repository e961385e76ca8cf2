"""The HTTP server against a real uvicorn on a free loopback port, with a real HTTP client."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import uvicorn

from tinyship.runtime import load
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.server import ServeConfig, create_app, serve

TEXTS = ["a gripping, funny and moving film", "dull", "not bad at all"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """uvicorn serving an app in a thread, stopped the way a SIGTERM stops it (should_exit)."""

    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=30))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        return self

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="module")
def server(fp32_bundle):
    with Running(create_app({"reviews": fp32_bundle}, ServeConfig(max_inputs=8, max_chars=1000, max_body_bytes=20_000, max_wait_ms=2))) as s:
        yield s


def test_predict_health_metrics_and_docs(server, fp32_bundle):
    with httpx.Client(base_url=server.url) as client:
        one = client.post("/v1/predict", json={"inputs": TEXTS[0], "top_k": 2})
        assert one.status_code == 200 and one.json()["model"] == "reviews"
        served, local = one.json()["results"], load(fp32_bundle)(TEXTS[0], top_k=2)
        assert served["label"] == local["label"] and served["truncated"] is local["truncated"] is False
        assert served["scores"] == pytest.approx(local["scores"], abs=1e-5)
        many = client.post("/v1/predict", json={"inputs": TEXTS, "model": "reviews"}).json()["results"]
        assert [r["label"] for r in many] == [r["label"] for r in load(fp32_bundle)(TEXTS)]
        assert client.get("/healthz").json() == {"status": "ok", "models": ["reviews"]}
        assert client.get("/docs").status_code == 200 and "/v1/predict" in client.get("/openapi.json").json()["paths"]
        metrics = client.get("/metrics").text
        assert 'tinyship_requests_total{path="/v1/predict",status="200"}' in metrics
        assert "tinyship_predict_seconds_bucket" in metrics and "tinyship_batch_size_count" in metrics


@pytest.mark.parametrize("body, status, message", [
    ({"inputs": "x" * 30_000}, 413, "over the limit of 20000"),
    ({"text": "no inputs field"}, 422, "malformed request .*inputs"),
    ({"inputs": 3}, 422, "malformed request"),
    ({"inputs": []}, 422, "non-empty list"),
    ({"inputs": "   "}, 422, "input 0 is empty"),
    ({"inputs": ["ok"] * 9}, 422, "9 inputs: at most 8"),
    ({"inputs": "y" * 1001}, 422, "input 0 is over 1000 characters"),
    ({"inputs": [["a", "pair"]]}, 422, "input 0 is tuple: each input must be a str"),
    ({"inputs": "fine", "model": "other"}, 404, "no model 'other': this server has reviews"),
    ({"inputs": "fine", "top_k": 0}, 422, "malformed request"),
])
def test_bad_requests_get_clear_json_errors(server, body, status, message):
    response = httpx.post(f"{server.url}/v1/predict", json=body)
    assert response.status_code == status
    assert response.json()["error"] and __import__("re").search(message, response.json()["error"])


def test_concurrent_clients_are_micro_batched_without_errors(server):
    def client_run(k):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return [client.post("/v1/predict", json={"inputs": TEXTS[(k + i) % 3]}).status_code for i in range(16)]

    before = httpx.get(f"{server.url}/metrics").text
    with ThreadPoolExecutor(32) as pool:
        codes = [c for run in pool.map(client_run, range(32)) for c in run]
    assert len(codes) == 512 and set(codes) == {200}
    after = httpx.get(f"{server.url}/metrics").text
    runs = lambda text: int(next(line.split()[-1] for line in text.splitlines() if line.startswith("tinyship_batch_size_count")))  # noqa: E731
    assert runs(after) - runs(before) < 512  # some model runs served several requests


def test_shutdown_finishes_accepted_requests(fp32_bundle):
    app = create_app({"reviews": fp32_bundle}, ServeConfig(max_wait_ms=2000))  # the first request holds its run open
    running = Running(app).__enter__()
    results = []

    def ask(k):
        with httpx.Client(base_url=running.url, timeout=30) as client:
            results.append(client.post("/v1/predict", json={"inputs": TEXTS[k % 3]}).status_code)

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    queue = app.state.batchers["reviews"].queue
    deadline = time.monotonic() + 10
    while queue.qsize() < 15:  # all accepted: one waiting in the run, fifteen queued behind it
        assert time.monotonic() < deadline, "the requests did not arrive"
        time.sleep(0.01)
    running.stop()
    for t in threads:
        t.join(30)
    assert results == [200] * 16


def test_several_bundles_by_name_and_a_port_in_use(fp32_bundle):
    with Running(create_app({"a": fp32_bundle, "b": fp32_bundle})) as running:
        assert httpx.post(f"{running.url}/v1/predict", json={"inputs": "fine", "model": "b"}).status_code == 200
        response = httpx.post(f"{running.url}/v1/predict", json={"inputs": "fine"})
        assert response.status_code == 422 and "name one with \"model\" (a, b)" in response.json()["error"]
        with pytest.raises(TinyshipError, match=f"cannot listen on 127.0.0.1:{running.port} .*choose another --port"):
            serve({"a": fp32_bundle}, port=running.port)
