"""Server processes the harness starts, and how it stops them.

Each server runs in its own session (``start_new_session``: its own process group), so a
Ctrl-C on the terminal reaches only the harness, which then stops the servers itself, in
order, and writes what it measured; and stopping a server stops every process it spawned
(vLLM's engine core and workers included). Stopping sends SIGINT to the group, waits
``stop_timeout_s``, then SIGTERM, then SIGKILL. Output (stdout and stderr) goes to a log file
in the run's output folder.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fluidserve.errors import FluidserveError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class ServerSpec:
    """What to start: ``argv`` with ``env`` added to the harness's environment."""

    name: str  # e.g. "single", "prefill", "decode", "proxy"
    argv: list[str]
    url: str
    env: dict[str, str] = field(default_factory=dict)
    gpu: int | None = None
    health_path: str = "/health"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "gpu": self.gpu, "argv": list(self.argv), "env": dict(self.env)}


class ManagedServer:
    """One started :class:`ServerSpec`: its process group, log and health check."""

    def __init__(self, spec: ServerSpec, log_path: str | Path, stop_timeout_s: float = 30.0) -> None:
        self.spec = spec
        self.log_path = Path(log_path)
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> "ManagedServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.spec.env}
        self.proc = subprocess.Popen(self.spec.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, start_new_session=True)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return " ".join(self.log_path.read_text(errors="replace")[-chars:].split())
        except OSError:
            return ""

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll ``GET url + health_path`` until 200; FluidserveError if the server exits or times out."""
        import httpx

        deadline = time.monotonic() + timeout_s
        url = self.spec.url + self.spec.health_path
        while True:
            if not self.running():
                code = self.proc.returncode if self.proc is not None else None
                raise FluidserveError(f"{self.spec.name} server exited with code {code} before /health answered; "
                                      f"log {self.log_path}: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2.0).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise FluidserveError(f"{self.spec.name} server: {url} not healthy after {timeout_s:.0f} s; log {self.log_path}")
            time.sleep(0.1)

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's process group (if it still runs)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, interrupted: bool = False) -> int | None:
        """SIGINT to the process group, then SIGTERM, then SIGKILL; returns the exit code.

        ``interrupted``: SIGINT was already sent (:meth:`ServerGroup.stop_all`), so the first stage
        only waits: a second SIGINT during a graceful shutdown makes uvicorn exit at once (-2).
        """
        if self.proc is None:
            return None
        for sig, wait_s in ((signal.SIGINT, self.stop_timeout_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            if self.proc.poll() is not None:
                break
            if not (interrupted and sig == signal.SIGINT):
                self.signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait_s)
        with contextlib.suppress(ProcessLookupError):  # children left behind by a server that exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def describe(self) -> dict[str, Any]:
        return {**self.spec.describe(), "pid": self.pid, "log": self.log_path.name}


class ServerGroup:
    """Servers started together and stopped together (last started, first stopped)."""

    def __init__(self) -> None:
        self.servers: list[ManagedServer] = []

    def start(self, server: ManagedServer) -> ManagedServer:
        self.servers.append(server)
        return server.start()

    def stop_all(self) -> dict[str, int | None]:
        """SIGINT to every server at once (the proxy first), then :meth:`ManagedServer.stop` each."""
        for server in reversed(self.servers):
            server.signal(signal.SIGINT)
        codes = {}
        for server in reversed(self.servers):
            codes[server.spec.name] = server.stop(interrupted=True)
        return codes
