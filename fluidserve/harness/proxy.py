"""The disaggregated-serving proxy: one OpenAI endpoint in front of a prefill and a decode instance.

    python -m fluidserve.harness.proxy --prefill-url http://127.0.0.1:8100 --decode-url http://127.0.0.1:8200 \\
        [--connector nixl|p2p-nccl] [--port 8000] [--output-dir DIR]

For each ``POST /v1/completions`` (or ``/v1/chat/completions``) it

1. sends the request to the prefill instance with ``max_tokens=1`` (``max_completion_tokens=1``
   too when given), ``stream: false``, no ``stream_options``/``min_tokens``, plus the connector's
   KV-transfer parameters: for ``nixl`` (vLLM's NixlConnector, and the fluidserve stand-ins)
   ``kv_transfer_params = {"do_remote_decode": true, ...}``; for ``p2p-nccl`` (vLLM's
   P2pNcclConnector) the header ``X-Request-Id: ___prefill_addr_{P}___decode_addr_{D}_{uuid}``
   naming both instances' KV (ZMQ) addresses, which the connector reads to pair them;
2. sends the original request to the decode instance, with the ``kv_transfer_params`` the
   prefill instance answered (nixl) and the same request id, and streams its answer back.

Recorded per request (``GET /proxy/requests``; appended to ``DIR/proxy_requests.csv`` as each
request ends, so a killed run keeps what it measured), in seconds of the proxy's clock
(``time.perf_counter`` from the proxy's start): ``arrival_s``; ``prefill_s`` (arrival to the
prefill instance's answer: queueing + prefill); ``decode_ttft_s`` (decode request sent to its
first token: KV transfer + first decode step); ``kv_transfer_reported_s`` (the transfer time
the prefill instance reports in ``kv_transfer_params.kv_transfer_s``, in that server's own
seconds; vLLM does not report it: empty); ``ttft_s`` (arrival to the first decode token),
``tbt_s`` (mean gap between decode tokens), ``e2e_s`` (arrival to the last token), ``tokens``,
``http_status`` and ``error``.
"""

# no "from __future__ import annotations": FastAPI resolves the route annotations (Request) at
# definition time, and Request is imported inside create_proxy_app (FastAPI is an optional extra).

import argparse
import asyncio
import contextlib
import copy
import csv
import json
import math
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from fluidserve.errors import InputError, cli_errors, require

CONNECTORS = ("nixl", "p2p-nccl")
READY_PREFIX = "fluidserve proxy: listening on "
RECORD_COLUMNS = [
    "req_id", "request_id", "arrival_s", "prompt_tokens", "max_tokens", "prefill_s", "decode_ttft_s",
    "kv_transfer_reported_s", "ttft_s", "tbt_s", "e2e_s", "tokens", "http_status", "error",
]
NIXL_PREFILL_PARAMS = {
    "do_remote_decode": True, "do_remote_prefill": False, "remote_engine_id": None,
    "remote_block_ids": None, "remote_host": None, "remote_port": None,
}


class ProxyState:
    """Upstreams, connector, the request records and their CSV file."""

    def __init__(self, prefill_url: str, decode_url: str, connector: str = "nixl",
                 prefill_kv_addr: str | None = None, decode_kv_addr: str | None = None,
                 output_dir: str | Path | None = None) -> None:
        for name, url in (("--prefill-url", prefill_url), ("--decode-url", decode_url)):
            if not url.startswith(("http://", "https://")):
                raise InputError(f"{name} must start with http:// or https://, got '{url}'")
        if connector not in CONNECTORS:
            raise InputError(f"--connector must be one of {', '.join(CONNECTORS)}, got '{connector}'")
        if connector == "p2p-nccl" and not (prefill_kv_addr and decode_kv_addr):
            raise InputError("--connector p2p-nccl needs --prefill-kv-addr and --decode-kv-addr (HOST:KV_PORT)")
        self.prefill_url = prefill_url.rstrip("/")
        self.decode_url = decode_url.rstrip("/")
        self.connector = connector
        self.prefill_kv_addr = prefill_kv_addr
        self.decode_kv_addr = decode_kv_addr
        self.records: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()
        self._next = 0
        self.csv_path = None
        if output_dir is not None:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            self.csv_path = out / "proxy_requests.csv"
            with open(self.csv_path, "w", newline="") as f:
                csv.writer(f).writerow(RECORD_COLUMNS)

    def now_s(self) -> float:
        return time.perf_counter() - self.t0

    def request_id(self, given: str | None) -> str:
        tail = given or uuid.uuid4().hex
        if self.connector == "p2p-nccl":
            return f"___prefill_addr_{self.prefill_kv_addr}___decode_addr_{self.decode_kv_addr}_{tail}"
        return tail

    def new_record(self, request_id: str, body: dict[str, Any]) -> dict[str, Any]:
        rec = {c: math.nan for c in RECORD_COLUMNS}
        rec.update({"req_id": self._next, "request_id": request_id, "arrival_s": self.now_s(), "tokens": 0,
                    "http_status": None, "error": "", "prompt_tokens": _prompt_len(body),
                    "max_tokens": body.get("max_completion_tokens", body.get("max_tokens"))})
        self._next += 1
        return rec

    def finish(self, rec: dict[str, Any]) -> None:
        self.records.append(rec)
        if self.csv_path is not None:
            with open(self.csv_path, "a", newline="") as f:
                csv.writer(f).writerow(["" if _isnan(rec[c]) else rec[c] for c in RECORD_COLUMNS])


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _prompt_len(body: dict[str, Any]) -> Any:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int):
        return len(prompt)
    return math.nan


