"""The catalogue of bad HTTP requests against one real server (API key and Host rules on): each gets a 4xx and a JSON
{"error": message} that names the problem, never a traceback; and a storm of good and bad clients at once, where
every good request gets the answer it gets alone."""

import json
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import pytest
from serving import Running, raw_request

from tinyship.runtime import load
from tinyship.runtime.server import ServeConfig, create_app

KEY = "s3cret-key"
CONFIG = ServeConfig(max_inputs=8, max_chars=1000, api_key=KEY, allowed_hosts=("127.0.0.1",), body_timeout_s=1)
GOOD = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
TEXTS = ["a gripping, funny and moving film", "dull", "not bad at all", "the plot goes nowhere, slowly"]


def chunks(total: int, size: int = 65_536):
    """A body sent chunked (no Content-Length), `total` bytes in all."""
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


@dataclass
class Ask:
    """One request. body: JSON-able (sent as ASCII JSON, so a lone surrogate travels as a \\ud800 escape), bytes
    (sent as they are) or a callable giving chunks (sent chunked). Headers override GOOD's; an empty value removes one.
    raw: written to a socket as it is, with `cut` bytes of the body left unsent (httpx would fix the Host or length)."""

    body: object = field(default_factory=lambda: {"inputs": "dull"})
    method: str = "POST"
    path: str = "/v1/predict"
    headers: dict = field(default_factory=dict)
    raw: bool = False
    cut: int = 0

    def content(self):
        if callable(self.body):
            return self.body()
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()

    def send(self, server) -> tuple[int, bytes]:
        """The answer's status and body."""
        headers = {k: v for k, v in {**GOOD, **self.headers}.items() if v}
        if not self.raw:
            response = httpx.request(self.method, server.url + self.path, headers=headers, content=self.content(),
                                     timeout=30)
            return response.status_code, response.content
        content = self.content()
        head = {"Host": "127.0.0.1", "Content-Length": str(len(content)), "Connection": "close", **headers}
        lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
        answer = raw_request(server.port, f"{self.method} {self.path} HTTP/1.1\r\n{lines}\r\n".encode()
                             + content[: len(content) - self.cut])
        status_line, _, body = answer.partition(b"\r\n\r\n")
        return int(status_line.split()[1]), body


# name: (status, a regular expression the message matches, the request)
CATALOGUE = {
    "malformed JSON": (400, "not JSON", Ask(b'{"inputs": ')),
    "not JSON at all": (400, "not JSON", Ask(b"dull")),
    "empty body": (400, "not JSON", Ask(b"")),
    "bytes that are not UTF-8": (400, "not JSON", Ask(b'{"inputs": "\xff\xfe"}')),
    "100k nested lists": (400, "nested too deeply", Ask(b"[" * 100_000)),
    "inputs nested 100k deep": (400, "nested too deeply", Ask(b'{"inputs": ' + b"[" * 100_000)),
    "inputs a number": (422, "malformed request", Ask({"inputs": 5})),
    "inputs null": (422, "malformed request", Ask({"inputs": None})),
    "inputs an object": (422, "malformed request", Ask({"inputs": {}})),
    "inputs numbers": (422, "malformed request", Ask({"inputs": [1, 2]})),
    "body a list": (422, "malformed request", Ask(["dull"])),
    "no inputs": (422, "malformed request .*inputs", Ask({"text": "dull"})),
    "empty list": (422, "non-empty list", Ask({"inputs": []})),
    "too many inputs": (422, "9 inputs: at most 8", Ask({"inputs": ["dull"] * 9})),
    "empty string": (422, "input 0 is empty", Ask({"inputs": ""})),
    "blank string": (422, "input 1 is empty", Ask({"inputs": ["dull", " \t\n"]})),
    "text over max_chars": (422, "input 0 is over 1000 characters", Ask({"inputs": "y" * 1001})),
    "100k combining marks": (422, "input 0 is over 1000 characters", Ask({"inputs": "a" + "\u0301" * 100_000})),
    "10 MB text": (413, "body of 10000014 bytes is over the limit of 1000000", Ask({"inputs": "x" * 10_000_000})),
    "10 MB chunked": (413, "body is over the limit of 1000000 bytes", Ask(lambda: chunks(10_000_000))),
    "huge Content-Length": (413, "body of 5000000000 bytes is over the limit",
                            Ask(headers={"Content-Length": "5000000000"}, raw=True)),
    "pairs to a single-text model": (422, "input 0 is tuple: each input must be a str", Ask({"inputs": [["a", "b"]]})),
    "unknown model": (404, "no model 'other': this server has reviews", Ask({"inputs": "dull", "model": "other"})),
    "model a number": (422, "malformed request .*model", Ask({"inputs": "dull", "model": 5})),
    "top_k 0": (422, "malformed request .*top_k", Ask({"inputs": "dull", "top_k": 0})),
    "top_k -1": (422, "malformed request .*top_k", Ask({"inputs": "dull", "top_k": -1})),
    "top_k a": (422, "malformed request .*top_k", Ask({"inputs": "dull", "top_k": "a"})),
    "top_k 1000": (422, "malformed request .*top_k", Ask({"inputs": "dull", "top_k": 1000})),
    "top_k 1.5": (422, "malformed request .*top_k", Ask({"inputs": "dull", "top_k": 1.5})),
    "lone surrogate": (422, "input 0 is not valid Unicode", Ask({"inputs": "dull \ud800"})),
    "lone surrogate in a list": (422, "input 1 is not valid Unicode", Ask({"inputs": ["dull", "\udfff fine"]})),
    "wrong method": (405, "GET is not allowed on /v1/predict: use POST", Ask(method="GET")),
    "wrong method on healthz": (405, "DELETE is not allowed on /healthz: use GET",
                                Ask(method="DELETE", path="/healthz")),
    "text/plain": (415, "content type 'text/plain'", Ask(headers={"Content-Type": "text/plain"})),
    "form content type": (415, "content type 'application/x-www-form-urlencoded'",
                          Ask(headers={"Content-Type": "application/x-www-form-urlencoded"})),
    "unknown path": (404, "no route /v2/predict", Ask(path="/v2/predict")),
    "crafted path": (404, 'no route /a"b', Ask(method="GET", path="/a%22b%0Ac", raw=True)),
    "no API key": (401, "Authorization: Bearer <key>", Ask(headers={"Authorization": ""})),
    "wrong API key": (401, "Authorization: Bearer <key>", Ask(headers={"Authorization": "Bearer wrong-key"})),
    "API key without Bearer": (401, "Authorization: Bearer <key>", Ask(headers={"Authorization": KEY})),
    "unknown Host": (400, "Host 'evil.example' is not served here: use 127.0.0.1",
                     Ask(headers={"Host": "evil.example"}, raw=True)),
    "half-sent body": (408, "did not arrive within 1 s", Ask(raw=True, cut=8)),
}


