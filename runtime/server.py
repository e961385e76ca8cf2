"""`tinyship serve`: bundles over HTTP (FastAPI on uvicorn), with requests from concurrent clients micro-batched.

POST /v1/predict runs one or many inputs through a bundle; GET /healthz says the server is up; GET /metrics gives
Prometheus text (requests, latency and batch-size histograms); /docs is the OpenAPI page. Requests that arrive
while the model runs share its next run (up to max_batch inputs); max_wait_ms > 0 also holds a lone request back
that long for company. Every limit answers with a JSON error:
413 for a large body, 422 for a malformed request, 404 for an unknown model.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from tinyship.runtime import QuestionAnswerer, TextClassifier, load
from tinyship.runtime.errors import TinyshipError

# No `from __future__ import annotations` here: FastAPI reads the request model from the handler's annotation.
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class ServeConfig:
    """Limits and batching of the HTTP server."""

    max_batch: int = 32  # inputs per model run
    max_wait_ms: float = 0.0  # how long a request waits for others to share its run; 0: a run takes what queued
    # while the previous one ran (measured best on CPU: benchmarks/results/runtime)
    max_inputs: int = 64  # inputs per request
    max_chars: int = 20_000  # characters per text
    max_body_bytes: int = 1_000_000
    threads: int | None = None  # onnxruntime threads per model (default: all cores)


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
        await self.queue.put((inputs, top_k, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            if self.config.max_wait_ms > 0 and self.queue.qsize() + len(jobs[0][0]) < self.config.max_batch:
                await asyncio.sleep(self.config.max_wait_ms / 1e3)  # let concurrent requests join this run
            size = len(jobs[0][0])
            while size < self.config.max_batch and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                size += len(jobs[-1][0])
            try:
                await self._run(jobs, loop)
            finally:
                for _ in jobs:
                    self.queue.task_done()

    async def _run(self, jobs: list, loop) -> None:
        by_top_k: dict[int, list] = {}
        for job in jobs:  # one model run per top_k asked for (almost always one)
            by_top_k.setdefault(job[1], []).append(job)
        for top_k, group in by_top_k.items():
            inputs = [x for job in group for x in job[0]]
            self.metrics.batch(len(inputs))
            try:
                results = await loop.run_in_executor(self.pool, self._call, inputs, top_k)
            except Exception as e:  # handed to each waiting request
                for _, _, future in group:
                    future.set_exception(e)
                continue
            start = 0
            for job_inputs, _, future in group:
                future.set_result(results[start : start + len(job_inputs)])
                start += len(job_inputs)

    def _call(self, inputs: list, top_k: int) -> list:
        if isinstance(self.predictor, (TextClassifier, QuestionAnswerer)):
            return self.predictor(inputs, top_k=top_k)
        return self.predictor(inputs)


class Metrics:
    """Counters and histograms, written in Prometheus text format."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum = 0.0
        self.batches = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_sum = 0

    def request(self, path: str, status: int, ms: float) -> None:
        self.requests[(path, status)] = self.requests.get((path, status), 0) + 1
        if path == "/v1/predict" and status == 200:
            self.latency[_bucket(ms, LATENCY_BUCKETS_MS)] += 1
            self.latency_sum += ms / 1e3

    def batch(self, size: int) -> None:
        self.batches[_bucket(size, BATCH_BUCKETS)] += 1
        self.batch_sum += size

    def text(self) -> str:
        lines = ["# HELP tinyship_requests_total HTTP requests by path and status.", "# TYPE tinyship_requests_total counter"]
        lines += [f'tinyship_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
        lines += _histogram("tinyship_predict_seconds", "Latency of successful predict requests.",
                            [b / 1e3 for b in LATENCY_BUCKETS_MS], self.latency, self.latency_sum)
        lines += _histogram("tinyship_batch_size", "Inputs per model run.", BATCH_BUCKETS, self.batches, self.batch_sum)
        return "\n".join(lines) + "\n"


def _bucket(value: float, bounds: tuple) -> int:
    return next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))


def _histogram(name: str, help: str, bounds, counts: list[int], total: float) -> list[str]:
    lines, running = [f"# HELP {name} {help}", f"# TYPE {name} histogram"], 0
    for bound, count in zip([*bounds, "+Inf"], counts):
        running += count
        lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
    return lines + [f"{name}_sum {total}", f"{name}_count {running}"]


def create_app(bundles: dict[str, str | Path], config: ServeConfig = ServeConfig()):
    """The FastAPI app serving each bundle under its name."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import PlainTextResponse
    from pydantic import BaseModel, Field

    class PredictRequest(BaseModel):
        inputs: Union[str, list[str], list[tuple[str, str]]] = Field(
            description="a text, a list of texts, or a list of [text, pair] lists (sentence pairs; question answering)")
        model: str | None = Field(None, description="which bundle, by name; optional when the server has one")
        top_k: int = Field(1, ge=1, le=100, description="labels (classification) or answers (question answering) per input")

    if not bundles:
        raise TinyshipError("give at least one bundle to serve")
    predictors = {name: load(path, threads=config.threads, batch_size=config.max_batch) for name, path in bundles.items()}
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

    app = FastAPI(title="tinyship", description="Predictions from tinyship bundles.", lifespan=lifespan)
    app.state.batchers = batchers

    @app.middleware("http")
    async def limits_and_metrics(request: Request, call_next):
        start = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            response = _error(413, f"request body of {length} bytes is over the limit of {config.max_body_bytes}")
        else:
            response = await call_next(request)
        metrics.request(request.url.path, response.status_code, (time.perf_counter() - start) * 1e3)
        return response

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return _error(422, f"malformed request ({problems}): send {{\"inputs\": \"a text\" or [\"texts\", ...]}}")

    @app.post("/v1/predict")
    async def predict(body: PredictRequest):
        """Predictions for one input (an object back) or a list (a list back, in order)."""
        name = body.model or (next(iter(predictors)) if len(predictors) == 1 else None)
        if name is None:
            return _error(422, f"this server has several models: name one with \"model\" ({', '.join(predictors)})")
        if name not in predictors:
            return _error(404, f"no model {name!r}: this server has {', '.join(predictors)}")
        single = isinstance(body.inputs, str)
        inputs = [body.inputs] if single else list(body.inputs)
        try:
            _check(inputs, predictors[name], config)
        except TinyshipError as e:
            return _error(422, str(e))
        try:
            results = await batchers[name].predict(inputs, body.top_k)
        except TinyshipError as e:
            return _error(422, str(e))
        return {"model": name, "results": results[0] if single else results}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "models": list(predictors)}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus():
        return metrics.text()

    return app


def _check(inputs: list, predictor, config: ServeConfig) -> None:
    """Refuse a bad request before it joins a batch, where it would fail the other clients' inputs too."""
    if len(inputs) > config.max_inputs:
        raise TinyshipError(f"{len(inputs)} inputs: at most {config.max_inputs} per request")
    predictor.check(inputs)
    for i, item in enumerate(inputs):
        if any(len(text) > config.max_chars for text in (item if isinstance(item, tuple) else (item,))):
            raise TinyshipError(f"input {i} is over {config.max_chars} characters")


def _error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": message})


def serve(bundles: dict[str, str | Path], host: str = "127.0.0.1", port: int = 8000, config: ServeConfig = ServeConfig()):
    """Run the server until interrupted; a port in use is a clear error, not a traceback."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise TinyshipError(f"cannot listen on {host}:{port} ({e.strerror}): choose another --port") from None
    uvicorn.run(create_app(bundles, config), host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
