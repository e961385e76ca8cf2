"""`tinyship serve`: bundles over HTTP (FastAPI on uvicorn), with requests from concurrent clients micro-batched.

POST /v1/predict runs one or many inputs through a bundle; GET /healthz says the server is up; GET /metrics gives
Prometheus text (requests by path and status, latency and batch-size histograms); /docs is the OpenAPI page, its
assets served from this machine. Requests that arrive while the model runs share its next run (up to max_batch
inputs); max_wait_ms > 0 also holds a lone request back that long for company. Every input is checked before it
joins a run, and a run that fails anyway is retried request by request, so one client's input never fails another's.

Whatever goes wrong is answered as JSON {"error": "<message>"}: 400 malformed JSON or an unknown Host, 401 a missing
or wrong API key, 404 an unknown route or model, 405 a wrong method, 408 a body sent too slowly, 413 a body too large,
415 a body that is not JSON, 422 a malformed request, 500 a bug (logged with the request's id), 504 a request that
took too long. Each answer carries an X-Request-ID, and each request is logged (logger "tinyship.server").
"""

import asyncio
import errno
import hmac
import ipaddress
import json
import logging
import math
import re
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Union

from tinyship.runtime import QuestionAnswerer, TextClassifier, load
from tinyship.runtime.errors import TinyshipError

# No `from __future__ import annotations` here: FastAPI reads the request model from the handler's annotation.
logger = logging.getLogger("tinyship.server")
LATENCY_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ROUTES = ("/v1/predict", "/healthz", "/metrics", "/docs", "/openapi.json")  # POST the first, GET the others; metric
# labels, with DOCS_ASSETS and "other"
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, from the swagger_ui_bundle package
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # an incoming X-Request-ID is kept when it looks like this
USAGE = 'send {"inputs": "a text" or ["texts", ...]}'


@dataclass(frozen=True)
class ServeConfig:
    """Limits, batching and access rules of the HTTP server."""

    max_batch: int = 32  # inputs per batch handed to the model (which runs them one at a time if not batch-invariant)
    max_wait_ms: float = 0.0  # how long a request waits for others to share its run; 0: a run takes what queued
    # while the previous one ran (measured best on CPU: benchmarks/results/runtime)
    max_inputs: int = 64  # inputs per request
    max_chars: int = 20_000  # characters per text
    max_body_bytes: int = 1_000_000
    threads: int | None = None  # onnxruntime threads per model (default: all cores)
    # set: every route but /healthz needs `Authorization: Bearer <api_key>`
    api_key: str | None = field(default=None, repr=False)
    insecure: bool = False  # allow listening beyond loopback without an API key (e.g. behind an authenticating proxy)
    allowed_hosts: tuple[str, ...] = ()  # Host header names answered; empty: any
    request_timeout_s: float = 30.0  # a request still unanswered this long after it arrived gets 504
    body_timeout_s: float = 10.0  # a body not received whole this long after its headers were accepted gets 408


