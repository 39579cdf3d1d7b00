"""Solve the step-clock model (:mod:`fluidserve.fluid.stepclock`) for a config -> FluidResult.

Backends ``stepclock`` (numpy loop) and ``stepclock_jax`` (``jax.lax.scan``) run the same step
function. Replicas behind a rate-split router (round_robin, weighted) each get their share of
the arrivals; ``least_loaded`` has the fluid meaning of an equal split among identical replicas
(join-the-shortest-queue balances them exactly in the limit). Series are sampled on the output
grid as the engine's are: held between step ends, a staircase of h treads across a macro step of h
engine steps (flows: per macro step, held).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from fluidserve.errors import UnsupportedError
from fluidserve.fluid import stepclock as sc
from fluidserve.fluid import tails
from fluidserve.fluid.classes import decode_edges
from fluidserve.fluid.result import SERIES_COLUMNS, FluidResult
from fluidserve.fluid.solve import output_spacing

PROGRESS_AFTER_S = 2.0


def check_supported_stepclock(cfg) -> None:
    """Raise UnsupportedError for what the step-clock model does not represent."""
    v1 = getattr(cfg.system, "scheduler", "vllm_v0") == "vllm_v1"
    if not v1 and cfg.policy.victim_policy != "LIFO":
        raise UnsupportedError(
            f"fluid model: policy.victim_policy={cfg.policy.victim_policy} is not modeled "
            "(only LIFO keeps the arrival order that the transport model relies on)"
        )
    if cfg.policy.queue_policy != "FCFS":  # noqa: SIM102
        raise UnsupportedError(f"fluid model: policy.queue_policy={cfg.policy.queue_policy} is not modeled (FCFS only)")


def shares(cfg) -> np.ndarray:
    R = cfg.cluster.replicas
    if R > 1 and cfg.cluster.router == "weighted":
        w = np.asarray(cfg.cluster.weights, dtype=float)
        return w / w.sum()
    return np.full(R, 1.0 / R)


class _Progress:
    """tqdm bar on stderr over simulated time, shown only once a solve has run for 2 s."""

    def __init__(self, total_s: float, desc: str):
        self.total, self.desc, self.t0, self.bar = total_s, desc, time.perf_counter(), None

    def __call__(self, t_s: float) -> None:
        if self.bar is None and time.perf_counter() - self.t0 > PROGRESS_AFTER_S:
            from tqdm import tqdm

            self.bar = tqdm(total=round(self.total, 1), desc=self.desc, unit="s", file=sys.stderr, mininterval=0.5)
        if self.bar is not None:
            self.bar.n = round(min(t_s, self.total), 1)
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def run_replica(c: sc.Consts, impl: str, horizon_s, desc: str) -> dict:
    prog = _Progress(c.lam.shape[0] * float(c.bin_s), desc)
    try:
        if impl == "jax":
            return sc.run_jax(c, horizon_s, progress=prog)
        return sc.run_numpy(c, horizon_s, progress=prog)
    finally:
        prog.close()


def _on_grid(o: dict, ts: np.ndarray) -> dict:
    """Boundary states on ``ts`` (a staircase of engine steps); per-macro-step flows as rates held over the step."""
    dt = np.maximum(o["t1"] - o["t0"], 1e-300)
    idx = np.clip(np.searchsorted(o["t1"], ts, side="right"), 0, len(dt) - 1)
    inside = (ts >= o["t0"][idx]) & (ts < o["t1"][idx])
    # an engine's state changes at step ends and holds in between (as the simulator's snapshots):
    # within a macro step of h steps the boundary states are joined by a staircase of h treads
    h = np.maximum(o["steps"][idx], 1.0)
    frac = np.where(inside, np.floor((ts - o["t0"][idx]) / dt[idx] * h + 1e-9) / h, 1.0)
    frac = np.where(ts >= o["t1"][-1], 1.0, frac)

    def state(x):
        x = np.asarray(x, float)
        before = np.where(idx > 0, x[np.maximum(idx - 1, 0)], 0.0)
        return before + (x[idx] - before) * frac

    def rate(x):
        return np.where(inside, x[idx] / dt[idx], 0.0)

    tau = np.where(inside & (o["steps"][idx] > 0), o["tau"][idx], np.nan)
    return {
        "waiting": state(o["waiting"]), "running": state(o["running"]), "swapped": state(o["swapped"]),
        "kv_memory_tokens": state(o["kv"]), "kv_context_tokens": state(o["kv_ctx"]), "step_time_s": tau,
        "throughput_rps": rate(o["done"].sum(-1)), "decode_tokens_per_s": rate(o["n_dec"]),
        "admission_rate": rate(o["admit"].sum(-1) + o["returned"]), "preemption_rate": rate(o["victims"]),
        "swap_in_rate": rate(o["returned"]), "completed": state(np.cumsum(o["done"].sum(-1))),
        "_cls_run": np.stack([state(x) for x in o["cls_run"].T]),
        "_cls_wait": np.stack([state(x) for x in o["cls_wait"].T]),
    }


def solve_stepclock(cfg, workload, batch_time=None, impl: str = "numpy", stride: int | None = None,
                    pooled_mix: bool = False, fluctuations: bool = True) -> FluidResult:
    """Solve the step-clock fluid model of ``workload`` under ``cfg`` (one run per distinct share).

    Args:
        batch_time: override of ``cfg.batch_time_model()`` (the fluid-limit scaling).
        impl: "numpy" (loop) or "jax" (compiled scan).
        stride: engine steps per macro step (None: ``fluid.step_stride``, else automatic).
        pooled_mix: constant group mix in time (see :func:`stepclock.build`).
        fluctuations: per-request delays with the step fluctuations of scale n = 1 (eq. sc11);
            False: the fluid limit's own delays (the crosscheck's reference).
    """
    check_supported_stepclock(cfg)
    t_start = time.perf_counter()
    bt = batch_time if batch_time is not None else cfg.batch_time_model()
    sh = shares(cfg)
    runs, built = {}, {}
    for i, share in enumerate(sh):
        key = round(float(share), 15)
        if key not in runs:
            c, groups, h = sc.build(cfg, workload, share, bt, stride, pooled_mix)
            built[key] = (c, groups, h)
            runs[key] = run_replica(c, impl, cfg.fluid.horizon_s, f"fluid stepclock (replica {i})")
    c0, groups, h = built[round(float(sh[0]), 15)]
    window = c0.lam.shape[0] * float(c0.bin_s)
    end = cfg.fluid.horizon_s if cfg.fluid.horizon_s is not None else max(
        max(float(o["t1"][-1]) for o in runs.values()), window)
    dt = output_spacing(window, cfg.fluid)
    ts = np.arange(0.0, end + dt, dt)
    # reporting classes: decode-length quantile bins (fluid.num_classes), groups mapped by their D
    D_adm = workload.decode_tokens[groups.mask]
    edges = decode_edges(D_adm, cfg.fluid.num_classes)
    K = len(edges) - 1
    g_cls = np.clip(np.searchsorted(edges[1:-1], np.round(groups.decode_tokens), side="left"), 0, K - 1)
    grids = [(_on_grid(runs[round(float(s), 15)], ts)) for s in sh]
    cols = {k: np.sum([g[k] for g in grids], axis=0) for k in grids[0] if not k.startswith("_") and k != "step_time_s"}
    taus_g = np.stack([g["step_time_s"] for g in grids])
    n_ok = np.isfinite(taus_g).sum(0)
    tau = np.where(n_ok > 0, np.nansum(taus_g, axis=0) / np.maximum(n_ok, 1), float(bt.d0_s))
    cols["step_time_s"] = tau
    cls_run = sum(np.stack([g["_cls_run"][g_cls == k].sum(0) for k in range(K)]) for g in grids)
    cls_wait = sum(np.stack([g["_cls_wait"][g_cls == k].sum(0) for k in range(K)]) for g in grids)
    lam_total = c0.lam.sum(1) / float(sh[0])
    b = np.floor(ts / float(c0.bin_s)).astype(int)
    cols["arrival_rate"] = np.where((b >= 0) & (b < len(lam_total)), lam_total[np.clip(b, 0, len(lam_total) - 1)], 0.0)
    # per-request delays (eq. sc10): each request through its replica's step clock
    delays = []
    arr_t = workload.arrival_time_s[groups.mask]
    P_adm = workload.prefill_tokens[groups.mask]
    if getattr(cfg.system, "enable_prefix_caching", False):
        P_comp = (workload.prefill_tokens - sc.prefix_hits(workload, cfg.system)[0])[groups.mask]
    else:
        P_comp = P_adm
    v1 = getattr(cfg.system, "scheduler", "vllm_v0") == "vllm_v1"
    R = len(sh)
    rep_of = _replica_of(len(arr_t), sh)
    for r in range(R):
        o = runs[round(float(sh[r]), 15)]
        sel = rep_of == r
        if not sel.any():
            continue
        t_b = np.concatenate([[0.0], o["t1"]])
        s_b = np.concatenate([[0.0], np.cumsum(o["steps"])])
        a_b = np.concatenate([[0.0], np.cumsum(o["arrived"].sum(-1))])
        A_b = np.concatenate([[0.0], np.cumsum(o["admit"].sum(-1))])
        # a replica's run sees share * all arrivals: rescale its cumulative curves to its own requests
        frac = sel.sum() / max(a_b[-1], 1e-12)
        left = float(cfg.system.B) - np.concatenate([[0.0], o["running"]])
        budget = left if cfg.system.chunked_prefill else None
        delays.append(tails.request_delays(t_b, s_b, a_b * frac, A_b * frac, arr_t[sel], P_comp[sel],
                                           D_adm[sel], float(bt.d0_s), float(bt.d1_prefill_s), v1,
                                           seed=int(cfg.seed) + r, fluctuations=fluctuations,
                                           chunk_budget_tokens=budget, budget_tokens=left).assign(decode_tokens=D_adm[sel]))
    delays = pd.concat(delays, ignore_index=True)
    cols["virtual_waiting_s"] = np.interp(ts, np.sort(delays["arrival_s"].to_numpy()),
                                          delays.sort_values("arrival_s")["waiting"].to_numpy())
    cols["time"] = ts
    series = pd.DataFrame({k: cols[k] for k in SERIES_COLUMNS})
    req_cls = np.clip(np.searchsorted(edges[1:-1], delays["decode_tokens"].to_numpy(), side="left"), 0, K - 1)
    done_cls = sum(np.bincount(g_cls, o["done"].sum(0), minlength=K) for o in (runs[round(float(s), 15)] for s in sh))
    adm_cls = sum(np.bincount(g_cls, o["admit"].sum(0), minlength=K) for o in (runs[round(float(s), 15)] for s in sh))
    by = delays.groupby(req_cls)
    classes = pd.DataFrame({
        "class": np.arange(K), "decode_lo": edges[:-1] + 1, "decode_hi": edges[1:],
        "share": np.bincount(req_cls, minlength=K) / max(len(req_cls), 1),
        "mean_prefill_tokens": pd.Series(P_adm).groupby(np.clip(np.searchsorted(edges[1:-1], D_adm, side="left"), 0, K - 1)).mean().reindex(range(K)).to_numpy(),
        "mean_decode_tokens": by["decode_tokens"].mean().reindex(range(K)).to_numpy(),
        "admitted": adm_cls, "completed": done_cls,
        "mean_waiting_s": by["waiting"].mean().reindex(range(K)).to_numpy(),
        "mean_ttft_s": by["ttft"].mean().reindex(range(K)).to_numpy(),
        "mean_e2e_s": by["e2e"].mean().reindex(range(K)).to_numpy(),
    })
    all_runs = [runs[round(float(s), 15)] for s in sh]
    steps = np.concatenate([o["steps"] for o in all_runs])
    taus = np.concatenate([o["tau"] for o in all_runs])
    summary = {
        "backend": "stepclock" if impl == "numpy" else "stepclock_jax", "replicas": R,
        "arrival_window_s": window, "horizon_s": float(ts[-1]), "step_stride": h,
        "macro_steps": int(sum(len(o["t1"]) for o in runs.values())),
        "steps": float(sum(o["steps"].sum() for o in all_runs)),
        "admitted": float(sum(o["admit"].sum() for o in all_runs)),
        "completed": float(sum(o["done"].sum() for o in all_runs)),
        "mean_step_time_s": float((taus * steps).sum() / max(steps.sum(), 1e-12)),
        "mean_waiting_s": float(delays["waiting"].mean()), "mean_ttft_s": float(delays["ttft"].mean()),
        "mean_e2e_s": float(delays["e2e"].mean()),
        **{f"peak_{k}": float(series[k].max()) for k in ("waiting", "running", "swapped", "kv_memory_tokens")},
        "rejected": int((~groups.mask).sum()), "num_classes": K, "num_groups": int(len(groups.share)),
        "stage_width": 1, "num_stages": int(c0.w.dec_avg.shape[0]),
    }
    result = FluidResult(series, cls_wait, cls_run, classes, summary, request_delays=delays)
    result.summary["solve_time_s"] = time.perf_counter() - t_start
    return result


def _replica_of(n: int, sh: np.ndarray) -> np.ndarray:
    """Replica of each request (in arrival order) under the rate split: a deterministic interleave."""
    cum = np.cumsum(sh)
    pos = ((np.arange(n) + 0.5) * GOLDEN_SPLIT) % 1.0 if len(sh) > 1 else np.zeros(n)
    return np.searchsorted(cum, pos, side="right").clip(0, len(sh) - 1)


GOLDEN_SPLIT = 0.6180339887498949
