"""``hyprvdb serve``: an HTTP API over :class:`hyprvdb.serving.AdaptiveEncoder` (FastAPI).

Endpoints (JSON in and out):

- ``POST /embed`` ``{"texts": [str, ...], "step"?: int}`` → ``{"step", "embeddings"}``
  (without ``step``: the live step; with it, that past step, leaving the live weights as
  they are)
- ``POST /adapt`` ``{"pairs": [[query, positive], ...], "lr"?: float}`` →
  ``{"step", "loss", "changes", "swap_ms"}``
- ``GET /history`` → ``{"latest", "base_step", "steps", "changes", "path"}``
- ``POST /rollback`` ``{"step": int}`` → ``{"step"}``
- ``GET /healthz`` → ``{"status": "ok" | "degraded", "step"}`` (degraded: a live weight is not
  finite, or a replica's last poll of its history failed: ``follow_error`` says why)
- ``GET /metrics`` → Prometheus text format

A replica (``hyprvdb serve --follow URL``) serves the steps another process commits to the
history; it answers ``/adapt`` and ``/rollback`` with 400. Bad requests get a 4xx status and ``{"error": message}``. Every response that depends on the
adapter says which committed step it saw. A committed step is on disk (in the history file)
before ``/adapt`` answers.
"""

# No "from __future__ import annotations" here: FastAPI reads the body models' annotations at
# runtime, and the models are local to create_app.
import time
from typing import Any

from ._encoder import AdaptiveEncoder

__all__ = ["create_app"]

MAX_TEXTS = 256
MAX_TEXT_CHARS = 10_000


