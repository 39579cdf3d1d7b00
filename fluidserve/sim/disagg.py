"""Disaggregated serving: prefill instances hand the prompt's KV cache to decode instances.

A request goes to the prefill instance with the least backlog (queued prompt tokens, ties by
index). A prefill instance runs FCFS steps that batch waiting prompts while their tokens fit the
budget ``B``; a step lasts ``prefill_batch_time.step_time(prefill_tokens, 0, 0)``. When the step
ends, each prompt's KV (``P * kv_bytes_per_token`` bytes) crosses the instance's link, one
transfer at a time (FIFO), at ``link_GBps``. At the end of its transfer the request joins the
least-loaded decode instance, a :class:`~fluidserve.sim.engine.ReplicaEngine` that admits it
``prefilled`` (no prefill step; decode iteration 0 runs in its first step there).

Recorded per request (seconds): prefill start/end, KV transfer start/end and ``kv_transfer_s``,
``ttft`` (first token - arrival), ``tbt`` (mean time between tokens on the decode instance, NaN
for one-token outputs), ``e2e`` (completion - arrival).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fluidserve.batch_time import BatchTimeModel
from fluidserve.config import Config
from fluidserve.errors import InputError
from fluidserve.sim.result import SimResult
from fluidserve.sim.routers import make_router, route
from fluidserve.sim.simulator import collect, make_engine
from fluidserve.workload.base import Workload

REQUEST_COLUMNS = [
    "req_id", "arrival_time", "prefill_length", "decode_length", "prefill_instance", "prefill_start",
    "prefill_end", "transfer_start", "transfer_end", "kv_transfer_s", "decode_instance", "first_token_time",
    "completion_time", "ttft", "tbt", "e2e",
]
PREFILL_STEP_COLUMNS = ["instance", "time", "prefill_tokens", "num_prompts", "batch_duration"]


class PrefillInstance:
    """FCFS batched prefill with a FIFO KV-transfer link. Times in s."""

    def __init__(self, index: int, bt: BatchTimeModel, B: int, transfer_s_per_token: float):
        self.index = index
        self.bt = bt
        self.B = int(B)
        self.xfer = transfer_s_per_token
        self.queue: deque[tuple[int, float, int]] = deque()  # (req, arrival, prompt tokens)
        self.queued_tokens = 0
        self.t = 0.0
        self.link_free = 0.0
        self.done: list[tuple[int, float, float, float, float]] = []  # req, start, end, xfer start, xfer end
        self.steps: list[tuple[int, float, int, int, float]] = []

    def submit(self, req: int, arrival_s: float, prompt_tokens: int) -> None:
        self.queue.append((req, arrival_s, prompt_tokens))
        self.queued_tokens += prompt_tokens

    def run(self, until: float = math.inf) -> None:
        """Execute every step that starts before ``until``."""
        q = self.queue
        while q:
            if self.t < q[0][1]:
                self.t = q[0][1]  # idle until the next arrival
            if self.t >= until:
                return
            batch, tokens = [], 0
            while q and q[0][1] <= self.t and (not batch or tokens + q[0][2] <= self.B):
                r = q.popleft()
                batch.append(r)
                tokens += r[2]
            self.queued_tokens -= tokens
            dt = float(self.bt.step_time(tokens, 0, 0))
            end = self.t + dt
            self.steps.append((self.index, self.t, tokens, len(batch), dt))
            for req, _, p in batch:
                start = max(end, self.link_free)
                self.link_free = start + p * self.xfer
                self.done.append((req, self.t, end, start, self.link_free))
            self.t = end

    @property
    def backlog(self) -> float:
        return self.queued_tokens


@dataclass
class DisaggResult:
    requests: pd.DataFrame
    prefill_steps: pd.DataFrame
    decode: SimResult
    n_prefill: int
    n_decode: int


def simulate_disagg(
    cfg: Config,
    workload: Workload,
    n_prefill: int,
    n_decode: int,
    link_GBps: float,
    prefill_batch_time: BatchTimeModel | None = None,
    decode_batch_time: BatchTimeModel | None = None,
) -> DisaggResult:
    """Simulate ``workload`` on ``n_prefill`` prefill and ``n_decode`` decode instances of ``cfg.system``."""
    if n_prefill < 1 or n_decode < 1:
        raise InputError(f"disaggregation needs >= 1 prefill and >= 1 decode instance, got {n_prefill}/{n_decode}")
    if not link_GBps > 0:
        raise InputError(f"disagg link_GBps must be > 0, got {link_GBps!r}")
    bt = cfg.batch_time_model()
    pbt = prefill_batch_time or bt
    dbt = decode_batch_time or bt
    sysc = cfg.system
    xfer = sysc.kv_bytes_per_token / (link_GBps * 1e9)
    arr = workload.arrival_time_s
    P = workload.prefill_tokens
    D = workload.decode_tokens
    n = len(workload)
    too_long = np.flatnonzero(P > sysc.B) if not sysc.chunked_prefill else np.zeros(0, dtype=int)
    if len(too_long):
        i = int(too_long[0])
        raise InputError(f"request {i}: prompt of {P[i]} tokens > B={sysc.B} on a prefill instance (no chunking)")

    pre = [PrefillInstance(i, pbt, sysc.B, xfer) for i in range(n_prefill)]
    for i in range(n):
        a = float(arr[i])
        for inst in pre:
            inst.run(until=a)
        best = min(pre, key=lambda x: (x.backlog, x.index))
        best.submit(i, a, int(P[i]))
    for inst in pre:
        inst.run()
    handoff = np.zeros((n, 5))
    owner = np.zeros(n, dtype=np.int64)
    for inst in pre:
        for req, start, end, xs, xe in inst.done:
            handoff[req] = (start, end, xs, xe, xe - xs)
            owner[req] = inst.index

    engines = [make_engine(cfg, r, dbt) for r in range(n_decode)]
    order = np.argsort(handoff[:, 3], kind="stable")
    dest = np.zeros(n, dtype=np.int64)
    router = make_router("least_loaded")
    for i in order:
        t = float(handoff[i, 3])
        r = route(router, engines, t)
        engines[r].submit(int(i), t, int(P[i]), int(D[i]), 0, prefilled=True)
        dest[i] = r
    for e in engines:
        e.run()
    dec = collect(engines)
    d = dec.requests.set_index("req_id").reindex(np.arange(n))
    first = d["first_token_time"].to_numpy(dtype=float)
    comp = d["completion_time"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        tbt = np.where(D > 1, (comp - first) / (D - 1), np.nan)
    requests = pd.DataFrame({
        "req_id": np.arange(n), "arrival_time": arr, "prefill_length": P, "decode_length": D,
        "prefill_instance": owner, "prefill_start": handoff[:, 0], "prefill_end": handoff[:, 1],
        "transfer_start": handoff[:, 2], "transfer_end": handoff[:, 3], "kv_transfer_s": handoff[:, 4],
        "decode_instance": dest, "first_token_time": first, "completion_time": comp,
        "ttft": first - arr, "tbt": tbt, "e2e": comp - arr,
    })[REQUEST_COLUMNS]
    steps = pd.DataFrame([s for inst in pre for s in inst.steps], columns=PREFILL_STEP_COLUMNS)
    return DisaggResult(requests=requests, prefill_steps=steps, decode=dec, n_prefill=n_prefill, n_decode=n_decode)
