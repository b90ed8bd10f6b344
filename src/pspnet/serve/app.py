"""The Starlette application of ``pspnet serve`` and the uvicorn server that runs it.

Routes: ``POST /v1/segment`` (an image as the multipart field ``image`` or as the raw body; answers a palette PNG
of class ids, ``?format=json`` or ``?format=overlay``), ``GET /v1/model``, ``GET /healthz``, ``GET /metrics``
(Prometheus text format) and ``GET /``, the page (package data under ``page/``).

Status codes: 400 for a malformed multipart body or a body that ends before its Content-Length (the client closed
the connection: the answer is counted in the metrics though it cannot reach the client), 413 for a body above
``max_bytes`` or an image above ``max_pixels``, 415 for bytes that are not an image, 422 for bad query parameters or
a missing image, 503 with ``Retry-After`` when the queue is full or the server is shutting down, 504 when the
request waited ``timeout`` seconds for its labels (its queue slot is freed then). Errors are JSON:
``{"error": "...", "status": N}``.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..constants import __version__
from ..inference import InferenceSettings
from ..segmenter import Segmenter
from .inputs import (
    FORMATS,
    HTTPProblem,
    check_size,
    decode_image,
    mask_png,
    multipart_image,
    overlay_jpeg,
    parse_options,
    segment_summary,
    settings_for,
)
from .jobs import BatchWorker, QueueClosed, QueueFull

__all__ = ["PAGE_FILES", "ServeConfig", "create_app", "run_server"]

# the page's files (package data), by the path they are served at
PAGE_FILES = {
    "/": ("index.html", "text/html"),
    "/page.js": ("page.js", "text/javascript"),
    "/page.css": ("page.css", "text/css"),
}
_ROUTES = ("/v1/segment", "/v1/model", "/healthz", "/metrics", *PAGE_FILES)
# request latency buckets, seconds
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(frozen=True)
class ServeConfig:
    """The server's limits. ``max_bytes``: largest request body (bytes); ``batch``: most images of one size in
    one forward pass; ``queue``: most images waiting; ``timeout``: seconds a request waits for its labels before a
    504; ``retry_after``: seconds a 503 (full queue, shutting down) asks the client to wait. The pixel limit is the segmenter's
    (``InferenceSettings.max_pixels``)."""

    max_bytes: int = 20 * 2**20
    batch: int = 4
    queue: int = 64
    timeout: float = 30.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in ("max_bytes", "batch", "queue", "retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be positive seconds, got {self.timeout!r}")


class _Metrics:
    """The Prometheus series of one app, in a registry of its own."""

    def __init__(self, worker: BatchWorker):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "pspnet_http_requests",
            "HTTP requests answered, by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "pspnet_http_request_duration_seconds",
            "time from request to answer, by path",
            ["path"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter("pspnet_images", "images segmented", registry=self.registry)
        depth = Gauge("pspnet_queue_depth", "images waiting in the queue", registry=self.registry)
        depth.set_function(lambda: worker.depth)
        rate = Gauge(
            "pspnet_images_per_second", "images segmented per second over the last 30 s", registry=self.registry
        )
        rate.set_function(lambda: worker.rate(30.0))
        busy = Gauge("pspnet_worker_busy", "1 while the worker computes a batch", registry=self.registry)
        busy.set_function(lambda: float(worker.busy))
        capacity = Gauge("pspnet_queue_capacity", "most images the queue holds", registry=self.registry)
        capacity.set(worker.capacity)


class _MetricsMiddleware:
    """Counts every HTTP answer by path and status and times it (ASGI middleware; the status is read from the
    ``http.response.start`` message)."""

    def __init__(self, app: ASGIApp, metrics: _Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"] if scope["path"] in _ROUTES else "other"
        start = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


def _problem(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``max_bytes`` (by its Content-Length or while
    it streams in), and with 400 when it ends before the length its Content-Length announced (the client closed the
    connection, or a server passed on a short body)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise HTTPProblem(400, f"Content-Length {length!r} is not a number")
        if int(length) > max_bytes:
            raise HTTPProblem(413, f"the body is {int(length)} bytes, above this server's {max_bytes}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise HTTPProblem(413, f"the body is above this server's {max_bytes} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        expected = f" of the {length} bytes its Content-Length announced" if length is not None else ""
        raise HTTPProblem(400, f"the client closed the connection after {size} bytes of the body{expected}") from None
    if length is not None and size != int(length):
        raise HTTPProblem(400, f"the body is {size} bytes, not the {length} bytes its Content-Length announced")
    return b"".join(chunks)


def _image_bytes(request: Request, body: bytes) -> bytes:
    """The image's bytes: the multipart field ``image`` of a ``multipart/form-data`` body, else the body."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return body
    return multipart_image(body, content_type)


