"""The clock and the task that advance the simulator in (scaled) wall-clock time.

Simulated time runs ``time_scale`` times as fast as the wall clock (``time_scale = 0.5``: one
simulated second lasts two wall seconds), starting at 0 when the server starts.

A request enters the engine when the endpoint receives it, with the current simulated time as
its arrival time. The driver executes one engine step at a time: a step that starts at
simulated time ``t`` is executed as soon as the clock has reached ``t`` (every request that
arrived by ``t`` has then been submitted, so the step sees exactly the arrivals it would see
offline), and the tokens it emits are released when the clock reaches the step's end. Token
release times are absolute simulated times, so a late wake-up delays delivery but never
shifts the simulated timeline, and the engine's own records stay exact.

Token accounting follows the engine's public API (fluidserve/sim/engine.py):
``engine.output_tokens(handle)`` is the number of tokens a request has emitted by the end of the
last executed step, ``engine.step()`` executes one step and returns its ``StepRecord``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from fluidserve.errors import InputError
from fluidserve.sim.engine import ReplicaEngine

log = logging.getLogger(__name__)


class SimClock:
    """Simulated seconds since ``start()``: wall seconds (``time.monotonic``) times ``time_scale``."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise InputError(f"--time-scale must be a finite number > 0, got {time_scale!r}")
        self.time_scale = float(time_scale)
        self.t0_wall = time.monotonic()

    def start(self) -> None:
        self.t0_wall = time.monotonic()

    def now_s(self) -> float:
        """Current simulated time [s]."""
        return (time.monotonic() - self.t0_wall) * self.time_scale

    def wall_of(self, sim_s: float) -> float:
        """The ``time.monotonic()`` instant at which the simulated clock reads ``sim_s``."""
        return self.t0_wall + sim_s / self.time_scale


def token_times_offline(engine: ReplicaEngine) -> dict[int, list[float]]:
    """Run a loaded engine to the end one step at a time, as the driver does, without a clock.

    Returns ``{gid: [time of token 1, token 2, ...]}`` in simulated seconds: what a client
    would see from the endpoint with zero network delay. (Used by tests and the e2e loop.)
    """
    times: dict[int, list[float]] = {}
    open_ = {h: 0 for h in range(engine.num_submitted)}
    while True:
        rec = engine.step()
        if rec is None:
            break
        for h in list(open_):
            n = engine.output_tokens(h)
            if n > open_[h]:
                times.setdefault(engine.gid_of(h), []).extend([rec.end_s] * (n - open_[h]))
                open_[h] = n
                if n >= engine.decode_tokens_of(h):
                    del open_[h]
    return times


@dataclass(eq=False)
class TokenStream:
    """One request's output as the driver releases it (times in simulated seconds)."""

    gid: int
    local: int
    prefill_tokens: int
    decode_tokens: int
    arrival_s: float
    released: int = 0
    scheduled: int = 0
    reported: int = 0  # tokens already counted by the metrics
    finish_reason: str = "length"
    first_token_s: float = math.nan
    completion_s: float = math.nan
    cancelled: str | None = None  # reason, when the server ends the stream early
    aborted: bool = False  # the client went away and the engine dropped the request
    _event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.released >= self.decode_tokens

    def _release(self, n: int, t_s: float) -> None:
        if self.released == 0:
            self.first_token_s = t_s
        self.released = n
        if n >= self.decode_tokens:
            self.completion_s = t_s
        self._event.set()

    def cancel(self, reason: str) -> None:
        self.cancelled = reason
        self._event.set()

    async def wait_beyond(self, seen: int) -> int:
        """Wait until more than ``seen`` tokens are released (or the stream is cancelled)."""
        while self.released <= seen and self.cancelled is None:
            self._event.clear()
            await self._event.wait()
        return self.released


StepObserver = Callable[[tuple | None, list[TokenStream], float], None]


class SimDriver:
    """Steps ``engine`` in simulated time and releases tokens to :class:`TokenStream` s.

    ``observer(snapshot, released_streams, lag_s)`` is called after each step's tokens are
    released: ``snapshot`` is the engine's batch snapshot of the step (SNAPSHOT_COLUMNS),
    ``lag_s`` how late (wall seconds) the release happened.
    """

    def __init__(self, engine: ReplicaEngine, clock: SimClock, observer: StepObserver | None = None) -> None:
        self.engine = engine
        self.clock = clock
        self.observer = observer
        self.active: dict[int, TokenStream] = {}
        self._next_gid = 0
        self._wake: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.steps = 0

    # --------------------------------------------------------------- requests
    def submit(self, prefill_tokens: int, decode_tokens: int, prefilled: bool = False,
               arrival_s: float | None = None) -> TokenStream:
        """Enter a request into the engine now; returns its stream (call on the event loop).

        ``prefilled``: its prompt's KV came from a prefill instance (disaggregated decode role);
        ``arrival_s``: a later simulated arrival time (when that KV will have arrived), never
        earlier than now."""
        if self.error is not None:
            raise RuntimeError(f"simulator stopped: {self.error}")
        eng = self.engine
        gid = self._next_gid
        self._next_gid += 1
        now = self.clock.now_s()
        arrival = max(now if arrival_s is None else max(arrival_s, now), eng.last_arrival_s)  # guard float ties
        local = eng.submit(gid, arrival, prefill_tokens, decode_tokens, prefilled=prefilled)
        stream = TokenStream(gid, local, prefill_tokens, decode_tokens, arrival)
        self.active[local] = stream
        if self._wake is not None:
            self._wake.set()
        return stream

    def abort(self, stream: TokenStream) -> bool:
        """The client of ``stream`` went away: drop its request from the engine (as vLLM aborts
        a request whose client disconnects), freeing its KV blocks and batch slot. Returns
        whether it was still in the system (a finished request is not aborted)."""
        if stream.finished or stream.aborted or self.active.get(stream.local) is not stream:
            return False
        del self.active[stream.local]
        stream.aborted = True
        aborted = bool(self.engine.abort(stream.local))
        if self._wake is not None:
            self._wake.set()
        return aborted

    # ------------------------------------------------------------------- loop
    def next_step_start_s(self) -> float | None:
        """Simulated start time of the next engine step, or None when the engine is idle."""
        return self.engine.next_step_start_s()

    async def _sleep_until(self, sim_s: float) -> None:
        delay = self.clock.wall_of(sim_s) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run(self) -> None:
        """Run until cancelled. A simulator error cancels every open stream."""
        self._wake = asyncio.Event()
        eng = self.engine
        try:
            while True:
                start = self.next_step_start_s()
                if start is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._sleep_until(start)
                rec = eng.step()  # exactly the step starting at `start`
                if rec is None:
                    continue
                t_end = rec.end_s
                due = []
                for i, stream in self.active.items():
                    n = eng.output_tokens(i)
                    if n > stream.scheduled:
                        stream.scheduled = n
                        due.append(stream)
                snapshot = eng.pop_snapshot()
                self.steps += 1
                await self._sleep_until(t_end)
                lag_s = time.monotonic() - self.clock.wall_of(t_end)
                due = [stream for stream in due if not stream.aborted]  # aborted during the step's wait
                for stream in due:
                    stream._release(stream.scheduled, t_end)
                    if stream.finished:
                        self.active.pop(stream.local, None)
                if self.observer is not None:
                    self.observer(snapshot, due, lag_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a simulator bug: fail every open stream loudly, keep serving errors
            log.exception("simulator driver stopped")
            self.error = exc
            for stream in self.active.values():
                stream.cancel(f"simulator error: {exc}")
            self.active.clear()
