"""One serving replica and its public step API; the scheduler is chosen by name.

``ReplicaEngine(batch_time, ..., scheduler="vllm_v1" | "vllm_v0")`` builds the engine of that
scheduler (``SCHEDULERS``): :class:`~fluidserve.sim.scheduler_v1.VllmV1Engine` (vLLM V1,
the default) or :class:`~fluidserve.sim.scheduler_v0.VllmV0Engine` (the seed's vLLM V0
semantics: swapping or recompute, four victim policies). Both keep per-request state and
records; the scheduling rules are in their modules.

Other packages use only this interface:

* ``submit(gid, arrival_s, prefill_tokens, decode_tokens, ...) -> handle`` (requests in arrival order),
* ``step() -> StepRecord | None`` (exactly one engine step; None when there is nothing to do),
* ``run(until=...)`` (every step that starts before ``until``), ``abort(handle)``,
* read-only views: ``clock_s``, ``num_steps``, ``num_waiting``, ``num_running``, ``num_swapped``,
  ``num_pending``, ``in_system``, ``kv_blocks_used``, ``kv_blocks_total``,
  ``next_step_start_s()``, ``output_tokens(handle)``, ``request_state(handle)``,
  ``arrival_s(handle)``, ``gid_of(handle)``, ``decode_tokens_of(handle)``, ``num_submitted``,
  ``snapshot_frame()``, ``pop_snapshot()``, ``rejection_reason(P, D)``, ``num_preemptions``, ``last_arrival_s``, ``prefix_cache_hit_rate()``.
"""

from __future__ import annotations

import math

import pandas as pd

from fluidserve.sim.records import STATE_NAMES, StepRecord

SCHEDULERS = ("vllm_v1", "vllm_v0")


def _scheduler_class(name: str):
    if name == "vllm_v1":
        from fluidserve.sim.scheduler_v1 import VllmV1Engine

        return VllmV1Engine
    if name == "vllm_v0":
        from fluidserve.sim.scheduler_v0 import VllmV0Engine

        return VllmV0Engine
    raise ValueError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


class ReplicaEngine:
    """A single serving replica; ``ReplicaEngine(...)`` returns the engine of ``scheduler``."""

    scheduler = ""

    def __new__(cls, *args, scheduler: str = "vllm_v1", **kwargs):
        if cls is ReplicaEngine:
            cls = _scheduler_class(scheduler)
        return object.__new__(cls)

    # ------------------------------------------------------------- stepping
    def step(self) -> StepRecord | None:
        """Execute exactly the next engine step (idling until the next arrival if needed)."""
        if self.next_step_start_s() is None:
            return None
        n = self.step_index
        self._one = True
        try:
            self.run()
        finally:
            self._one = False
        return self._record if self.step_index > n else None

    # ------------------------------------------------------------- views
    @property
    def clock_s(self) -> float:
        """Start time of the next step (end of the last one) [s]."""
        return self.t

    @property
    def num_steps(self) -> int:
        return self.step_index

    @property
    def num_waiting(self) -> int:
        return self.n_wait

    @property
    def num_running(self) -> int:
        return self.n_running

    @property
    def num_swapped(self) -> int:
        return self.n_swapped

    @property
    def num_pending(self) -> int:
        """Submitted requests whose arrival time is after the clock."""
        return len(self.pending)

    @property
    def in_system(self) -> int:
        """Requests waiting, running or swapped (arrived, not finished)."""
        return self.n_wait + self.n_running + self.n_swapped

    @property
    def kv_blocks_used(self) -> int:
        return self.used

    @property
    def kv_blocks_total(self) -> int:
        """Blocks that can hold KV (vllm_v1: num_gpu_blocks - 1)."""
        return self.total_blocks

    @property
    def last_arrival_s(self) -> float:
        """Arrival time of the last submitted request (-inf before the first)."""
        return self.arr[-1] if self.arr else -math.inf

    @property
    def num_submitted(self) -> int:
        """Requests submitted so far; their handles are 0 .. num_submitted - 1."""
        return len(self.gid)

    def arrival_s(self, handle: int) -> float:
        return self.arr[handle]

    def gid_of(self, handle: int) -> int:
        """The id the request was submitted with."""
        return self.gid[handle]

    def decode_tokens_of(self, handle: int) -> int:
        """The request's output length (``max_tokens`` under vllm_v1)."""
        return self.D0[handle]

    def request_state(self, handle: int) -> str:
        """``waiting | prefilling | decoding | swapped | done | rejected | aborted``."""
        return STATE_NAMES[self.state[handle]]

    def idle(self) -> bool:
        return self.next_step_start_s() is None

    def next_step_start_s(self) -> float | None:
        """Simulated start time of the next step, or None when nothing is left to do."""
        if self.n_wait or self.n_running or self.n_swapped:
            return self.t
        if self.pending:
            return max(self.t, self.arr[self.pending[0]])
        return None

    def snapshot_frame(self) -> pd.DataFrame:
        """The batch snapshots recorded so far (``SNAPSHOT_COLUMNS``)."""
        from fluidserve.sim.result import SNAPSHOT_COLUMNS

        return pd.DataFrame(self.snapshots, columns=SNAPSHOT_COLUMNS)

    def pop_snapshot(self) -> tuple | None:
        """Remove and return the latest snapshot row (``SNAPSHOT_COLUMNS`` order), if any."""
        return self.snapshots.pop() if self.snapshots else None

    @property
    def num_preemptions(self) -> int:
        """Preemptions so far (swap-outs and recomputes)."""
        return sum(self.swaps) + sum(self.preempts)

    def rejection_reason(self, prefill_tokens: int, decode_tokens: int) -> str | None:
        """Why this engine would reject such a request on arrival, or None if it can serve it."""
        return self._reject_reason(int(prefill_tokens), int(decode_tokens))

    def prefix_cache_hit_rate(self) -> float:
        """Prefix-cache hit tokens / queried tokens (NaN without prefix caching)."""
        return math.nan