@pytest.fixture(scope="module")
def server(fp32_bundle):
    with Running(create_app({"reviews": fp32_bundle}, CONFIG), CONFIG) as s:
        yield s


@pytest.mark.parametrize("case", CATALOGUE)
def test_a_bad_request_gets_a_4xx_and_a_json_error(server, case):
    status, message, ask = CATALOGUE[case]
    got, body = ask.send(server)
    assert got == status, body[:300]
    assert b"Traceback" not in body and b'File "' not in body
    error = json.loads(body)
    assert list(error) == ["error"] and isinstance(error["error"], str)
    assert re.search(message, error["error"]), error["error"]


def test_the_catalogue_is_large(server):
    assert len(CATALOGUE) >= 30 and len({status for status, _, _ in CATALOGUE.values()}) >= 8


@pytest.mark.parametrize("text", ["nul \x00 bytes \x00 inside", "a" + "\u0301" * 900, "emoji 🎬 and ñ", "\u200b"])
def test_odd_but_valid_text_is_answered(server, fp32_bundle, text):
    """NUL bytes, many combining marks, characters outside the BMP: text like any other."""
    response = httpx.post(f"{server.url}/v1/predict", json={"inputs": text}, headers=GOOD)
    assert response.status_code == 200
    expected = load(fp32_bundle)(text)
    assert response.json()["results"]["label"] == expected["label"]
    assert response.json()["results"]["score"] == pytest.approx(expected["score"], abs=1e-5)


def test_a_storm_of_good_and_bad_clients(server, fp32_bundle):
    """200 requests from 16 threads at once, a third of them bad: each good one gets what it gets alone."""
    predictor = load(fp32_bundle)
    rng = random.Random(0)
    bad = [name for name, (_, _, ask) in CATALOGUE.items() if not ask.raw and "10 MB" not in name]
    plan = []
    for k in range(200):
        if k % 3 == 0:
            plan.append(("bad", rng.choice(bad)))
        else:
            inputs = rng.sample(TEXTS, rng.randint(1, 4)) if k % 2 else rng.choice(TEXTS)
            plan.append(("good", {"inputs": inputs, "top_k": rng.choice([1, 2])}))

    def run(step):
        kind, what = step
        if kind == "bad":
            return step, CATALOGUE[what][2].send(server)
        response = httpx.post(f"{server.url}/v1/predict", json=what, headers=GOOD, timeout=30)
        return step, (response.status_code, response.content)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(run, plan))
    for (kind, what), (status, body) in answers:
        if kind == "bad":
            assert status == CATALOGUE[what][0] and list(json.loads(body)) == ["error"], what
            continue
        assert status == 200, body
        alone = predictor(what["inputs"], top_k=what["top_k"])
        served = json.loads(body)["results"]
        if isinstance(served, dict):
            served, alone = [served], [alone]
        for got, expected in zip(served, alone, strict=True):
            assert got["label"] == expected["label"] and got["scores"] == pytest.approx(expected["scores"], abs=1e-5)