def create_app(encoder: AdaptiveEncoder) -> Any:
    """The FastAPI application serving ``encoder``.

    Examples
    --------
    >>> from hyprvdb.serve import AdaptiveEncoder, MiniLM, create_app
    >>> small = dict(layers=1, hidden=32, heads=2, intermediate=64, vocab=512)  # random weights
    >>> app = create_app(AdaptiveEncoder(MiniLM.random(0, **small)))
    >>> sorted(r.path for r in app.routes if r.path in ("/embed", "/adapt", "/healthz"))
    ['/adapt', '/embed', '/healthz']
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, PlainTextResponse
    from pydantic import BaseModel, Field, StrictInt
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="hyprvdb", description="MiniLM served with learning sparse adapters")
    metrics = encoder.metrics

    class EmbedIn(BaseModel):
        texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)
        step: StrictInt | None = None  # StrictInt: a boolean is not a step

    class AdaptIn(BaseModel):
        pairs: list[tuple[str, str]] = Field(min_length=2, max_length=MAX_TEXTS)
        lr: float | None = Field(default=None, gt=0, allow_inf_nan=False)

    class RollbackIn(BaseModel):
        step: StrictInt

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": message})

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
        metrics.observe(request.url.path, 0.0, ok=False)
        return error(422, "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    def timed(endpoint: str, fn: Any) -> Any:
        start = time.perf_counter()
        try:
            out = fn()
        except (ValueError, TypeError) as exc:
            metrics.observe(endpoint, time.perf_counter() - start, ok=False)
            return error(400, str(exc))
        metrics.observe(endpoint, time.perf_counter() - start)
        return out

    @app.post("/embed")
    def embed(body: EmbedIn) -> Any:
        def run() -> dict[str, Any]:
            for i, t in enumerate(body.texts):
                if not t.strip():
                    raise ValueError(f"texts[{i}] is empty")
                if len(t) > MAX_TEXT_CHARS:
                    raise ValueError(f"texts[{i}] has {len(t)} characters; at most "
                                     f"{MAX_TEXT_CHARS} are accepted")
            emb, step = encoder.encode(body.texts, step=body.step)
            metrics.count_texts(len(body.texts))
            return {"step": step, "embeddings": emb.tolist()}
        return timed("/embed", run)

    @app.post("/adapt")
    def adapt(body: AdaptIn) -> Any:
        return timed("/adapt", lambda: encoder.adapt([tuple(p) for p in body.pairs], lr=body.lr))

    @app.get("/history")
    def history() -> Any:
        out = encoder.history_summary()
        out.pop("history_bytes")
        return out

    @app.post("/rollback")
    def rollback(body: RollbackIn) -> Any:
        return timed("/rollback", lambda: {"step": encoder.rollback(body.step)})

    @app.get("/healthz")
    def healthz() -> Any:
        out = {"status": "ok" if encoder.healthy() else "degraded", "step": encoder.step}
        if encoder.follow_error is not None:  # a follower that cannot reach its history
            out.update(status="degraded", follow_error=encoder.follow_error)
        return out

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        lines = [
            "# HELP hyprvdb_requests_total Requests by endpoint.",
            "# TYPE hyprvdb_requests_total counter",
        ]
        with metrics.lock:
            reqs, errs, secs = dict(metrics.requests), dict(metrics.errors), dict(metrics.seconds)
        for ep, n in sorted(reqs.items()):
            lines.append(f'hyprvdb_requests_total{{endpoint="{ep}"}} {n}')
        lines += ["# HELP hyprvdb_request_errors_total Requests answered with a 4xx status.",
                  "# TYPE hyprvdb_request_errors_total counter"]
        for ep, n in sorted(errs.items()):
            lines.append(f'hyprvdb_request_errors_total{{endpoint="{ep}"}} {n}')
        lines += ["# HELP hyprvdb_request_seconds_total Time spent answering, by endpoint.",
                  "# TYPE hyprvdb_request_seconds_total counter"]
        for ep, s in sorted(secs.items()):
            lines.append(f'hyprvdb_request_seconds_total{{endpoint="{ep}"}} {s:.6f}')
        h = encoder.history_summary()
        lines += [
            "# HELP hyprvdb_step The committed step being served.",
            "# TYPE hyprvdb_step gauge", f"hyprvdb_step {encoder.step}",
            "# HELP hyprvdb_history_changes Stored changes in the history.",
            "# TYPE hyprvdb_history_changes gauge", f"hyprvdb_history_changes {h['changes']}",
            "# HELP hyprvdb_history_bytes Bytes held by the history in memory.",
            "# TYPE hyprvdb_history_bytes gauge", f"hyprvdb_history_bytes {h['history_bytes']}",
            "# HELP hyprvdb_embedded_texts_total Texts embedded.",
            "# TYPE hyprvdb_embedded_texts_total counter",
            f"hyprvdb_embedded_texts_total {metrics.embedded_texts}",
            "# HELP hyprvdb_adapt_steps_total Adaptation steps committed by this process.",
            "# TYPE hyprvdb_adapt_steps_total counter",
            f"hyprvdb_adapt_steps_total {metrics.adapt_steps}",
            "# HELP hyprvdb_last_swap_seconds Time to build and swap in the last step.",
            "# TYPE hyprvdb_last_swap_seconds gauge",
            f"hyprvdb_last_swap_seconds {metrics.last_swap_seconds:.6f}",
        ]
        return "\n".join(lines) + "\n"

    return app


def serve(host: str = "127.0.0.1", port: int = 8000, history: str | None = None,
          model: str | None = None, log_level: str = "info", follow: bool = False,
          follow_interval: float = 0.5) -> None:
    """Run the server until interrupted; ``follow``: a read-only replica of ``history``.

    Examples
    --------
    >>> from hyprvdb.serve import serve
    >>> serve(port=8000, history="model.hvh")  # doctest: +SKIP
    """
    import uvicorn

    from ._model import MiniLM
    encoder = AdaptiveEncoder(MiniLM.load(model), history, follow=follow,
                              follow_interval=follow_interval)
    encoder.encode(["warm up"])  # trace the forward pass before the first request
    uvicorn.run(create_app(encoder), host=host, port=port, log_level=log_level)
