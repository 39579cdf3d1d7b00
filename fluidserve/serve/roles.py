"""Disaggregated roles of the simulated endpoint: stand-ins for vLLM's prefill and decode instances.

``fluidserve serve --role prefill`` models a KV producer with the prefill instance of
fluidserve/sim/disagg.py (:class:`~fluidserve.sim.disagg.PrefillInstance`: FCFS batched
prefill under the token budget ``B``, a step lasting ``step_time(prefill_tokens, 0, 0)``, then
the prompt's KV over a FIFO link at ``kv_link_GBps``). It answers every request with exactly
one token when its prefill step ends (whatever ``max_tokens`` says, as vLLM's prefill instance
does for a proxy that sends ``max_tokens=1``) and returns ``kv_transfer_params`` with the
modeled transfer, in the server's simulated seconds:

    {"kv_producer": "fluidserve", "prompt_tokens": P, "prefill_start_s", "prefill_end_s",
     "transfer_start_s", "transfer_end_s", "kv_transfer_s", "kv_ready_monotonic_s"}

``kv_ready_monotonic_s`` is the host's ``time.monotonic()`` at which the KV has arrived.

``fluidserve serve --role decode`` models a KV consumer: a request whose ``kv_transfer_params``
carry ``kv_ready_monotonic_s`` enters the engine at that instant (or now, if later; it is
submitted on receipt with that arrival time, so a late wake-up of the server does not shift it) as
``prefilled`` (its prompt's KV is present: no prefill step, decode iteration 0 in its first
step; the same engine call as sim/disagg.py makes for its decode instances). A request without
them is served like a single instance would (local prefill). Both servers must run on one host
with the same ``--time-scale`` (their clocks share ``time.monotonic``).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

from fluidserve.errors import InputError
from fluidserve.serve.driver import SimClock
from fluidserve.sim.disagg import PrefillInstance

ROLES = ("single", "prefill", "decode")


@dataclass(eq=False)
class PrefillTicket:
    """One request on the prefill stand-in (times in simulated seconds)."""

    req: int
    prompt_tokens: int
    arrival_s: float
    prefill_start_s: float = math.nan
    prefill_end_s: float = math.nan
    transfer_start_s: float = math.nan
    transfer_end_s: float = math.nan
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def kv_transfer_params(self, clock: SimClock) -> dict[str, Any]:
        return {
            "kv_producer": "fluidserve",
            "prompt_tokens": self.prompt_tokens,
            "prefill_start_s": self.prefill_start_s,
            "prefill_end_s": self.prefill_end_s,
            "transfer_start_s": self.transfer_start_s,
            "transfer_end_s": self.transfer_end_s,
            "kv_transfer_s": self.transfer_end_s - self.transfer_start_s,
            "kv_ready_monotonic_s": clock.wall_of(self.transfer_end_s),
        }


class PrefillDriver:
    """Runs a :class:`PrefillInstance` in simulated time; a request's ticket is done at its prefill end."""

    def __init__(self, batch_time, B: int, kv_bytes_per_token: float, kv_link_GBps: float, clock: SimClock) -> None:
        if not (math.isfinite(kv_link_GBps) and kv_link_GBps > 0):
            raise InputError(f"--kv-link-GBps must be a finite number > 0, got {kv_link_GBps!r}")
        self.instance = PrefillInstance(0, batch_time, B, kv_bytes_per_token / (kv_link_GBps * 1e9))
        self.clock = clock
        self.tickets: dict[int, PrefillTicket] = {}
        self._next = 0
        self._last_arrival = 0.0
        self._wake: asyncio.Event | None = None
        self.error: BaseException | None = None

    def submit(self, prompt_tokens: int) -> PrefillTicket:
        """Queue a prompt that arrives now (call on the event loop)."""
        arrival = max(self.clock.now_s(), self._last_arrival)
        self._last_arrival = arrival
        ticket = PrefillTicket(self._next, int(prompt_tokens), arrival)
        self._next += 1
        self.tickets[ticket.req] = ticket
        self.instance.submit(ticket.req, arrival, ticket.prompt_tokens)
        if self._wake is not None:
            self._wake.set()
        return ticket

    def _next_step_start_s(self) -> float | None:
        q = self.instance.queue
        return max(self.instance.t, q[0][1]) if q else None

    async def _sleep_until(self, sim_s: float) -> None:
        delay = self.clock.wall_of(sim_s) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def run(self) -> None:
        """Run until cancelled: execute each prefill step when the clock reaches its start."""
        self._wake = asyncio.Event()
        inst = self.instance
        try:
            while True:
                start = self._next_step_start_s()
                if start is None:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._sleep_until(start)
                seen = len(inst.done)
                inst.run(until=math.nextafter(start, math.inf))  # exactly the step starting at `start`
                batch = inst.done[seen:]
                if not batch:
                    continue
                end = batch[0][2]
                for req, p_start, p_end, x_start, x_end in batch:
                    t = self.tickets[req]
                    t.prefill_start_s, t.prefill_end_s = p_start, p_end
                    t.transfer_start_s, t.transfer_end_s = x_start, x_end
                await self._sleep_until(end)
                for req, *_ in batch:
                    self.tickets.pop(req).done.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: fail the open requests loudly
            self.error = exc
            for t in self.tickets.values():
                t.done.set()
            raise


def kv_ready_monotonic_s(params: Any) -> float | None:
    """The ``kv_ready_monotonic_s`` of a request's ``kv_transfer_params`` (None when absent)."""
    if not isinstance(params, dict) or "kv_ready_monotonic_s" not in params:
        return None
    value = params["kv_ready_monotonic_s"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"kv_transfer_params.kv_ready_monotonic_s must be a finite number, got {value!r}")
    return float(value)
