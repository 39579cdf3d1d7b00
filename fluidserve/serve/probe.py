"""A lean streaming client for timing checks of the simulated endpoint.

It keeps what the checks need: the response id (``cmpl-17`` -> simulator request 17) and the
``time.monotonic()`` of every token. It speaks HTTP/1.1 over raw asyncio streams (keep-alive,
chunked transfer, server-sent events) so that its own overhead is small next to the latencies
it measures: with hundreds of concurrent streams on a small machine a general-purpose client
spends more time in itself than the server does. Connections are opened (and checked with
``GET /health``) before the timed requests are sent. For open-loop load from a Workload with CSV
output, use fluidserve/calibration/loadclient.py; for API compatibility, the ``openai`` client.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class StreamRecord:
    """One streamed completion as the client saw it (``time.monotonic()`` seconds)."""

    send_wall: float
    prefill_tokens: int
    max_tokens: int
    response_id: str = ""
    token_walls: list[float] = field(default_factory=list)
    end_wall: float = float("nan")
    usage: dict | None = None
    status: int | None = None
    error: str = ""

    @property
    def gid(self) -> int:
        """The server's request number (``cmpl-17`` -> 17)."""
        return int(self.response_id.rsplit("-", 1)[1])

    @property
    def ttft_wall_s(self) -> float:
        return self.token_walls[0] - self.send_wall

    @property
    def tpot_wall_s(self) -> float:
        n = len(self.token_walls)
        return (self.token_walls[-1] - self.token_walls[0]) / (n - 1) if n > 1 else float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int, api_key: str | None = None) -> None:
        self.host, self.port = host, port
        self.auth = f"Authorization: Bearer {api_key}\r\n" if api_key else ""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def _send(self, method: str, path: str, body: bytes = b"") -> None:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)

    async def _head(self) -> tuple[int, dict[str, str]]:
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def _chunks(self, headers: dict[str, str]):
        """Yield body pieces as they arrive (chunked or content-length bodies)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await self.reader.readline()
                    return
                data = await self.reader.readexactly(size + 2)
                yield data[:-2]
        else:
            yield await self.reader.readexactly(int(headers.get("content-length", "0")))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        """A plain request; returns (status, body)."""
        self._send(method, path, body)
        status, headers = await self._head()
        parts = [p async for p in self._chunks(headers)]
        return status, b"".join(parts)

    async def stream(self, path: str, payload: dict, rec: StreamRecord) -> None:
        """POST ``payload`` and record the time of every SSE event carrying a choice."""
        body = json.dumps(payload).encode()
        rec.send_wall = time.monotonic()
        self._send("POST", path, body)
        await self.writer.drain()
        status, headers = await self._head()
        rec.status = status
        if status != 200:
            rec.error = b"".join([p async for p in self._chunks(headers)]).decode(errors="replace")[:500]
            return
        buf = b""
        async for piece in self._chunks(headers):
            now = time.monotonic()
            buf += piece
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                if not event.startswith(b"data: "):
                    continue
                data = event[6:]
                if data == b"[DONE]":
                    continue
                obj = json.loads(data)
                if "error" in obj:
                    rec.error = json.dumps(obj["error"])
                    continue
                rec.response_id = obj.get("id", rec.response_id)
                if obj.get("choices"):
                    rec.token_walls.append(now)
                if obj.get("usage"):
                    rec.usage = obj["usage"]
        rec.end_wall = time.monotonic()


def completion_payload(model: str, prefill_tokens: int, max_tokens: int) -> dict:
    """A streaming /v1/completions body whose prompt is ``prefill_tokens`` token ids."""
    return {
        "model": model,
        "prompt": [1000 + (k % 20000) for k in range(prefill_tokens)],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run_streams(
    url: str, model: str, shapes: list[tuple[int, int]], send_gap_s: float = 0.0, api_key: str | None = None
) -> list[StreamRecord]:
    """One stream per (prefill_tokens, max_tokens), sent ``send_gap_s`` apart, all concurrent.

    Every connection is opened and checked with ``GET /health`` before the first send.
    """
    parts = urlsplit(url)
    conns = [Connection(parts.hostname, parts.port or 80, api_key) for _ in shapes]
    sem = asyncio.Semaphore(64)

    async def warm(c: Connection) -> None:
        async with sem:
            await c.open()
            status, _ = await c.request("GET", "/health")
            if status != 200:
                raise RuntimeError(f"GET /health answered {status}")

    await asyncio.gather(*(warm(c) for c in conns))
    records = [StreamRecord(float("nan"), p, d) for p, d in shapes]

    async def one(c: Connection, rec: StreamRecord, payload: dict) -> None:
        try:
            await c.stream("/v1/completions", payload, rec)
        except Exception as exc:  # recorded; the caller decides
            rec.error = f"{type(exc).__name__}: {exc}"
            rec.end_wall = time.monotonic()
        finally:
            c.close()

    payloads = [completion_payload(model, p, d) for p, d in shapes]
    tasks = []
    t0 = time.monotonic()
    for k, (c, rec) in enumerate(zip(conns, records)):
        delay = t0 + k * send_gap_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(c, rec, payloads[k])))
    await asyncio.gather(*tasks)
    return records


def peak_concurrency(records: list[StreamRecord]) -> int:
    """Most streams open at once (from send to end, client side)."""
    events = sorted([(r.send_wall, 1) for r in records] + [(r.end_wall, -1) for r in records])
    best = cur = 0
    for _, delta in events:
        cur += delta
        best = max(best, cur)
    return best
