"""Length-aware scheduling and routing: shortest-predicted-first with aging, predicted-work routing.

**Shortest predicted first (SPF) with aging** is vLLM's priority scheduling
(``--scheduling-policy priority``, :class:`~fluidserve.sim.policies.PriorityQueue`) with the
priority of a request set from its predicted output length, as length-ranking schedulers on vLLM
do. A waiting request's rank at time ``t`` is ``predicted_tokens - aging * (t - arrival)``: it
gains ``aging`` tokens of rank per second it waits, so a long request is not starved. All waiting
requests age at the same rate, so ordering by that rank is the same at every ``t`` as ordering by
the time-free key ``predicted_tokens + aging * arrival``: a static priority, which is what
:func:`spf_priorities` returns (in milli-tokens, as integers). ``aging = 0`` is pure
shortest-first; a very large ``aging`` is FCFS. Preemption under priority scheduling takes the
largest key first: the longest-predicted, latest request.

**Least predicted work** routing sends a request to the replica with the least outstanding
predicted work: the predicted output tokens of the requests routed to it that have not finished
(read through the engines' public ``request_state``).

Predictions (:func:`predicted_output_tokens`): ``exact`` (the true ``max_tokens``, an oracle),
``noisy`` (the true length times a log-normal factor ``exp(N(0, sigma^2))``, to sweep predictor
quality), or a predictor saved by ``python -m fluidserve predict fit`` (its median).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fluidserve.errors import InputError
from fluidserve.sim.routers import Router

MILLI = 1000.0


def predicted_output_tokens(workload, source: str = "exact", noise_sigma: float = 0.0, seed: int = 0,
                            base_dir: str | None = None) -> np.ndarray:
    """Predicted output tokens per request of ``workload`` (see the module docstring)."""
    d = workload.decode_tokens.astype(float)
    if source == "exact":
        return d.copy()
    if source == "noisy":
        if not np.isfinite(noise_sigma) or noise_sigma < 0:
            raise InputError(f"policy.prediction_noise must be >= 0, got {noise_sigma!r}")
        rng = np.random.default_rng(seed)
        return np.maximum(1.0, d * np.exp(rng.normal(0.0, noise_sigma, len(d))))
    import pandas as pd

    from fluidserve.predict import load

    path = Path(source)
    if not path.is_absolute() and not path.exists() and base_dir is not None:
        path = Path(base_dir) / path
    predictor = load(path)
    frame = pd.DataFrame({"prefill_tokens": workload.prefill_tokens})
    return predictor.predict(frame)


def spf_priorities(arrival_s: Sequence[float], predicted_tokens: Sequence[float], aging_tokens_per_s: float) -> np.ndarray:
    """Integer priorities (lower first) for shortest-predicted-first with aging (module docstring)."""
    if not np.isfinite(aging_tokens_per_s) or aging_tokens_per_s < 0:
        raise InputError(f"policy.aging_tokens_per_s must be >= 0, got {aging_tokens_per_s!r}")
    key = np.asarray(predicted_tokens, float) + aging_tokens_per_s * np.asarray(arrival_s, float)
    return np.round(key * MILLI).astype(np.int64)


class LeastPredictedWork(Router):
    """Fewest predicted output tokens outstanding (routed, not finished); ties spread evenly."""

    load_aware = True

    def __init__(self, predicted_tokens: Sequence[float]) -> None:
        super().__init__()
        self.pred = np.asarray(predicted_tokens, float)
        self.outstanding: dict[int, list[tuple[int, float]]] = {}
        self.work: dict[int, float] = {}
        self._next: int | None = None

    def _refresh(self, engines, r: int) -> None:
        keep, work = [], 0.0
        for handle, w in self.outstanding.get(r, []):
            if engines[r].request_state(handle) not in ("done", "rejected", "aborted"):
                keep.append((handle, w))
                work += w
        self.outstanding[r], self.work[r] = keep, work

    def choose(self, engines, candidates):
        for r in candidates:
            self._refresh(engines, r)
        return self._spread(candidates, [self.work.get(r, 0.0) for r in candidates])

    def routed(self, request: int, replica: int, handle: int) -> None:
        """Called after request ``request`` was submitted to ``replica`` as ``handle``."""
        self.outstanding.setdefault(replica, []).append((handle, float(self.pred[request])))
        self.work[replica] = self.work.get(replica, 0.0) + float(self.pred[request])
