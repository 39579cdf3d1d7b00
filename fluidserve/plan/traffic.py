"""The plan's traffic as one workload, with each request's class (and whether it is measured).

Trace classes are loaded with the run config's trace reader (``rate_scale`` etc. apply);
synthetic classes are Poisson at ``rate`` over ``traffic.duration_s`` with uniform integer
lengths, drawn from ``seed`` (one stream per class, so adding a class leaves the others alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluidserve.policy.steady import LengthLaw
from fluidserve.workload.base import Workload
from fluidserve.workload.traces import read_trace_config


@dataclass(frozen=True)
class PlanTraffic:
    """Requests of all classes, sorted by arrival.

    Attributes:
        workload: the requests (ids 0..n-1 in arrival order, as the simulator's ``req_id``).
        class_index: class of each request (index into ``names``).
        names: class names.
        measured: requests counted in the SLO statistics (arrival >= ``traffic.warmup_s``).
    """

    workload: Workload
    class_index: np.ndarray
    names: list[str]
    measured: np.ndarray

    def subset(self, mask: np.ndarray) -> "PlanTraffic":
        """The requests in ``mask`` (ids renumbered 0..m-1 in arrival order)."""
        w = self.workload
        sub = Workload(w.arrival_time_s[mask], w.prefill_tokens[mask], w.decode_tokens[mask],
                       w.priority[mask], name=w.name)
        return PlanTraffic(sub, self.class_index[mask], self.names, self.measured[mask])

    def rate(self, k: int) -> float:
        """Mean arrival rate of class k over the whole arrival span [req/s]."""
        span = max(self.workload.duration_s, 1e-9)
        return float((self.class_index == k).sum() / span)


def build_traffic(plan) -> PlanTraffic:
    """The workload of a :class:`~fluidserve.plan.config.PlanConfig`'s ``traffic`` section."""
    t_parts, p_parts, d_parts, c_parts = [], [], [], []
    for k, c in enumerate(plan.traffic.classes):
        if c.trace is not None:
            w = read_trace_config(c.trace, plan.resolve_path(c.trace.path)).workload
            t, p, d = w.arrival_time_s, w.prefill_tokens, w.decode_tokens
        else:
            rng = np.random.default_rng([plan.seed, k])
            n = max(1, int(rng.poisson(c.rate * plan.traffic.duration_s)))
            t = np.sort(rng.uniform(0.0, plan.traffic.duration_s, size=n))
            p, d = LengthLaw(tuple(c.prefill_tokens), tuple(c.decode_tokens)).sample(n, rng)
        t_parts.append(np.asarray(t, float))
        p_parts.append(np.asarray(p, np.int64))
        d_parts.append(np.asarray(d, np.int64))
        c_parts.append(np.full(len(t), k, dtype=np.int64))
    t = np.concatenate(t_parts)
    order = np.argsort(t, kind="stable")
    t = t[order]
    cls = np.concatenate(c_parts)[order]
    wl = Workload(t, np.concatenate(p_parts)[order], np.concatenate(d_parts)[order], cls, name=plan.name)
    names = [c.name for c in plan.traffic.classes]
    return PlanTraffic(wl, cls, names, t >= plan.traffic.warmup_s)
