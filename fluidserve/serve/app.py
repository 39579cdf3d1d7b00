"""The FastAPI app of the simulated OpenAI-compatible endpoint.

Routes: ``POST /v1/completions``, ``POST /v1/chat/completions`` (streaming over server-sent
events or not), ``GET /v1/models``, ``GET /health``, ``GET /metrics`` (Prometheus) and
``GET /sim/requests`` (the simulator's own per-request records, simulated seconds, in the
request_traces columns of fluidserve/sim/result.py; ``req_id`` is the number in the response
``id``, e.g. ``cmpl-17`` -> 17; ``t0_monotonic_s`` is the host's ``time.monotonic()`` at
simulated time 0, so a client on the same host can place simulated times on its own clock).

A request's prompt length comes from the token-count rule of fluidserve/serve/tokens.py; its
output length is ``max_tokens`` (``max_completion_tokens`` for chat), or, when unset, a draw
from the decode lengths of the config's workload (finish reason ``stop`` then, ``length``
otherwise). Requests that the engine could never serve (KV blocks for prompt + output beyond
the cache, or a prompt over the token budget B without chunked prefill) get 400.

Safety: ``api_key`` (Bearer token) guards everything but /health and /metrics; bodies over
``max_body_bytes`` get 413; more than ``max_concurrency`` requests in flight get 429; while
draining (shutdown) new requests get 503. Errors use OpenAI's error body. A client that
disconnects mid-stream has its request aborted in the engine (``engine.abort``, as vLLM does:
its KV blocks and batch slot are freed) and counted in ``vllm:request_success_total`` with
``finished_reason="abort"``; ``/sim/requests`` lists it with state ``aborted``.

Roles (``role``, fluidserve/serve/roles.py): ``single`` (the above), ``prefill`` (one token
after the prefill step plus ``kv_transfer_params`` with the modeled KV transfer) and ``decode``
(continues a request whose ``kv_transfer_params`` come from a prefill stand-in).
"""

# no "from __future__ import annotations": FastAPI resolves the route annotations (Request) at
# definition time, and Request is imported inside create_app (FastAPI is an optional extra).

import asyncio
import contextlib
import json
import logging
import time
import numpy as np

