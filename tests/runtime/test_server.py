"""The HTTP server against a real uvicorn on a free loopback port, with a real HTTP client."""

import asyncio
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving import Running, free_port, raw_request, read_all

import tinyship.runtime.server
from tinyship.runtime import load
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.server import Batcher, Metrics, ServeConfig, create_app, serve

TEXTS = ["a gripping, funny and moving film", "dull", "not bad at all"]
CONFIG = ServeConfig(max_inputs=8, max_chars=1000, max_body_bytes=20_000, max_wait_ms=2)


@pytest.fixture(scope="module")
def server(fp32_bundle):
    with Running(create_app({"reviews": fp32_bundle}, CONFIG), CONFIG) as s:
        yield s


def metric(text: str, line_start: str) -> float:
    """The value of the metrics line that starts with line_start (0 when absent)."""
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(line_start)), 0.0)


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
        assert "/v1/predict" in client.get("/openapi.json").json()["paths"]
        metrics = client.get("/metrics").text
        assert metric(metrics, 'tinyship_requests_total{path="/v1/predict",status="200"}') >= 2
        assert 'tinyship_request_seconds_bucket{le="0.001",path="/v1/predict"}' in metrics
        assert metric(metrics, "tinyship_batch_size_count") >= 2


def test_docs_load_nothing_from_other_servers(server):
    with httpx.Client(base_url=server.url) as client:
        page = client.get("/docs")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assert not re.search(r"https?://", page.text), "the page must not load from a CDN"
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 3  # script, style sheet, icon: each served here
        for asset in assets:
            response = client.get(asset)
            assert response.status_code == 200 and len(response.content) > 500, asset
        assert client.get("/openapi.json").json()["openapi"].startswith("3.0.")  # what this Swagger UI renders


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
    ({"inputs": "fine", "top_k": 0}, 422, "malformed request .*top_k"),
    ({"inputs": "fine \ud800"}, 422, "input 0 is not valid Unicode"),
])
def test_bad_requests_get_clear_json_errors(server, body, status, message):
    response = httpx.post(f"{server.url}/v1/predict", content=json.dumps(body),
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"] and re.search(message, response.json()["error"])


@pytest.mark.parametrize("method, path, headers, content, status, message", [
    ("GET", "/nowhere", {}, b"", 404, "no route /nowhere: this server answers POST /v1/predict"),
    ("GET", "/v1/predict", {}, b"", 405, "GET is not allowed on /v1/predict: use POST"),
    ("POST", "/v1/predict", {"content-type": "text/plain"}, b"dull", 415, "content type 'text/plain'"),
    ("POST", "/v1/predict", {"content-type": "application/json"}, b'{"inputs": ', 400, "not JSON"),
    ("POST", "/v1/predict", {"content-type": "application/json"}, b"[" * 100_000 + b"]" * 100_000, 413,
     "over the limit"),
    ("POST", "/v1/predict", {"content-type": "application/json"}, b"[" * 10_000, 400, "nested too deeply"),
])
def test_every_error_has_one_shape(server, method, path, headers, content, status, message):
    response = httpx.request(method, f"{server.url}{path}", headers=headers, content=content)
    assert response.status_code == status
    assert list(response.json()) == ["error"] and message in response.json()["error"]


def test_a_failing_input_fails_only_its_own_request(fp32_bundle):
    """A run that raises is retried request by request: the good requests that shared it get their results."""
    predictor = load(fp32_bundle)
    metrics = Metrics()

    async def run():
        batcher = Batcher(predictor, ServeConfig(max_wait_ms=200), metrics)  # the first request waits for the rest
        batcher.start()
        asks = [[TEXTS[0]], ["bad \ud800 input"], TEXTS[1:], [TEXTS[2]]]  # the server's checks bypassed
        answers = await asyncio.gather(*(batcher.predict(inputs, 1) for inputs in asks), return_exceptions=True)
        await batcher.stop()
        return answers

    first, bad, rest, last = asyncio.run(run())
    assert isinstance(bad, Exception)
    assert first == [predictor(TEXTS[0])] and rest == predictor(TEXTS[1:]) and last == [predictor(TEXTS[2])]
    runs = metrics.text().decode()  # one shared run of 5 inputs, then each request again alone
    assert metric(runs, 'tinyship_batch_size_bucket{le="4.0"}') == 4 and metric(runs, "tinyship_batch_size_count") == 5


@pytest.mark.parametrize("checked", [True, False], ids=["checked", "unchecked"])
def test_lone_surrogates_among_concurrent_clients_fail_alone(server, fp32_bundle, monkeypatch, checked):
    """Unchecked: as if neither the server nor the predictor looked at the inputs before they share a run."""
    if not checked:
        monkeypatch.setattr(tinyship.runtime.server, "_check", lambda inputs, predictor, config: None)
    local = load(fp32_bundle)

    def ask(k):
        text = TEXTS[k % 3] if k % 4 else f"{TEXTS[k % 3]} \ud800"
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.post("/v1/predict", content=json.dumps({"inputs": text}),
                                   headers={"content-type": "application/json"})
            return k, text, response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(96)))
    for k, text, status, body in answers:
        if k % 4:
            assert status == 200 and body["results"]["label"] == local(text)["label"]
            assert body["results"]["scores"] == pytest.approx(local(text)["scores"], abs=1e-5)
        else:
            assert status in (422, 500) and list(body) == ["error"]
            assert "not valid Unicode" in body["error"] or not checked