def create_app(segmenter: Segmenter, config: ServeConfig | None = None) -> Starlette:
    """The application serving ``segmenter`` (any object with :class:`~pspnet.segmenter.Segmenter`'s ``settings``,
    ``card``, ``classes``, ``palette`` and ``predict_batch``): one :class:`~.jobs.BatchWorker` thread runs every
    forward pass, started and drained (every queued image finished) by the app's lifespan. ``app.state.worker``
    and ``app.state.config`` are there for tests and tools."""
    config = config or ServeConfig()
    base: InferenceSettings = segmenter.settings
    variants: dict[InferenceSettings, Segmenter] = {base: segmenter}

    def variant(settings: InferenceSettings) -> Segmenter:
        """The segmenter with a request's settings: a shallow copy sharing the model (made on the worker thread)."""
        if settings not in variants:
            if len(variants) >= 64:  # distinct query options are unbounded; the copies are cheap to make again
                variants.clear()
                variants[base] = segmenter
            other = copy.copy(segmenter)
            other.settings = settings
            variants[settings] = other
        return variants[settings]

    def run(settings: Any, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return variant(settings).predict_batch(images, max_batch=config.batch)

    worker = BatchWorker(run, capacity=config.queue, max_batch=config.batch)
    metrics = _Metrics(worker)
    retry = {"Retry-After": str(config.retry_after)}

    async def segment(request: Request) -> Response:
        options = parse_options(request.query_params.multi_items())
        settings = settings_for(base, options)
        body = await _read_body(request, config.max_bytes)
        data = await run_in_threadpool(_image_bytes, request, body)
        image = await run_in_threadpool(decode_image, data, max_pixels=base.max_pixels)
        check_size(image, settings)
        try:
            job = worker.submit(image, settings)
        except QueueFull as error:
            raise HTTPProblem(503, f"busy: {error}; retry later", headers=retry) from None
        except QueueClosed as error:
            raise HTTPProblem(503, str(error), headers=retry) from None
        try:
            labels = await asyncio.wait_for(asyncio.wrap_future(job.future), config.timeout)
        except TimeoutError:
            # frees the slot of an image still waiting; one being computed finishes and its labels are dropped
            where = "waited in the queue and was not computed" if worker.forget(job) else "was being computed"
            raise HTTPProblem(
                504, f"no answer within {config.timeout:g} s (the server's --timeout); the image {where}"
            ) from None
        except BaseException:  # cancelled (the client left) or the forward pass failed: free a waiting image's slot
            worker.forget(job)
            raise
        metrics.images.inc()
        if options.format == "json":
            summary = await run_in_threadpool(segment_summary, labels, segmenter.classes, segmenter.palette)
            return JSONResponse(summary)
        if options.format == "overlay":
            content = await run_in_threadpool(overlay_jpeg, image, labels, segmenter.palette, options.alpha)
        else:
            content = await run_in_threadpool(mask_png, labels, segmenter.palette)
        return Response(content, media_type=FORMATS[options.format])

    async def model_info(request: Request) -> Response:
        card = segmenter.card.to_dict()
        info = {
            "classes": list(segmenter.classes),
            "palette": [list(colour) for colour in segmenter.palette],
            "normalization": {**card["normalization"], "input": "RGB in [0, 255]: (x - mean) / std"},
            "ignore_index": card["ignore_index"],
            "dataset": card["dataset"],
            "architecture": card["model"],
            "card": card,
            "inference": {
                **{k: v for k, v in dataclasses.asdict(base).items() if k != "max_pixels"},
                "device": str(getattr(segmenter, "device", "cpu")),
            },
            "limits": {
                "max_bytes": config.max_bytes,
                "max_pixels": base.max_pixels,
                "batch": config.batch,
                "queue": config.queue,
                "timeout_s": config.timeout,
            },
            "formats": list(FORMATS),
            "pspnet_version": __version__,
        }
        return Response(json.dumps(info, default=list), media_type="application/json")

    async def healthz(request: Request) -> Response:
        if not worker.alive:
            return _problem(503, "the inference worker is not running", retry)
        return JSONResponse({"status": "ok", "queue_depth": worker.depth, "queue_capacity": worker.capacity})

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def page_file(name: str, media_type: str):
        async def serve_file(request: Request) -> Response:
            text = resources.files(__package__).joinpath("page", name).read_text(encoding="utf-8")
            return Response(text, media_type=f"{media_type}; charset=utf-8", headers={"Cache-Control": "no-cache"})

        return serve_file

    async def on_problem(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPProblem)
        return _problem(error.status, error.message, error.headers)

    async def on_http_exception(request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        return _problem(error.status_code, str(error.detail), dict(error.headers or {}))

    @asynccontextmanager
    async def lifespan(app: Starlette):
        worker.start()
        try:
            yield
        finally:  # uvicorn has answered every open request; the queue is empty unless a request gave up
            await run_in_threadpool(worker.close, config.timeout)

    routes = [
        Route("/v1/segment", segment, methods=["POST"]),
        Route("/v1/model", model_info, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        *(Route(path, page_file(name, kind), methods=["GET"]) for path, (name, kind) in PAGE_FILES.items()),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPProblem: on_problem, HTTPException: on_http_exception},
        lifespan=lifespan,
    )
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.state.worker = worker
    app.state.config = config
    app.state.metrics = metrics
    return app


def run_server(segmenter: Segmenter, config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``segmenter`` with uvicorn until SIGINT or SIGTERM: then uvicorn stops accepting connections and waits
    for the open requests (at most ``config.timeout`` + 5 s), and the worker finishes every queued image."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(segmenter, config),
            host=host,
            port=port,
            lifespan="on",
            timeout_graceful_shutdown=int(config.timeout) + 5,
            log_level="info",
        )
    )
    server.run()