class Refusal(Exception):
    """A request answered with an error status and a JSON {"error": message}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


class ClientGone(Exception):
    """The client disconnected before it sent its whole body: nobody to answer."""


class Job(NamedTuple):
    inputs: list
    top_k: int
    future: asyncio.Future


class Batcher:
    """Collects inputs from concurrent requests and runs them together, in one worker thread per model."""

    def __init__(self, predictor, config: ServeConfig, metrics: "Metrics"):
        self.predictor, self.config, self.metrics = predictor, config, metrics
        self.queue: asyncio.Queue = asyncio.Queue()
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.worker = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        await self.queue.join()
        if self.worker:
            self.worker.cancel()
        self.pool.shutdown(wait=True)

    async def predict(self, inputs: list, top_k: int) -> list:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(Job(inputs, top_k, future))
        return await future

    async def _loop(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            if self.config.max_wait_ms > 0 and len(jobs[0].inputs) < self.config.max_batch:
                await asyncio.sleep(self.config.max_wait_ms / 1e3)  # let concurrent requests join this run
            size = len(jobs[0].inputs)
            while size < self.config.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                size += len(jobs[-1].inputs)
            by_top_k: dict[int, list[Job]] = {}
            for job in jobs:  # one model run per top_k asked for (almost always one)
                by_top_k.setdefault(job.top_k, []).append(job)
            try:
                for top_k, group in by_top_k.items():
                    await self._run(group, top_k)
            finally:
                for _ in jobs:
                    self.queue.task_done()

    async def _run(self, group: list[Job], top_k: int) -> None:
        """One model run for the group's inputs. If it raises, each request runs again alone, so the input that
        caused it fails its own request only."""
        group = [job for job in group if not job.future.done()]  # done: its request timed out or its client left
        if not group:
            return
        inputs = [x for job in group for x in job.inputs]
        self.metrics.batch_size.observe(len(inputs))
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.pool, self._call, inputs, top_k)
        except Exception as e:
            if len(group) > 1:
                logger.warning("a run of %d requests failed (%s): running each alone", len(group), e)
                for job in group:
                    await self._run([job], top_k)  # skips a job whose request ended meanwhile
            elif not group[0].future.done():
                group[0].future.set_exception(e)
            return
        start = 0
        for job in group:
            if not job.future.done():  # done already: its request timed out
                job.future.set_result(results[start : start + len(job.inputs)])
            start += len(job.inputs)

    def _call(self, inputs: list, top_k: int) -> list:
        if isinstance(self.predictor, (TextClassifier, QuestionAnswerer)):
            return self.predictor(inputs, top_k=top_k)
        return self.predictor(inputs)


class Metrics:
    """The app's Prometheus metrics, in a registry of its own so that several apps in one process keep theirs apart."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("tinyship_requests", "HTTP requests by path and status.", ["path", "status"],
                                registry=self.registry)
        self.latency = Histogram("tinyship_request_seconds", "Time to answer a request, by path.", ["path"],
                                 buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.batch_size = Histogram("tinyship_batch_size",
                                    "Inputs per batch handed to the model (a bundle that is not batch-invariant "
                                    "runs them one at a time).",
                                    buckets=BATCH_BUCKETS, registry=self.registry)

    def request(self, path: str, status: int, seconds: float) -> None:
        # Known routes by name, every other path as one label: clients can neither grow the output nor shape its lines.
        label = path if path in ROUTES else DOCS_ASSETS if path.startswith(DOCS_ASSETS + "/") else "other"
        self.requests.labels(label, str(status)).inc()
        self.latency.labels(label).observe(seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class FrontDoor:
    """ASGI middleware before every route. It checks the Host and the API key, reads the body within its size and
    time limits, runs the app within the request's time limit, answers whatever fails with a JSON error (a bug as
    500), and gives each request an id (X-Request-ID), a log line and its count in the metrics."""

    def __init__(self, app, config: ServeConfig, metrics: Metrics):
        self.app, self.config, self.metrics = app, config, metrics
        self.hosts = {_host_name(host) for host in config.allowed_hosts}  # as Host headers are compared
        self.key = config.api_key.encode() if config.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, request_id, statuses = time.perf_counter(), _request_id(scope), []

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        async def answer(status: int, message: str, headers: dict[str, str] | None = None):
            if not statuses:  # nothing sent yet
                await _error(status, message, headers)(scope, receive, send_with_id)

        try:
            self._check_headers(scope)
            body = await self._read_body(receive)
            await asyncio.wait_for(self.app(scope, _replay(body, receive), send_with_id),
                                   self.config.request_timeout_s - (time.perf_counter() - start))
        except Refusal as refusal:
            await answer(refusal.status, str(refusal), refusal.headers)
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            await answer(504, f"no answer within {self.config.request_timeout_s:g} s: try again, or send fewer inputs")
        except ClientGone:
            pass
        except Exception:
            logger.exception("request %s failed", request_id)
            await answer(500, f"internal error (request id {request_id}): the server's log has the details")
        finally:
            status, seconds = statuses[0] if statuses else 499, time.perf_counter() - start  # 499: the client left
            self.metrics.request(scope["path"], status, seconds)
            logger.info("%s %s %s %d %.1f ms", request_id, scope["method"], _printable(scope["path"]), status,
                        seconds * 1e3)

    def _check_headers(self, scope) -> None:
        """Refuse an unknown Host, a missing or wrong API key, or a body declared over the limit, before reading it."""
        headers = dict(scope["headers"])
        if self.hosts:
            host = _host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.hosts:
                raise Refusal(400, f"Host {host!r} is not served here: use {' or '.join(sorted(self.hosts))}")
        if self.key and scope["path"] != "/healthz":
            scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
            if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.key):
                raise Refusal(401, "missing or wrong API key: send the header `Authorization: Bearer <key>`",
                              {"WWW-Authenticate": "Bearer"})
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.config.max_body_bytes:
            raise Refusal(413, f"request body of {int(length)} bytes is over the limit of {self.config.max_body_bytes}",
                          {"Connection": "close"})

    async def _read_body(self, receive) -> bytes:
        """The whole body; refused as soon as it passes max_body_bytes (413) or takes over body_timeout_s (408)."""
        try:
            # the body's time counts against the request's too: a body still arriving then is late (408)
            return await asyncio.wait_for(self._body(receive),
                                          min(self.config.body_timeout_s, self.config.request_timeout_s))
        except asyncio.TimeoutError:
            raise Refusal(408, f"the request body did not arrive within "
                               f"{min(self.config.body_timeout_s, self.config.request_timeout_s):g} s: send it whole",
                          {"Connection": "close"}) from None

    async def _body(self, receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.config.max_body_bytes:
                raise Refusal(413, f"request body is over the limit of {self.config.max_body_bytes} bytes",
                              {"Connection": "close"})
            if not message.get("more_body"):
                return b"".join(chunks)


def _replay(body: bytes, receive):
    """A receive for the app: the body already read, then whatever the client does next (its disconnect)."""
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed():
        return messages.pop() if messages else await receive()

    return replayed


def _request_id(scope) -> str:
    given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
    return given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def _host_name(host: str) -> str:
    """The Host header without its port: "[::1]:8000" -> "::1", "example.com:80" -> "example.com"."""
    if host.startswith("["):
        return host[1 : host.find("]")].lower()
    return host.rpartition(":")[0].lower() if ":" in host else host.lower()


def _printable(text: str) -> str:
    """Text for one log line: newlines and other control characters escaped."""
    return text.encode("unicode_escape").decode("ascii")


def create_app(bundles: dict[str, str | Path], config: ServeConfig = ServeConfig()):
    """The FastAPI app serving each bundle under its name."""
    import swagger_ui_bundle
    from fastapi import FastAPI, Request
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import Response
    from fastapi.staticfiles import StaticFiles
    from prometheus_client import CONTENT_TYPE_LATEST
    from pydantic import BaseModel, Field, ValidationError
    from starlette.exceptions import HTTPException

    class PredictRequest(BaseModel):
        inputs: Union[str, list[str], list[tuple[str, str]]] = Field(
            description="a text, a list of texts, or a list of [text, pair] lists (sentence pairs; question answering)")
        model: str | None = Field(None, description="which bundle, by name; optional when the server has one")
        top_k: int = Field(1, ge=1, le=100,
                           description="labels (classification) or answers (question answering) per input")

    if not bundles:
        raise TinyshipError("give at least one bundle to serve")
    predictors = {name: load(path, threads=config.threads, batch_size=config.max_batch)
                  for name, path in bundles.items()}
    metrics = Metrics()
    batchers: dict[str, Batcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for name, predictor in predictors.items():
            batchers[name] = Batcher(predictor, config, metrics)
            batchers[name].start()
        yield
        for batcher in batchers.values():  # in-flight requests finish before the server exits
            await batcher.stop()

    app = FastAPI(title="tinyship", description="Predictions from tinyship bundles.", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.openapi_version = "3.0.3"  # the bundled Swagger UI (4.x) renders OpenAPI 3.0 documents only, not FastAPI's 3.1
    app.state.batchers = batchers
    app.add_middleware(FrontDoor, config=config, metrics=metrics)
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        """Starlette's own errors (unknown route, wrong method) in the one error shape."""
        message = error.detail
        if error.status_code == 404:
            message = (f"no route {request.url.path}: this server answers POST {ROUTES[0]} "
                       f"and GET {', '.join(ROUTES[1:])}")
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}: use {(error.headers or {}).get('Allow')}"
        return _error(error.status_code, message, error.headers)

    body_schema = {"required": True, "content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}

    @app.post("/v1/predict", openapi_extra={"requestBody": body_schema})
    async def predict(request: Request):
        """Predictions for one input (an object back) or a list (a list back, in order)."""
        try:
            body = PredictRequest.model_validate(await _json_body(request))
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in x['loc']) or 'body'}: {x['msg']}" for x in e.errors())
            raise Refusal(422, f"malformed request ({problems}): {USAGE}") from None
        name = body.model or (next(iter(predictors)) if len(predictors) == 1 else None)
        if name is None:
            raise Refusal(422, f"this server has several models: name one with \"model\" ({', '.join(predictors)})")
        if name not in predictors:
            raise Refusal(404, f"no model {name!r}: this server has {', '.join(predictors)}")
        single = isinstance(body.inputs, str)
        inputs = [body.inputs] if single else list(body.inputs)
        try:
            _check(inputs, predictors[name], config)
            results = await batchers[name].predict(inputs, body.top_k)
        except TinyshipError as e:
            raise Refusal(422, str(e)) from None
        return {"model": name, "results": results[0] if single else results}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": list(predictors)}

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="tinyship",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")

    return app


async def _json_body(request) -> object:
    """The request's body parsed as JSON, or a Refusal that says what is wrong with it."""
    kind = request.headers.get("content-type", "application/json").partition(";")[0].strip().lower()
    if kind != "application/json" and not kind.endswith("+json"):
        raise Refusal(415, f"content type {kind!r}: send JSON with the header Content-Type: application/json")
    try:
        return json.loads(await request.body())
    except RecursionError:
        raise Refusal(400, f"the JSON body is nested too deeply: {USAGE}") from None
    except ValueError as e:  # not JSON, or bytes that are not text
        raise Refusal(400, f"the body is not JSON ({e}): {USAGE}") from None


def _check(inputs: list, predictor, config: ServeConfig) -> None:
    """Refuse a bad request before it joins a batch, where it would fail the other clients' inputs too."""
    if len(inputs) > config.max_inputs:
        raise TinyshipError(f"{len(inputs)} inputs: at most {config.max_inputs} per request")
    predictor.check(inputs)  # types, empty texts, and text that is not valid Unicode (JSON's "\ud800" escapes)
    for i, item in enumerate(inputs):
        if any(len(text) > config.max_chars for text in (item if isinstance(item, tuple) else (item,))):
            raise TinyshipError(f"input {i} is over {config.max_chars} characters")


def _error(status: int, message: str, headers: dict[str, str] | None = None):
    """The JSON error response; ASCII-escaped, so any text a client sent can be echoed safely."""
    from fastapi.responses import Response

    return Response(json.dumps({"error": message}), status_code=status, headers=headers, media_type="application/json")


def uvicorn_server(app, host: str, port: int, config: ServeConfig, **options):
    """The uvicorn server for an app. Our log line replaces uvicorn's access log. A graceful shutdown waits as long
    as an accepted request may take (request_timeout_s, then it has its answer or a 504) and a second more."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False,
                                         timeout_graceful_shutdown=math.ceil(config.request_timeout_s) + 1, **options))


def serve(bundles: dict[str, str | Path], host: str = "127.0.0.1", port: int = 8000,
          config: ServeConfig = ServeConfig()):
    """Run the server until interrupted. A bad address or port is a clear error, not a traceback."""
    from uvicorn.config import LOGGING_CONFIG

    _check_address(host, port, config)
    log_config = {**LOGGING_CONFIG, "loggers": {**LOGGING_CONFIG["loggers"], "tinyship": {
        "handlers": ["default"], "level": "INFO", "propagate": False}}}
    uvicorn_server(create_app(bundles, config), host, port, config, log_config=log_config).run()


def _check_address(host: str, port: int, config: ServeConfig) -> None:
    """Refuse a port out of range, an address this machine cannot listen on, a port in use, and an address that
    other machines reach when no API key guards it."""
    if not 0 <= port <= 65535:
        raise TinyshipError(f"port {port} is out of range: choose another --port, from 1 to 65535 (0: any free one)")
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:  # gaierror: not an address, nor a name this machine resolves
        raise TinyshipError(f"cannot listen on {host}:{port} ({getattr(e, 'strerror', None) or e}): "
                            "choose another --host") from None
    family, _, _, _, address = addresses[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
            probe.bind(address)
        except OSError as e:
            option = "--port" if e.errno in (errno.EADDRINUSE, errno.EACCES) else "--host"
            raise TinyshipError(f"cannot listen on {host}:{port} ({e.strerror}): choose another {option}") from None
    if not (config.api_key or config.insecure) and not all(ipaddress.ip_address(a[4][0]).is_loopback
                                                           for a in addresses):
        raise TinyshipError(f"--host {host} is reachable from other machines and no API key guards it: give a key with "
                            "--api-key-file FILE or the TINYSHIP_API_KEY variable, or pass --insecure if something "
                            "else (a proxy, a firewall) guards it")