def prefill_request(body: dict[str, Any], connector: str) -> dict[str, Any]:
    """The body sent to the prefill instance (see the module docstring)."""
    req = copy.deepcopy(body)
    req["max_tokens"] = 1
    if "max_completion_tokens" in req:
        req["max_completion_tokens"] = 1
    req["stream"] = False
    for key in ("stream_options", "min_tokens", "min_completion_tokens"):
        req.pop(key, None)
    if connector == "nixl":
        req["kv_transfer_params"] = dict(NIXL_PREFILL_PARAMS)
    return req


def _token_texts(obj: dict[str, Any]) -> bool:
    """Whether a stream chunk carries output text (completion or chat)."""
    for choice in obj.get("choices") or ():
        if choice.get("text") or (choice.get("delta") or {}).get("content"):
            return True
    return False


def create_proxy_app(state: ProxyState):
    fastapi = require("fastapi", "serve")
    httpx = require("httpx", "calib")
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse

    clients: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        clients["c"] = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=30.0), limits=limits)
        try:
            yield
        finally:
            await clients["c"].aclose()

    app = fastapi.FastAPI(title="fluidserve disaggregation proxy", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.get("/health")
    async def health():
        client = clients["c"]
        for url in (state.prefill_url, state.decode_url):
            try:
                r = await client.get(url + "/health", timeout=5.0)
            except httpx.TransportError as exc:
                return JSONResponse({"status": "error", "upstream": url, "error": str(exc)}, status_code=503)
            if r.status_code != 200:
                return JSONResponse({"status": "error", "upstream": url, "code": r.status_code}, status_code=503)
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models(request: Request):
        r = await clients["c"].get(state.decode_url + "/v1/models", headers=_auth(request))
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    @app.get("/proxy/requests")
    async def proxy_requests():
        return {"columns": RECORD_COLUMNS, "requests": [{k: (None if _isnan(v) else v) for k, v in r.items()} for r in state.records]}

    async def handle(api: str, request: Request):
        client = clients["c"]
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError as exc:
            return JSONResponse({"error": {"message": f"request body is not valid JSON: {exc}", "type": "invalid_request_error", "param": None, "code": None}}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": {"message": "request body must be a JSON object", "type": "invalid_request_error", "param": None, "code": None}}, status_code=400)
        rid = state.request_id(request.headers.get("x-request-id"))
        rec = state.new_record(rid, body)
        headers = {**_auth(request), "X-Request-Id": rid}
        try:
            pre = await client.post(state.prefill_url + api, json=prefill_request(body, state.connector), headers=headers)
        except httpx.TransportError as exc:
            rec.update(error=f"prefill: {type(exc).__name__}: {exc}", http_status=502)
            state.finish(rec)
            return JSONResponse({"error": {"message": rec["error"], "type": "server_error", "param": None, "code": 502}}, status_code=502)
        rec["prefill_s"] = state.now_s() - rec["arrival_s"]
        if pre.status_code != 200:
            rec.update(error=f"prefill: HTTP {pre.status_code}", http_status=pre.status_code)
            state.finish(rec)
            return Response(pre.content, status_code=pre.status_code, media_type="application/json")
        try:
            kv = (pre.json() or {}).get("kv_transfer_params")
        except (ValueError, AttributeError):
            kv = None
        dec_body = copy.deepcopy(body)
        if kv and state.connector == "nixl":
            dec_body["kv_transfer_params"] = kv
            reported = kv.get("kv_transfer_s") if isinstance(kv, dict) else None
            if isinstance(reported, (int, float)):
                rec["kv_transfer_reported_s"] = float(reported)
        sent = state.now_s()
        try:
            upstream = await client.send(client.build_request("POST", state.decode_url + api, json=dec_body, headers=headers), stream=True)
        except httpx.TransportError as exc:
            rec.update(error=f"decode: {type(exc).__name__}: {exc}", http_status=502)
            state.finish(rec)
            return JSONResponse({"error": {"message": rec["error"], "type": "server_error", "param": None, "code": 502}}, status_code=502)
        rec["http_status"] = upstream.status_code
        if upstream.status_code != 200 or not body.get("stream"):
            content = await upstream.aread()
            await upstream.aclose()
            now = state.now_s()
            if upstream.status_code == 200:
                rec.update(decode_ttft_s=now - sent, ttft_s=now - rec["arrival_s"], e2e_s=now - rec["arrival_s"])
                with contextlib.suppress(ValueError, AttributeError):
                    rec["tokens"] = int(json.loads(content)["usage"]["completion_tokens"])
            else:
                rec["error"] = f"decode: HTTP {upstream.status_code}"
            state.finish(rec)
            return Response(content, status_code=upstream.status_code, media_type=upstream.headers.get("content-type", "application/json"))

        async def relay():
            times: list[float] = []
            buf = b""
            try:
                async for chunk in upstream.aiter_raw():
                    now = state.now_s()
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.startswith(b"data:") and line[5:].strip() != b"[DONE]":
                            try:
                                obj = json.loads(line[5:])
                            except ValueError:
                                continue
                            if isinstance(obj, dict) and obj.get("error"):
                                rec["error"] = f"decode: {json.dumps(obj['error'])[:200]}"
                            elif isinstance(obj, dict) and _token_texts(obj):
                                times.append(now)
                    yield chunk
            except (asyncio.CancelledError, httpx.TransportError) as exc:
                rec["error"] = rec["error"] or f"stream ended: {type(exc).__name__}"
                raise
            finally:
                await upstream.aclose()
                if times:
                    rec["decode_ttft_s"] = times[0] - sent
                    rec["ttft_s"] = times[0] - rec["arrival_s"]
                    rec["e2e_s"] = times[-1] - rec["arrival_s"]
                    rec["tbt_s"] = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else math.nan
                rec["tokens"] = len(times)
                state.finish(rec)

        return StreamingResponse(relay(), status_code=200, media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle("/v1/completions", request)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle("/v1/chat/completions", request)

    return app


def _auth(request) -> dict[str, str]:
    auth = request.headers.get("authorization")
    return {"Authorization": auth} if auth else {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefill-url", required=True, help="base URL of the prefill instance")
    parser.add_argument("--decode-url", required=True, help="base URL of the decode instance")
    parser.add_argument("--connector", default="nixl", choices=CONNECTORS, help="KV-transfer connector of the instances")
    parser.add_argument("--prefill-kv-addr", help="p2p-nccl: HOST:KV_PORT of the prefill instance")
    parser.add_argument("--decode-kv-addr", help="p2p-nccl: HOST:KV_PORT of the decode instance")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port)")
    parser.add_argument("--output-dir", default=None, help="append each request's record to DIR/proxy_requests.csv")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])


@cli_errors
def main(args: argparse.Namespace) -> int:
    uvicorn = require("uvicorn", "serve")
    from fluidserve.serve.cli import bind_socket

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {args.port}")
    state = ProxyState(args.prefill_url, args.decode_url, args.connector, args.prefill_kv_addr, args.decode_kv_addr, args.output_dir)
    app = create_proxy_app(state)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]

    class ReadyServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            print(f"{READY_PREFIX}http://{host}:{port} ({state.connector}: {state.prefill_url} -> {state.decode_url})",
                  file=sys.stderr, flush=True)

    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, backlog=4096, timeout_graceful_shutdown=2, lifespan="on")
    try:
        ReadyServer(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m fluidserve.harness.proxy", description="disaggregated prefill/decode proxy")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
