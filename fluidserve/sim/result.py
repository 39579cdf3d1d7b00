"""The simulator's result type: tidy tables, one row per request / step / event.

Column contracts (times in seconds, memory in KV tokens):

* ``requests`` (request_traces.csv): REQUEST_COLUMNS. ``first_token_time`` is the end of the
  step that samples output token 1 (``vllm_v1``: the last prefill step; ``vllm_v0``: the first
  decode iteration); ``tpot`` is (completion - first_token) / (decode - 1),
  NaN when decode_length == 1. Only requests that completed or are still in the system at the
  end are here; rejected requests are in ``rejected``.
* ``snapshots`` (batch_snapshots.csv): SNAPSHOT_COLUMNS, one row per engine step (or every
  ``sim.snapshot_every`` steps); counts are taken at the end of the step.
* ``events`` (events.csv): EVENT_COLUMNS, event in {admit, swap_out, swap_in, preempt, complete}.
* ``memory_events`` (memory_events.csv): MEMORY_EVENT_COLUMNS.
* ``rejected``: REJECTED_COLUMNS, requests that can never be served (reason given).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

REQUEST_COLUMNS = [
    "req_id", "arrival_time", "prefill_length", "decode_length", "first_enter_running_time",
    "first_token_time", "completion_time", "waiting_time", "execution_time", "swap_count",
    "preempt_count", "ttft", "tpot", "total_delay", "replica",
]
SNAPSHOT_COLUMNS = [
    "time", "batch_id", "batch_size", "batch_tokens", "prefill_tokens", "decode_tokens", "kv_tokens",
    "batch_duration", "waiting", "running", "swapped", "completed", "gpu_memory_used",
    "memory_utilization", "replica",
]
EVENT_COLUMNS = ["time", "event", "req_id", "replica"]
MEMORY_EVENT_COLUMNS = ["time", "event_type", "req_id", "memory_before", "memory_after", "reason", "replica"]
REJECTED_COLUMNS = ["req_id", "arrival_time", "prefill_length", "decode_length", "reason", "replica"]


@dataclass
class SimResult:
    """Everything one simulation produced. ``M_total`` is per replica, in tokens."""

    requests: pd.DataFrame
    snapshots: pd.DataFrame
    events: pd.DataFrame
    memory_events: pd.DataFrame
    rejected: pd.DataFrame
    M_total: int
    replicas: int = 1
    num_steps: int = 0
    wall_time_s: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def completed(self) -> pd.DataFrame:
        return self.requests[self.requests["completion_time"].notna()]