def test_concurrent_clients_are_micro_batched_without_errors(server):
    def client_run(k):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return [client.post("/v1/predict", json={"inputs": TEXTS[(k + i) % 3]}).status_code for i in range(16)]

    before = httpx.get(f"{server.url}/metrics").text
    with ThreadPoolExecutor(32) as pool:
        codes = [c for run in pool.map(client_run, range(32)) for c in run]
    assert len(codes) == 512 and set(codes) == {200}
    after = httpx.get(f"{server.url}/metrics").text
    runs = lambda text: metric(text, "tinyship_batch_size_count")  # noqa: E731
    assert runs(after) - runs(before) < 512  # some model runs served several requests


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(server):
    """No Content-Length: the limit holds while the body streams, and the answer comes before the body ends."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):  # 30 000 bytes of a body that never ends
            s.sendall(b"2710\r\n" + b" " * 10_000 + b"\r\n")
        answer = read_all(s)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"over the limit of 20000 bytes" in json.loads(body)["error"].encode()


def test_metrics_cannot_be_forged_or_grown_and_count_500s(fp32_bundle):
    app = create_app({"reviews": fp32_bundle}, CONFIG)

    @app.get("/boom")
    async def boom():  # a bug in a handler
        raise RuntimeError("a bug")

    with Running(app, CONFIG) as running, httpx.Client(base_url=running.url) as client:
        crafted = '/v1/predict"} 999\ntinyship_requests_total{path="/forged",status="200'
        assert client.get(crafted.replace("\n", "%0A").replace('"', "%22").replace(" ", "%20")).status_code == 404
        before = client.get("/metrics").text and client.get("/metrics").text  # the second has /metrics's own line
        for i in range(3000):
            assert client.get(f"/unknown/{i}").status_code == 404
        after = client.get("/metrics").text
        response = client.get("/boom")
        assert response.status_code == 500 and "internal error (request id" in response.json()["error"]
        final = client.get("/metrics").text
    assert "forged" not in final  # the crafted path is counted as "other", its text nowhere
    assert len(after.splitlines()) == len(before.splitlines())
    assert metric(after, 'tinyship_requests_total{path="other",status="404"}') == 3001
    assert metric(final, 'tinyship_requests_total{path="other",status="500"}') == 1


def test_a_half_sent_body_gets_408_and_does_not_hold_the_shutdown(fp32_bundle):
    config = ServeConfig(body_timeout_s=1)
    running = Running(create_app({"reviews": fp32_bundle}, config), config).__enter__()
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n")
    start = time.monotonic()
    answer = raw_request(running.port, head + b'{"inputs": "half', timeout=10)
    assert time.monotonic() - start < 5
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 1 s" in answer
    with socket.create_connection(("127.0.0.1", running.port), timeout=10) as s:  # another, still sending at shutdown
        s.sendall(head + b'{"inputs": "half')
        time.sleep(0.2)
        assert running.stop() < 5
        assert read_all(s).startswith(b"HTTP/1.1 408")


def test_a_request_over_its_time_gets_504_and_the_server_goes_on(fp32_bundle):
    config = ServeConfig(max_batch=4, max_wait_ms=1500, request_timeout_s=0.5)  # a lone input waits past its time
    with Running(create_app({"reviews": fp32_bundle}, config), config) as running:
        late = httpx.post(f"{running.url}/v1/predict", json={"inputs": "dull"}, timeout=10)
        assert late.status_code == 504 and "no answer within 0.5 s" in late.json()["error"]
        time.sleep(1.5)  # its run completes after its request gave up: the batcher must survive that
        full = httpx.post(f"{running.url}/v1/predict", json={"inputs": TEXTS + ["fine"]}, timeout=10)  # runs at once
        assert full.status_code == 200 and len(full.json()["results"]) == 4


def test_an_api_key_guards_every_route_but_healthz(fp32_bundle):
    config = ServeConfig(api_key="s3cret-key")
    with Running(create_app({"reviews": fp32_bundle}, config), config) as running, \
            httpx.Client(base_url=running.url) as client:
        for path in ("/metrics", "/docs", "/openapi.json", "/nowhere"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-key"}):
                response = client.get(path, headers=headers)
                assert response.status_code == 401 and "Authorization: Bearer <key>" in response.json()["error"]
        assert client.post("/v1/predict", json={"inputs": "dull"}).status_code == 401
        good = {"Authorization": "Bearer s3cret-key"}
        assert client.post("/v1/predict", json={"inputs": "dull"}, headers=good).status_code == 200
        assert client.get("/metrics", headers={"Authorization": "bearer s3cret-key"}).status_code == 200
        assert client.get("/healthz").status_code == 200


def test_other_hosts_are_refused_when_hosts_are_named(fp32_bundle):
    config = ServeConfig(allowed_hosts=("localhost", "127.0.0.1"))
    with Running(create_app({"reviews": fp32_bundle}, config), config) as running:
        assert httpx.get(f"{running.url}/healthz").status_code == 200  # Host: 127.0.0.1:port
        assert httpx.get(f"{running.url}/healthz", headers={"Host": "LOCALHOST:8000"}).status_code == 200
        response = httpx.get(f"{running.url}/healthz", headers={"Host": "evil.example:8000"})
        assert response.status_code == 400 and response.json() == {
            "error": "Host 'evil.example' is not served here: use 127.0.0.1 or localhost"}


def test_each_request_has_an_id_in_its_answer_and_its_log_line(server, caplog):
    with caplog.at_level(logging.INFO, logger="tinyship.server"):
        given = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "client-42"})
        made = httpx.get(f"{server.url}/nowhere", headers={"X-Request-ID": "bad id\twith tab"})
        time.sleep(0.2)
    assert given.headers["x-request-id"] == "client-42"
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["x-request-id"])
    lines = [r.getMessage() for r in caplog.records if r.name == "tinyship.server"]
    assert any(re.fullmatch(r"client-42 GET /healthz 200 \d+\.\d ms", line) for line in lines), lines
    assert any(re.fullmatch(made.headers["x-request-id"] + r" GET /nowhere 404 \d+\.\d ms", line) for line in lines)


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


@pytest.mark.parametrize("host, port, message", [
    ("256.1.1.1", None, "cannot listen on 256.1.1.1:.* choose another --host"),
    ("10.255.255.254", None, r"10.255.255.254:.*\(Cannot assign requested address\): choose another --host"),
    ("127.0.0.1", 70_000, "port 70000 is out of range: choose another --port"),
    ("127.0.0.1", -1, "port -1 is out of range"),
])
def test_a_bad_address_or_port_says_which_to_change(tmp_path, host, port, message):
    with pytest.raises(TinyshipError, match=message):
        serve({"a": tmp_path / "no-bundle"}, host=host, port=port or free_port(), config=ServeConfig(insecure=True))


def test_listening_beyond_loopback_needs_an_api_key_or_insecure(tmp_path):
    """Refused before the bundles load (there are none here): the open address is the error."""
    with pytest.raises(TinyshipError, match="--api-key-file FILE or the TINYSHIP_API_KEY variable, or pass --insecure"):
        serve({"a": tmp_path / "no-bundle"}, host="0.0.0.0", port=free_port())
    for config in (ServeConfig(api_key="k"), ServeConfig(insecure=True)):  # then it goes on to load the bundle
        with pytest.raises(TinyshipError, match="no-bundle"):
            serve({"a": tmp_path / "no-bundle"}, host="0.0.0.0", port=free_port(), config=config)
    with pytest.raises(TinyshipError, match="no-bundle"):  # loopback needs neither
        serve({"a": tmp_path / "no-bundle"}, host="localhost", port=free_port())
