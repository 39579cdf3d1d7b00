"""Routers: which replica serves the next request. One module for the simulator, the LP replay,
disaggregated decode instances and the endpoint.

* ``round_robin``: request i goes to candidate i mod R.
* ``weighted``: smooth weighted round robin (deterministic; over any window candidate r gets a
  share ``weights[r] / sum(weights)``).
* ``least_loaded``: fewest requests in the system, counting the ones already routed to the replica
  whose arrival time the engine has not reached yet (``in_system + num_pending``).
* ``least_kv``: smallest KV usage (``kv_blocks_used / kv_blocks_total``), then fewest requests.

Ties go to the first tied candidate at or after a rotating pointer, which then moves past it, so
simultaneous arrivals on idle replicas spread evenly (40 on 4 -> 10 each) and the choice is
deterministic. Load-aware routers read the engines' state at the arrival time:
:func:`dispatch` advances the candidates to it first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np

ROUTERS = ("round_robin", "weighted", "least_loaded", "least_kv")


class Router(ABC):
    """Picks one of ``candidates`` (indices into ``engines``) for the next request."""

    load_aware = False

    def __init__(self) -> None:
        self._ptr: dict[tuple[int, ...], int] = {}

    @abstractmethod
    def choose(self, engines: Sequence, candidates: Sequence[int]) -> int:
        """The chosen candidate (an index into ``engines``)."""

    def _spread(self, candidates: Sequence[int], keys: list) -> int:
        """Candidate with the smallest key; ties by the rotating pointer of this candidate set."""
        best = min(keys)
        k = tuple(candidates)
        n = len(candidates)
        p = self._ptr.get(k, 0)
        for j in range(n):
            pos = (p + j) % n
            if keys[pos] == best:
                self._ptr[k] = (pos + 1) % n
                return candidates[pos]
        raise AssertionError("unreachable")


class RoundRobin(Router):
    def choose(self, engines, candidates):
        k = tuple(candidates)
        p = self._ptr.get(k, 0)
        self._ptr[k] = p + 1
        return candidates[p % len(candidates)]


class Weighted(Router):
    """Smooth weighted round robin over all replicas (``weights`` has one entry per replica)."""

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        w = np.asarray(weights, dtype=float)
        self.w = w / w.sum()
        self.current = np.zeros(len(w))

    def choose(self, engines, candidates):
        w = self.w[list(candidates)]
        cur = self.current[list(candidates)] + w / w.sum()
        j = int(np.argmax(cur))
        cur[j] -= 1.0
        self.current[list(candidates)] = cur
        return candidates[j]


class LeastLoaded(Router):
    load_aware = True

    def choose(self, engines, candidates):
        return self._spread(candidates, [engines[r].in_system + engines[r].num_pending for r in candidates])


class LeastKV(Router):
    load_aware = True

    def choose(self, engines, candidates):
        keys = []
        for r in candidates:
            e = engines[r]
            keys.append((e.kv_blocks_used / e.kv_blocks_total, e.in_system + e.num_pending))
        return self._spread(candidates, keys)


def make_router(name: str, weights: Sequence[float] | None = None) -> Router:
    """The router called ``name`` (one of ``ROUTERS``)."""
    if name == "round_robin":
        return RoundRobin()
    if name == "weighted":
        if weights is None:
            raise ValueError("router 'weighted' needs weights")
        return Weighted(weights)
    if name == "least_loaded":
        return LeastLoaded()
    if name == "least_kv":
        return LeastKV()
    raise ValueError(f"unknown router {name!r}; choose one of {', '.join(ROUTERS)}")


def route(router: Router, engines: Sequence, arrival_s: float, candidates: Sequence[int] | None = None,
          progress=None) -> int:
    """The replica for a request arriving at ``arrival_s``; load-aware routers first advance the
    candidates to that time (every step that starts before it)."""
    cand = range(len(engines)) if candidates is None else candidates
    cand = list(cand)
    if len(cand) == 1:
        return cand[0]
    if router.load_aware:
        for r in cand:
            engines[r].run(until=arrival_s, progress=progress)
    return router.choose(engines, cand)


def dispatch(router: Router, engines: Sequence, arrival_s: Sequence[float], submit, progress=None) -> np.ndarray:
    """Route requests in arrival order; ``submit(i, r)`` hands request i to engine r.

    Returns the replica of each request. Static routers submit everything up front.
    """
    n = len(arrival_s)
    out = np.empty(n, dtype=np.int64)
    cand = list(range(len(engines)))
    routed = getattr(router, "routed", None)  # routers that track what they sent (length_aware)
    for i in range(n):
        r = route(router, engines, arrival_s[i], cand, progress)
        handle = submit(i, r)
        if routed is not None:
            routed(i, r, handle)
        out[i] = r
    return out
