"""Run ``fluidserve serve`` in a subprocess (tests, the e2e loop, benchmarks).

    with ServerProcess("config.yaml", time_scale=0.5) as srv:
        httpx.get(srv.url + "/health")

The server binds 127.0.0.1 on a free port (``--port 0``) and the URL is read from its ready
line. Leaving the ``with`` block sends SIGINT (graceful drain) and waits; a server that does
not stop is killed. The server's stderr goes to a temporary file (``srv.log()``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fluidserve.errors import FluidserveError

READY_PREFIX = "fluidserve serve: listening on "


class ServerProcess:
    """A ``python -m fluidserve serve`` child process; ``url`` is set once it is ready."""

    def __init__(
        self,
        config: str | Path,
        time_scale: float = 1.0,
        extra_args: list[str] | None = None,
        startup_timeout_s: float = 180.0,
        stop_timeout_s: float = 30.0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.args = [
            sys.executable, "-m", "fluidserve", "serve", "--config", str(config), "--host", "127.0.0.1",
            "--port", "0", "--time-scale", repr(float(time_scale)), *(extra_args or []),
        ]
        self.time_scale = float(time_scale)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.env = env
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "ServerProcess":
        self._log = tempfile.NamedTemporaryFile("w+", prefix="fluidserve-serve-", suffix=".log", delete=False)
        env = {**os.environ, **(self.env or {})}
        env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=self._log, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                if line.startswith(READY_PREFIX):
                    self.url = line[len(READY_PREFIX):].split()[0]
                    return self
            if self.proc.poll() is not None:
                raise FluidserveError(f"server exited with code {self.proc.returncode}: {self.log().strip()[-2000:]}")
            time.sleep(0.05)
        self.stop()
        raise FluidserveError(f"server not ready after {self.startup_timeout_s:.0f} s: {self.log().strip()[-2000:]}")

    def log(self) -> str:
        return Path(self._log.name).read_text() if self._log is not None else ""

    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    def stop(self) -> int | None:
        """SIGINT, wait, kill if needed; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not None:
            Path(self._log.name).unlink(missing_ok=True)
