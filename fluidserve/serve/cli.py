"""``python -m fluidserve serve``: run the simulated OpenAI-compatible endpoint.

    python -m fluidserve serve --config config/default.yaml [--host 127.0.0.1 --port 8000 --time-scale 1.0]

Binds to 127.0.0.1 unless told otherwise; ``--port 0`` picks a free port. When the server is
ready it prints one line ``fluidserve serve: listening on http://HOST:PORT ...`` on stderr.
SIGINT/SIGTERM drain: new requests get 503, open streams get ``--shutdown-grace-s`` to finish,
the rest end with an error event and ``[DONE]``. With ``--output-dir`` the simulator's own
per-request records are written to ``DIR/request_traces.csv`` at shutdown.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from fluidserve.errors import InputError, cli_errors, require
from fluidserve.serve.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONCURRENCY

from fluidserve.serve.launch import READY_PREFIX


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (system, batch_time, workload for unset max_tokens)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port; default 8000)")
    parser.add_argument(
        "--time-scale", type=float, default=1.0,
        help="simulated seconds per wall second (2: twice as fast as the simulated GPU; default 1)",
    )
    parser.add_argument(
        "--api-key", default=os.environ.get("FLUIDSERVE_API_KEY"),
        help="require 'Authorization: Bearer KEY' on /v1 and /sim routes (default: $FLUIDSERVE_API_KEY, else none)",
    )
    parser.add_argument("--max-concurrency", type=int, default=DEFAULT_MAX_CONCURRENCY, help="requests in flight before 429")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES, help="request body limit (413 above)")
    parser.add_argument("--model-name", default=None, help="served model id (default: system.model, else 'fluidserve-sim')")
    parser.add_argument("--shutdown-grace-s", type=float, default=10.0, help="seconds open streams get to finish at shutdown")
    parser.add_argument("--output-dir", default=None, help="write the simulator's request_traces.csv here at shutdown")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    parser.add_argument(
        "--role", default="single", choices=["single", "prefill", "decode"],
        help="single instance, or a disaggregated prefill / decode stand-in (see fluidserve/serve/roles.py)",
    )
    parser.add_argument("--kv-link-GBps", type=float, default=25.0, help="prefill role: KV transfer link speed, GB/s")


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {args.port}")
    if args.max_concurrency < 1:
        raise InputError(f"--max-concurrency must be >= 1, got {args.max_concurrency}")
    if args.max_body_bytes < 1024:
        raise InputError(f"--max-body-bytes must be >= 1024, got {args.max_body_bytes}")
    if not args.shutdown_grace_s >= 0:
        raise InputError(f"--shutdown-grace-s must be >= 0, got {args.shutdown_grace_s}")
    if args.api_key is not None and not args.api_key.strip():
        raise InputError("--api-key is empty")


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; InputError naming host:port when that fails."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"--host {host!r} cannot be resolved ({exc})") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot bind {host}:{port} ({exc.strerror or exc})") from None
    sock.set_inheritable(True)
    return sock


class _Terminated(Exception):
    """SIGTERM, raised after uvicorn's graceful shutdown."""


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@cli_errors
def main(args: argparse.Namespace) -> int:
    _check(args)
    uvicorn = require("uvicorn", "serve")
    require("fastapi", "serve")
    require("prometheus_client", "serve")
    from fluidserve.config import load_config
    from fluidserve.serve.app import ServeState, create_app

    cfg = load_config(args.config)
    if cfg.cluster.replicas != 1:
        raise InputError(f"{args.config}: cluster.replicas is {cfg.cluster.replicas}; the endpoint simulates one replica")
    state = ServeState(
        cfg,
        time_scale=args.time_scale,
        model_name=args.model_name,
        api_key=args.api_key,
        max_concurrency=args.max_concurrency,
        max_body_bytes=args.max_body_bytes,
        role=args.role,
        kv_link_GBps=args.kv_link_GBps,
    )
    app = create_app(state)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    if not _is_loopback(host):
        print(f"warning: --host {args.host} binds {host}: the simulated endpoint is reachable from other machines"
              + ("" if args.api_key else " and has no --api-key"), file=sys.stderr, flush=True)
    shown_host = f"[{host}]" if ":" in host else host

    class DrainingServer(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            print(
                f"{READY_PREFIX}http://{shown_host}:{port} (model {state.model_name}, time scale {args.time_scale:g}, role {args.role})",
                file=sys.stderr,
                flush=True,
            )

        async def shutdown(self, sockets=None):
            for server in self.servers:
                server.close()  # stop accepting before the grace period
            await state.drain(args.shutdown_grace_s)
            await super().shutdown(sockets=sockets)

    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
        lifespan="on",
    )
    logging.getLogger("fluidserve").setLevel(args.log_level.upper())
    server = DrainingServer(config)
    # uvicorn drains on SIGINT and SIGTERM, then re-raises the captured signal with the handler
    # that was set before it started: KeyboardInterrupt for SIGINT, and for SIGTERM this one
    # (the default handler would kill the process before request_traces.csv is written).
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.output_dir:
        from fluidserve.sim.simulator import collect

        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        collect([state.engine]).requests.to_csv(out / "request_traces.csv", index=False)
        print(f"wrote {out / 'request_traces.csv'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fluidserve.serve.cli", description="OpenAI-compatible simulated endpoint")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
