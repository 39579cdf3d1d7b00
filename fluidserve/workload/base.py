"""The workload type: a table of requests, sorted by arrival time.

A request has an arrival time (s), a prompt of ``prefill_tokens`` and ``decode_tokens``
decode iterations (output tokens). ``priority`` is used by ``queue_policy: priority``
(lower value is served first; ties by arrival). ``prefix_group`` / ``prefix_length``: requests
of one group (>= 0; -1 for none) share their first ``prefix_length`` prompt tokens (a system
prompt), which the ``vllm_v1`` prefix cache stores once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fluidserve.errors import InputError


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival. Arrays have equal length; ids are 0..n-1 in arrival order."""

    arrival_time_s: np.ndarray
    prefill_tokens: np.ndarray
    decode_tokens: np.ndarray
    priority: np.ndarray = field(default=None)  # type: ignore[assignment]
    name: str = "workload"
    prefix_group: np.ndarray = field(default=None)  # type: ignore[assignment]
    prefix_length: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        a = np.asarray(self.arrival_time_s, dtype=np.float64)
        p = np.asarray(self.prefill_tokens, dtype=np.int64)
        d = np.asarray(self.decode_tokens, dtype=np.int64)
        pr = np.zeros(len(a), dtype=np.int64) if self.priority is None else np.asarray(self.priority, dtype=np.int64)
        pg = np.full(len(a), -1, dtype=np.int64) if self.prefix_group is None else np.asarray(self.prefix_group, dtype=np.int64)
        pl = np.zeros(len(a), dtype=np.int64) if self.prefix_length is None else np.asarray(self.prefix_length, dtype=np.int64)
        if not (len(a) == len(p) == len(d) == len(pr) == len(pg) == len(pl)):
            raise InputError(f"workload '{self.name}': column lengths differ ({len(a)}, {len(p)}, {len(d)}, {len(pr)})")
        if len(a) == 0:
            raise InputError(f"workload '{self.name}' has no requests")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise InputError(f"workload '{self.name}': arrival times must be finite and >= 0")
        if np.any(p < 1) or np.any(d < 1):
            i = int(np.argmax((p < 1) | (d < 1)))
            raise InputError(f"workload '{self.name}' request {i + 1}: prefill and decode lengths must be >= 1 token "
                             f"(got {int(p[i])}, {int(d[i])})")
        if np.any(np.diff(a) < 0):
            order = np.argsort(a, kind="stable")
            a, p, d, pr, pg, pl = a[order], p[order], d[order], pr[order], pg[order], pl[order]
        if np.any(pl < 0) or np.any(pl > p):
            raise InputError(f"workload '{self.name}': prefix_length must be in [0, prefill_length]")

        object.__setattr__(self, "arrival_time_s", a)
        object.__setattr__(self, "prefill_tokens", p)
        object.__setattr__(self, "decode_tokens", d)
        object.__setattr__(self, "priority", pr)
        object.__setattr__(self, "prefix_group", pg)
        object.__setattr__(self, "prefix_length", pl)

    def __len__(self) -> int:
        return len(self.arrival_time_s)

    @property
    def duration_s(self) -> float:
        return float(self.arrival_time_s[-1] - self.arrival_time_s[0]) if len(self) > 1 else 0.0

    @property
    def mean_rate(self) -> float:
        """Mean arrival rate in req/s over the arrival span."""
        return (len(self) - 1) / self.duration_s if self.duration_s > 0 else float("inf")

    def to_frame(self) -> pd.DataFrame:
        """The generic CSV layout: arrival_time, prefill_length, decode_length, priority
        (and prefix_group, prefix_length when some request has a shared prefix)."""
        cols = {
            "arrival_time": self.arrival_time_s,
            "prefill_length": self.prefill_tokens,
            "decode_length": self.decode_tokens,
            "priority": self.priority,
        }
        if (self.prefix_group >= 0).any():
            cols["prefix_group"] = self.prefix_group
            cols["prefix_length"] = self.prefix_length
        return pd.DataFrame(cols)

    def subset(self, mask: np.ndarray, name: str | None = None) -> "Workload":
        return Workload(
            self.arrival_time_s[mask],
            self.prefill_tokens[mask],
            self.decode_tokens[mask],
            self.priority[mask],
            name or self.name,
            self.prefix_group[mask],
            self.prefix_length[mask],
        )
