"""Verification in the discrete simulator: measured percentiles, energy, and bisection on replicas.

:func:`simulate_group` runs ``replicas`` replicas of one :class:`~fluidserve.plan.space.ReplicaType`
on a traffic subset through the public ``fluidserve.sim.simulator.simulate`` and measures, per
class, the percentiles and attainment of :mod:`.slo` over the measured requests (requests the
engine rejects count as never served, latency inf). Energy integrates the replica type's step
energy model over every simulated step plus idle power over the time a replica does not step,
from the first arrival to the last completion; energy per token is over output tokens.

:func:`min_replicas` finds the smallest passing replica count by bisection, starting from the
screen's guess: it is exact when meeting the SLO is monotone in the replica count (the usual
case; the exhaustive-sweep test checks it on a small example), and it always simulates the
next smaller count, so the answer comes with a fleet one replica smaller shown failing.
"""

from __future__ import annotations

import math
import time

import numpy as np

from fluidserve.plan import slo
from fluidserve.sim.simulator import simulate


def request_metrics(rtype, replicas: int, traffic, plan) -> dict:
    """Simulate one homogeneous group; per-request TTFT, TPOT, E2E [s] (inf: never served), energy [J]."""
    t0 = time.perf_counter()
    cfg = rtype.run_config(replicas, plan)
    res = simulate(cfg, traffic.workload)
    req = res.requests
    n = len(traffic.workload)
    ttft = np.full(n, np.inf)
    tpot = np.full(n, np.nan)
    e2e = np.full(n, np.inf)
    ids = req["req_id"].to_numpy(np.int64)
    ttft[ids] = req["ttft"].to_numpy(float)
    tpot[ids] = req["tpot"].to_numpy(float)
    e2e[ids] = req["total_delay"].to_numpy(float)
    for a in (ttft, e2e):
        a[~np.isfinite(a)] = np.inf  # still in the system: never served
    d = traffic.workload.decode_tokens
    tpot[(d > 1) & ~np.isfinite(e2e)] = np.inf
    return {
        "ttft": ttft, "tpot": tpot, "e2e": e2e, "energy_j": _energy(res, rtype, replicas, traffic),
        "output_tokens": float(req.loc[np.isfinite(req["completion_time"]), "decode_length"].sum()),
        "rejected": int(len(res.rejected)), "sim_wall_s": time.perf_counter() - t0,
    }


def simulate_group(rtype, replicas: int, traffic, plan) -> dict:
    """Simulate one homogeneous group; returns per-class stats, energy [J], tokens and wall time [s]."""
    m = request_metrics(rtype, replicas, traffic, plan)
    per_class = {}
    qs = slo.class_percentiles(plan)
    for k, c in enumerate(plan.traffic.classes):
        sel = (traffic.class_index == k) & traffic.measured
        if sel.any():
            per_class[c.name] = slo.sample_stats(m["ttft"][sel], m["tpot"][sel], m["e2e"][sel], qs[k],
                                                 c.slo.thresholds)
    return {"per_class": per_class, **{k: m[k] for k in ("energy_j", "output_tokens", "rejected", "sim_wall_s")}}


def _energy(res, rtype, replicas: int, traffic) -> float:
    """Step energy of every step plus idle power of every replica when it does not step [J]."""
    snaps = res.snapshots
    if not len(snaps):
        return 0.0
    e = rtype.energy
    steps = e.step_time(snaps["prefill_tokens"].to_numpy(float), snaps["decode_tokens"].to_numpy(float),
                        snaps["kv_tokens"].to_numpy(float))
    busy_s = float(snaps["batch_duration"].sum())
    comp = res.requests["completion_time"].to_numpy(float)
    end = float(np.nanmax(comp)) if np.isfinite(comp).any() else float(traffic.workload.arrival_time_s[-1])
    span = end - float(traffic.workload.arrival_time_s[0])
    idle_s = max(replicas * span - busy_s, 0.0)
    return float(steps.sum() + rtype.idle_w * idle_s)


def group_record(rtype, replicas: int, sim: dict, plan) -> dict:
    """A verified record: settings, replicas, GPUs, cost, energy per token, per-class stats, verdict."""
    v = slo.verdict(plan, sim["per_class"])
    tokens = sim["output_tokens"]
    return {
        "key": rtype.key, **rtype.settings(), "replicas": replicas, "gpus": replicas * rtype.tensor_parallel,
        "cost_per_hour": replicas * rtype.cost_per_hour,
        "energy_per_token_j": sim["energy_j"] / tokens if tokens > 0 else math.nan,
        "meets_slo": v["meets_slo"], "binding": v["binding"], "violations": v["violations"],
        "per_class": sim["per_class"], "rejected": sim["rejected"], "sim_wall_s": sim["sim_wall_s"],
    }


def min_replicas(run, start: int, hi: int, lo: int = 1) -> tuple[int | None, list[int]]:
    """Smallest n in [lo, hi] with ``run(n)['meets_slo']``, by a search that starts at ``start``.

    ``run(n)`` returns a verified record (memoized by the caller, so repeated counts are free).
    From ``start``: while it fails, step up (doubling the step) until a pass or ``hi``; then
    bisect between the largest known failure and the smallest known pass, and finally make sure
    ``n - 1`` was simulated (shown failing) when n > lo. Returns (n or None, counts simulated).
    """
    start = min(max(start, lo), hi)
    tried: list[int] = []

    def ok(n: int) -> bool:
        tried.append(n)
        return bool(run(n)["meets_slo"])

    fail, good = lo - 1, None
    n, step = start, 1
    while n <= hi:
        if ok(n):
            good = n
            break
        fail = n
        if n == hi:
            break
        n, step = min(hi, n + step), step * 2
    if good is None:
        return None, tried
    # below a pass: the count just under it first (the screen is usually close), then bisect
    probed_below = False
    while good - fail > 1:
        mid = good - 1 if not probed_below else (fail + good) // 2
        probed_below = True
        if ok(mid):
            good = mid
        else:
            fail = mid
    return good, tried