from fluidserve.config import Config
from fluidserve.errors import require
from fluidserve.serve.driver import SimClock, SimDriver, TokenStream
from fluidserve.serve.metrics import ServeMetrics
from fluidserve.serve.protocol import (
    DONE_EVENT,
    APIError,
    ChatCompletionRequest,
    ResponseShape,
    parse_body,
    prompt_tokens_of,
    requested_max_tokens,
    validate,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_CONCURRENCY = 1024


class BodyTooLarge(Exception):
    pass


class ServeState:
    """Everything the routes share: config, engine driver, metrics, limits, counters."""

    def __init__(
        self,
        cfg: Config,
        time_scale: float = 1.0,
        model_name: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        role: str = "single",
        kv_link_GBps: float = 25.0,
    ) -> None:
        from fluidserve.sim.simulator import make_engine

        serve_cfg = cfg.model_copy(deep=True)
        # the server keeps no event log and reads (then drops) one snapshot per step
        serve_cfg.sim = serve_cfg.sim.model_copy(update={"record_events": False, "snapshot_every": 1, "max_steps": None})
        self.cfg = cfg
        self.engine = make_engine(serve_cfg)
        self.clock = SimClock(time_scale)
        self.model_name = model_name or cfg.system.model or "fluidserve-sim"
        self.driver = SimDriver(self.engine, self.clock)
        self.metrics = ServeMetrics(self.driver, self.model_name)
        self.driver.observer = self.metrics.observe_step
        self.api_key = api_key
        self.max_concurrency = int(max_concurrency)
        self.max_body_bytes = int(max_body_bytes)
        self.in_flight = 0
        self.draining = False
        self.created = int(time.time())
        self._rng = np.random.default_rng(cfg.seed)
        self._decode_lengths: np.ndarray | None = None
        self.task: asyncio.Task | None = None
        self.role = role  # single | prefill | decode (fluidserve/serve/roles.py)
        self.prefill = None
        if role == "prefill":
            from fluidserve.serve.roles import PrefillDriver

            self.prefill = PrefillDriver(cfg.batch_time_model(), cfg.system.B, cfg.system.kv_bytes_per_token, kv_link_GBps, self.clock)

    # ----------------------------------------------------------- admission
    def sample_decode_tokens(self) -> int:
        """An output length drawn from the config workload's decode lengths."""
        if self._decode_lengths is None:
            from fluidserve.workload import make_workload

            self._decode_lengths = make_workload(self.cfg).decode_tokens
        return int(self._rng.choice(self._decode_lengths))

    def check_servable(self, prompt_tokens: int, decode_tokens: int) -> None:
        """400 for requests the engine would reject (same conditions as the engine)."""
        reason = self.engine.rejection_reason(prompt_tokens, decode_tokens)
        if reason is not None:
            param = "prompt" if "budget" in reason else "max_tokens"
            raise APIError(
                400, f"prompt ({prompt_tokens} tokens) + max_tokens ({decode_tokens}) cannot be served: {reason}",
                param=param,
            )

    def check_auth(self, headers) -> None:
        if self.api_key is None:
            return
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            raise APIError(401, "invalid or missing API key (send 'Authorization: Bearer <key>')", "authentication_error", code="invalid_api_key")

    async def drain(self, grace_s: float) -> None:
        """Refuse new requests, let open streams finish for ``grace_s``, end the rest with an error event."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight:
            log.warning("shutdown: ending %d open stream(s) after %.1f s grace", self.in_flight, grace_s)
            for stream in list(self.driver.active.values()):
                stream.cancel("server shutting down")
            for _ in range(40):
                if not self.in_flight:
                    break
                await asyncio.sleep(0.05)


def error_response(err: APIError):
    from starlette.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status)


class BodyLimit:
    """ASGI middleware: 413 (OpenAI error body) for request bodies over ``limit`` bytes."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        err = APIError(413, f"request body exceeds the limit of {self.limit} bytes", code=413)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    return await error_response(err)(scope, receive, send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await error_response(err)(scope, receive, send)


def create_app(state: ServeState):
    """The FastAPI app serving ``state`` (the driver task runs in the app's lifespan)."""
    fastapi = require("fastapi", "serve")
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse

    class SimStreamingResponse(StreamingResponse):
        """A streaming response that frees its concurrency slot exactly once, however it ends."""

        def __init__(self, content, on_close, **kwargs) -> None:
            super().__init__(content, **kwargs)
            self._on_close = on_close

        async def __call__(self, scope, receive, send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                self._on_close()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.clock.start()
        runner = state.prefill.run() if state.prefill is not None else state.driver.run()
        state.task = asyncio.create_task(runner, name="fluidserve-sim-driver")
        try:
            yield
        finally:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.task

    app = fastapi.FastAPI(title="fluidserve simulated endpoint", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return error_response(exc)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, exc):
        return error_response(APIError(413, f"request body exceeds the limit of {state.max_body_bytes} bytes", code=413))

    @app.exception_handler(404)
    async def _not_found(request, exc):
        return error_response(APIError(404, f"no route {request.method} {request.url.path}", "not_found_error", code=404))

    @app.exception_handler(405)
    async def _not_allowed(request, exc):
        return error_response(APIError(405, f"method {request.method} not allowed on {request.url.path}", code=405))

    @app.get("/health")
    async def health():
        if state.driver.error is not None:
            return JSONResponse({"status": "error", "error": str(state.driver.error)}, status_code=503)
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics():
        body, ctype = state.metrics.exposition()
        return Response(body, media_type=ctype)

    @app.get("/v1/models")
    async def models(request: Request):
        state.check_auth(request.headers)
        return {
            "object": "list",
            "data": [{"id": state.model_name, "object": "model", "created": state.created, "owned_by": "fluidserve"}],
        }

    @app.get("/sim/requests")
    async def sim_requests(request: Request):
        state.check_auth(request.headers)
        from fluidserve.sim.simulator import collect

        df = collect([state.engine]).requests
        records = df.astype(object).where(df.notna(), None).to_dict(orient="records")
        return {
            "time_scale": state.clock.time_scale,
            "now_s": state.clock.now_s(),
            "t0_monotonic_s": state.clock.t0_wall,  # time.monotonic() at simulated time 0 (same host clock)
            "requests": records,
        }

    async def handle(kind: str, request: Request):
        state.check_auth(request.headers)
        if state.draining:
            raise APIError(503, "server is shutting down", "server_error", code=503)
        if state.driver.error is not None:
            raise APIError(503, f"simulator stopped: {state.driver.error}", "server_error", code=503)
        if state.in_flight >= state.max_concurrency:
            raise APIError(429, f"too many concurrent requests (limit {state.max_concurrency})", "rate_limit_error", code=429)
        req = validate(kind, parse_body(await request.body()))
        if req.model != state.model_name:
            raise APIError(404, f"The model `{req.model}` does not exist.", "not_found_error", param="model", code="model_not_found")
        prompt_tokens = prompt_tokens_of(req)
        if state.prefill is not None:
            return await _prefill_role(kind, req, prompt_tokens)
        max_tokens = requested_max_tokens(req)
        decode_tokens = max_tokens if max_tokens is not None else state.sample_decode_tokens()
        state.check_servable(prompt_tokens, decode_tokens)
        ready_s = _transferred_kv_ready_s(req) if state.role == "decode" else None
        stream = state.driver.submit(prompt_tokens, decode_tokens, prefilled=ready_s is not None, arrival_s=ready_s)
        stream.finish_reason = "length" if max_tokens is not None else "stop"
        state.metrics.observe_request(prompt_tokens)
        prefix = "chatcmpl" if isinstance(req, ChatCompletionRequest) else "cmpl"
        shape = ResponseShape(kind, f"{prefix}-{stream.gid}", state.model_name, int(time.time()), prompt_tokens, decode_tokens, stream.finish_reason)
        state.in_flight += 1
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return SimStreamingResponse(
                _events(stream, shape, include_usage),
                on_close=_release_slot,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            await stream.wait_beyond(decode_tokens - 1)
            if stream.cancelled:
                raise APIError(503, stream.cancelled, "server_error", code=503)
            return shape.full_body()
        finally:
            state.in_flight -= 1

    def _release_slot() -> None:
        state.in_flight -= 1

    def _transferred_kv_ready_s(req) -> float | None:
        """Decode role: simulated time at which the request's transferred KV arrives (None: no KV sent)."""
        from fluidserve.errors import InputError
        from fluidserve.serve.roles import kv_ready_monotonic_s

        try:
            ready = kv_ready_monotonic_s((req.model_extra or {}).get("kv_transfer_params"))
        except InputError as exc:
            raise APIError(400, str(exc), param="kv_transfer_params") from None
        if ready is None:
            return None
        return (ready - state.clock.t0_wall) * state.clock.time_scale  # same host clock

    async def _prefill_role(kind: str, req, prompt_tokens: int):
        """Prefill role: one token at the end of the prefill step, plus the modeled KV transfer."""
        state.check_servable(prompt_tokens, 1)
        ticket = state.prefill.submit(prompt_tokens)
        state.metrics.observe_request(prompt_tokens)
        prefix = "chatcmpl" if isinstance(req, ChatCompletionRequest) else "cmpl"
        shape = ResponseShape(kind, f"{prefix}-p{ticket.req}", state.model_name, int(time.time()), prompt_tokens, 1, "length")
        state.in_flight += 1
        try:
            await ticket.done.wait()
        finally:
            state.in_flight -= 1
        if state.prefill.error is not None:
            raise APIError(503, f"simulator stopped: {state.prefill.error}", "server_error", code=503)
        params = ticket.kv_transfer_params(state.clock)
        if not req.stream:
            return {**shape.full_body(), "kv_transfer_params": params}

        async def events():
            yield shape.token_chunk(0)
            yield "data: " + json.dumps({"id": shape.id, "choices": [], "kv_transfer_params": params}) + "\n\n"
            if req.stream_options and req.stream_options.include_usage:
                yield shape.usage_chunk()
            yield DONE_EVENT

        return StreamingResponse(events(), media_type="text/event-stream")

    async def _events(stream: TokenStream, shape: ResponseShape, include_usage: bool):
        sent = 0
        total = stream.decode_tokens
        try:
            while sent < total:
                n = await stream.wait_beyond(sent)
                if stream.cancelled is not None:
                    yield shape.error_chunk(APIError(503, stream.cancelled, "server_error", code=503))
                    yield DONE_EVENT
                    return
                if n == sent + 1:
                    yield shape.token_chunk(sent)
                else:
                    yield "".join(shape.token_chunk(k) for k in range(sent, n))
                sent = n
            if include_usage:
                yield shape.usage_chunk()
            yield DONE_EVENT
        finally:  # the client disconnected (the generator is closed or cancelled) before the end
            if not stream.finished and stream.cancelled is None and state.driver.abort(stream):
                state.metrics.observe_abort()

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle("completion", request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle("chat", request)

    return BodyLimit(app, state.max_body_bytes)


def app_state(asgi_app) -> ServeState:
    """The :class:`ServeState` behind an app returned by :func:`create_app`."""
    return asgi_app.app.state.serve
