"""Quasi-static fluid model: every arrival-rate bin at its own steady state, plus a fluid queue.

Time-scale separation (theory section "Quasi-static limit"): the engine relaxes to its steady
state within a few sojourn times ((1.5 + D) steps, seconds), while trace rates change on the
scale of the bin width (``fluid.bin_s``, 10 s and more). Within bin b, with arrival rate
lambda_b and the request mix of the bin's arrivals (mean P, D, context tokens K and block-rounded
memory steps K_b), the engine serves at most X_b = c*/(d0 + c* w) requests/s (eqs. 18-19,
:func:`closed_forms.capacity_arrays`). The backlog Q obeys the fluid queue

    dQ/dt = lambda_b - X_b   while Q > 0 or lambda_b > X_b,   else Q = 0,

solved exactly (piecewise linear). The engine admits x(t) = X_b while Q > 0 and lambda_b
otherwise, and its state is the steady state at admission rate x: tau = d0/(1 - x w) (eq. 17),
running x tau D, KV memory x tau K_b, context read x tau K per step. Completions are admissions
delayed by the mean sojourn (1.5 + D) tau. Mean delays: waiting = int Q dt / arrivals (Little's
law, FCFS), TTFT = waiting + 2.5 tau, end-to-end = waiting + (1.5 + D) tau (the offsets of the
step map: half a step to the next step, one prefill step, one step per decode iteration).

What it leaves out, by design: the transients between bins (they last a sojourn time), the
waiting that fluctuations cause below capacity, preemption churn when memory binds (the
capacity X_b already charges the memory limit), and the mix of a queue carried across bins
(capacity uses the current bin's mix). Cost: O(requests + bins), no ODE, no per-step loop.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from fluidserve.errors import InputError
from fluidserve.fluid.classes import _memory_steps, admissible, decode_edges, memory_steps_in_batch
from fluidserve.fluid.closed_forms import capacity_arrays, tau_star_arrays
from fluidserve.fluid.params import check_supported_ode, replica_shares
from fluidserve.fluid.result import SERIES_COLUMNS, FluidResult
from fluidserve.fluid.solve import output_spacing

PREFILL_OFFSET_STEPS = 1.5  # half a step to the next step start + one prefill step
TTFT_OFFSET_STEPS = 2.5  # ... + decode iteration 0, which emits the first token
HALF_STEP = 0.5  # from an arrival to the next step start, on average


def bin_mix(workload, cfg, bin_s: float, pooled: bool = False, num_classes: int = 4) -> dict:
    """Arrivals per bin and the mean request of each bin (admissible requests only).

    Returns arrays over bins: ``count``, ``P``, ``D``, ``K`` (context tokens read over a request's
    decode, D*P + D(D-1)/2), ``Kb`` (block-rounded KV memory steps), plus ``rejected``. A bin with
    no arrival takes the mix of the nearest earlier bin with arrivals (it serves that backlog).
    ``pooled``: every bin gets the mean request of the whole workload (lengths i.i.d. in time, as
    in the crosscheck's scaled workloads). ``class_*``: the same per decode-length class
    (quantile bins, as the ODE's classes) and each bin's class fractions ``class_frac`` (nb, K).
    """
    s = cfg.system
    ok = admissible(workload, s.total_blocks, s.block_size, s.B, s.chunked_prefill)
    if not ok.any():
        raise InputError(f"workload '{workload.name}': every request is rejected by the engine; "
                         "nothing for the fluid model to serve")
    t = workload.arrival_time_s[ok]
    P = workload.prefill_tokens[ok].astype(np.int64)
    D = workload.decode_tokens[ok].astype(np.int64)
    nb = max(1, int(np.ceil((t.max() + 1e-12) / bin_s)))
    b = np.minimum((t // bin_s).astype(np.int64), nb - 1)
    count = np.bincount(b, minlength=nb).astype(float)
    # empty bins take the last mix (the first bins, before any arrival, the first mix)
    last = np.maximum.accumulate(np.where(count > 0, np.arange(nb), -1))
    fill = np.where(last < 0, np.argmax(count > 0), last)

    def mean(x):
        if pooled:
            return np.full(nb, float(np.mean(x)))
        with np.errstate(invalid="ignore", divide="ignore"):
            return (np.bincount(b, weights=x.astype(float), minlength=nb) / count)[fill]

    Kr = D * P + D * (D - 1) / 2.0
    Kb = _memory_steps(P, D, s.block_size).astype(float)
    Kb_batch = memory_steps_in_batch(P, D, s.block_size, getattr(s, "scheduler", "vllm_v0")).astype(float)
    # decode-length classes (the ODE's quantile bins) for the sojourn-time spread of the series
    edges = decode_edges(D, num_classes)
    cls = np.clip(np.searchsorted(edges[1:-1], D, side="left"), 0, len(edges) - 2)
    K = len(edges) - 1
    n_bk = np.zeros((nb, K))
    np.add.at(n_bk, (b, cls), 1.0)
    frac = n_bk.sum(0) / n_bk.sum() if pooled else (n_bk / np.maximum(count, 1.0)[:, None])[fill]
    n_k = np.bincount(cls, minlength=K).astype(float)
    return {
        "count": count, "P": mean(P), "D": mean(D), "K": mean(Kr), "Kb": mean(Kb), "Kb_batch": mean(Kb_batch),
        "rejected": int((~ok).sum()),
        "first_arrival_s": float(t.min()), "D_min": int(D.min()), "D_max": int(D.max()),
        "class_frac": np.broadcast_to(frac, (nb, K)), "d_edges": edges,
        "class_D": np.bincount(cls, D, K) / n_k, "class_P": np.bincount(cls, P, K) / n_k,
        "class_K": np.bincount(cls, Kr, K) / n_k, "class_Kb": np.bincount(cls, Kb, K) / n_k,
    }


def fluid_queue(lam: np.ndarray, cap: np.ndarray, bin_s: float) -> dict:
    """Exact piecewise-linear fluid queue over bins, then a drain at the last bin's capacity.

    Args:
        lam: arrival rate per bin [req/s]; cap: service capacity X_b per bin [req/s].

    Returns per-segment arrays (a bin splits where the queue empties): ``t0``, ``t1`` [s],
    ``q0`` (backlog at t0, requests), ``slope`` (dQ/dt), ``x`` (admission rate), ``bin``.
    """
    t0s, t1s, q0s, slopes, xs, bins = [], [], [], [], [], []
    q = 0.0
    for b in range(len(lam)):
        start, end = b * bin_s, (b + 1) * bin_s
        lb, xb = float(lam[b]), float(cap[b])
        if q <= 0.0 and lb <= xb:  # below capacity with no backlog: x = lambda
            t0s.append(start), t1s.append(end), q0s.append(0.0), slopes.append(0.0), xs.append(lb), bins.append(b)
            continue
        slope = lb - xb
        t_empty = q / -slope if slope < 0 else np.inf
        if t_empty >= bin_s:
            t0s.append(start), t1s.append(end), q0s.append(q), slopes.append(slope), xs.append(xb), bins.append(b)
            q = q + slope * bin_s
        else:  # the backlog clears inside the bin
            mid = start + t_empty
            t0s.append(start), t1s.append(mid), q0s.append(q), slopes.append(slope), xs.append(xb), bins.append(b)
            t0s.append(mid), t1s.append(end), q0s.append(0.0), slopes.append(0.0), xs.append(lb), bins.append(b)
            q = 0.0
    if q > 0.0:  # drain after the last arrival bin at its capacity
        start = len(lam) * bin_s
        xb = float(cap[-1])
        t0s.append(start), t1s.append(start + q / xb), q0s.append(q), slopes.append(-xb), xs.append(xb)
        bins.append(len(lam) - 1)
    return {k: np.asarray(v, dtype=float if k != "bin" else np.int64) for k, v in
            (("t0", t0s), ("t1", t1s), ("q0", q0s), ("slope", slopes), ("x", xs), ("bin", bins))}


def _replica(mix: dict, share: float, bt, cfg, bin_s: float) -> dict:
    """One replica's queue segments and steady-state quantities per segment."""
    s = cfg.system
    lam = share * mix["count"] / bin_s
    capa = capacity_arrays(bt, mix["P"], mix["D"], mix["K"], mix["Kb_batch"], s.total_blocks * s.block_size, s.B,
                           s.max_num_seqs, getattr(s, "scheduler", "vllm_v0"))
    seg = fluid_queue(lam, capa["throughput_max"], bin_s)
    b = seg["bin"]
    tau = tau_star_arrays(bt, seg["x"], mix["P"][b], mix["D"][b], mix["K"][b])
    seg.update(tau=tau, D=mix["D"][b], Kb=mix["Kb"][b], K=mix["K"][b], P=mix["P"][b], lam=lam, X=capa["throughput_max"])
    # per-segment integrals: backlog-time [request*s], admissions [requests]
    dt = seg["t1"] - seg["t0"]
    seg["q_int"] = seg["q0"] * dt + 0.5 * seg["slope"] * dt**2
    seg["admitted"] = seg["x"] * dt
    return seg


def _on_grid(seg: dict, mix: dict, ts: np.ndarray, bin_s: float, d0_s: float, max_num_seqs: float = np.inf,
             M_tokens: float = np.inf) -> dict:
    """The replica's series at times ``ts``.

    The backlog is exact. Class k's admissions A_k(t) (admission rate times the bin's class
    fraction, integrated exactly) enter decoding 1.5 steps later and leave after D_k more steps,
    each at the step time tau(s) of their admission time s: running_k(t) = A_k(t - 1.5 tau) -
    A_k(t - (1.5 + D_k) tau) (steady state: x_k tau D_k, eq. 17) and completions
    C_k(t) = A_k(t - (1.5 + D_k) tau); KV memory and context read are running_k times the class's
    mean per decoding request.
    """
    i = np.searchsorted(seg["t1"], ts, side="right")
    inside = i < len(seg["t1"])
    i = np.minimum(i, len(seg["t1"]) - 1)
    x = np.where(inside, seg["x"][i], 0.0)
    tau = np.where(inside, seg["tau"][i], d0_s)
    q = np.where(inside, np.maximum(seg["q0"][i] + seg["slope"][i] * (ts - seg["t0"][i]), 0.0), 0.0)
    nb = len(seg["lam"])
    bidx = np.floor(ts / bin_s).astype(np.int64)
    lam_t = np.where((bidx >= 0) & (bidx < nb), seg["lam"][np.clip(bidx, 0, nb - 1)], 0.0)
    frac = mix["class_frac"][seg["bin"]]  # (segments, K)
    cum_k = np.vstack([np.zeros((1, frac.shape[1])), np.cumsum(seg["admitted"][:, None] * frac, axis=0)])
    running = np.zeros_like(ts)
    kv_mem = np.zeros_like(ts)
    kv_ctx = np.zeros_like(ts)
    completed = np.zeros_like(ts)
    class_running = []

    def delayed(cum, steps):
        """Cumulative admissions shifted by ``steps`` step times of the segment they were admitted in."""
        shift = steps * seg["tau"]
        xs = np.maximum.accumulate(np.column_stack([seg["t0"] + shift, seg["t1"] + shift]).ravel())
        ys = np.column_stack([cum[:-1], cum[1:]]).ravel()
        return np.interp(ts, xs, ys, left=0.0)

    for k in range(frac.shape[1]):
        Dk = float(mix["class_D"][k])
        start = delayed(cum_k[:, k], PREFILL_OFFSET_STEPS)
        leave = delayed(cum_k[:, k], PREFILL_OFFSET_STEPS + Dk)
        r_k = np.maximum(start - leave, 0.0)
        class_running.append(r_k)
        running += r_k
        kv_mem += r_k * mix["class_Kb"][k] / Dk
        kv_ctx += r_k * mix["class_K"][k] / Dk
        completed += leave
    # the engine's caps: where cohorts delayed by different step times overlap (a step-time drop
    # between segments), the lagged sums can exceed what the engine admits; they are cut at the cap
    over = np.maximum(running / max_num_seqs, kv_mem / M_tokens)
    cut = np.where(over > 1.0, 1.0 / np.maximum(over, 1e-300), 1.0)
    running, kv_mem, kv_ctx = running * cut, kv_mem * cut, kv_ctx * cut
    class_running = [r * cut for r in class_running]
    X = np.where(inside, seg["X"][seg["bin"][i]], np.inf)
    return {
        "waiting": q, "running": running, "swapped": np.zeros_like(ts), "kv_memory_tokens": kv_mem,
        "kv_context_tokens": kv_ctx, "step_time_s": tau, "throughput_rps": x,
        "decode_tokens_per_s": np.where(tau > 0, running / tau, 0.0), "arrival_rate": lam_t,
        "admission_rate": x, "preemption_rate": np.zeros_like(ts), "swap_in_rate": np.zeros_like(ts),
        "virtual_waiting_s": np.where(q > 0, q / X, 0.0) + 0.5 * tau, "completed": completed,
        "_class_running": np.array(class_running),
    }


def solve_quasistatic(cfg, workload, batch_time=None, dt_out_s: float | None = None,
                      pooled_mix: bool = False) -> FluidResult:
    """Solve the quasi-static fluid model of ``workload`` under ``cfg`` (see the module docstring).

    Args:
        cfg: validated Config (``fluid.bin_s`` sets the bins, ``fluid.num_classes`` the decode-length
            classes of the sojourn lag; ``fluid.stages`` is not used).
        workload: the requests (rejected ones, by the engine's rule, are counted and removed).
        batch_time: override of ``cfg.batch_time_model()``.
        dt_out_s: output spacing [s]; default :func:`solve.output_spacing` (as the ODE).
        pooled_mix: use the whole workload's mean request in every bin (see :func:`bin_mix`).

    With ``fluid.horizon_s`` the series stop there and ``completed`` / ``admitted`` count up to it;
    the mean delays are those of all arrivals. Raises UnsupportedError for configs the fluid model
    does not represent (as the ODE).
    """
    t_start = time.perf_counter()
    check_supported_ode(cfg)
    bt = batch_time or cfg.batch_time_model()
    bin_s = float(cfg.fluid.bin_s)
    mix = bin_mix(workload, cfg, bin_s, pooled_mix, cfg.fluid.num_classes)
    shares = replica_shares(cfg)
    cache: dict[float, dict] = {}
    segs = []
    for sh in shares:
        key = round(float(sh), 12)
        if key not in cache:
            cache[key] = _replica(mix, float(sh), bt, cfg, bin_s)
        segs.append(cache[key])
    # the last completion: every segment's last cohort leaves (1.5 + D) of its own steps later
    end = max(float(np.max(sg["t1"] + (PREFILL_OFFSET_STEPS + mix["class_D"].max()) * sg["tau"])) for sg in segs)
    if cfg.fluid.horizon_s is not None:
        end = float(cfg.fluid.horizon_s)
    dt = dt_out_s or output_spacing(len(mix["count"]) * bin_s, cfg.fluid)
    ts = np.arange(0.0, end + dt, dt)
    grids = [_on_grid(sg, mix, ts, bin_s, bt.d0_s, cfg.system.max_num_seqs,
                      cfg.system.total_blocks * cfg.system.block_size) for sg in segs]
    cols = {c: np.sum([g[c] for g in grids], axis=0) for c in grids[0]}
    for c in ("step_time_s", "virtual_waiting_s"):
        cols[c] = np.mean([g[c] for g in grids], axis=0)
    cols["time"] = ts
    series = pd.DataFrame({c: cols[c] for c in SERIES_COLUMNS})

    arrived = float(mix["count"].sum())
    q_int = sum(float(sg["q_int"].sum()) for sg in segs)
    adm = np.concatenate([sg["admitted"] for sg in segs])
    tau = np.concatenate([sg["tau"] for sg in segs])
    Dseg = np.concatenate([sg["D"] for sg in segs])
    wsum = float(adm.sum()) or 1.0
    tau_bar = float((adm * tau).sum() / wsum)
    # admission happens at a step start: half a step after the arrival on average (the step map's
    # mean waiting), on top of the fluid backlog's delay (Little's law)
    mean_wait = q_int / max(arrived, 1e-12) + HALF_STEP * tau_bar
    mean_ttft = mean_wait + (TTFT_OFFSET_STEPS - HALF_STEP) * tau_bar
    mean_e2e = mean_wait + float((adm * (PREFILL_OFFSET_STEPS - HALF_STEP + Dseg) * tau).sum() / wsum)
    # admissions by the end of the grid (all of them unless fluid.horizon_s cuts the run short)
    admitted_end = float(sum(np.clip((ts[-1] - sg["t0"]) * sg["x"], 0.0, sg["admitted"]).sum() for sg in segs))
    Kc = len(mix["class_D"])
    adm_k = np.sum([(sg["admitted"][:, None] * mix["class_frac"][sg["bin"]]).sum(0) for sg in segs], axis=0)
    edges = mix["d_edges"]
    classes = pd.DataFrame({
        "class": np.arange(Kc), "decode_lo": edges[:-1] + 1, "decode_hi": edges[1:],
        "share": adm_k / max(adm_k.sum(), 1e-12), "mean_prefill_tokens": mix["class_P"],
        "mean_decode_tokens": mix["class_D"], "admitted": adm_k, "completed": adm_k,
        "mean_waiting_s": np.full(Kc, mean_wait), "mean_ttft_s": np.full(Kc, mean_ttft),
        "mean_e2e_s": mean_wait + (PREFILL_OFFSET_STEPS - HALF_STEP + mix["class_D"]) * tau_bar,
    })
    bidx = np.clip(np.floor(ts / bin_s).astype(np.int64), 0, len(mix["count"]) - 1)
    class_waiting = (cols["waiting"][:, None] * mix["class_frac"][bidx]).T
    summary = {
        "backend": "quasistatic", "replicas": len(shares), "arrival_window_s": len(mix["count"]) * bin_s,
        "segments": int(sum(len(sg["t0"]) for sg in segs)), "horizon_s": float(ts[-1]),
        "admitted": admitted_end, "completed": float(cols["completed"][-1]), "mean_step_time_s": tau_bar,
        "mean_waiting_s": mean_wait, "mean_ttft_s": mean_ttft, "mean_e2e_s": mean_e2e,
        "peak_waiting": float(series["waiting"].max()), "peak_running": float(series["running"].max()),
        "peak_swapped": 0.0, "peak_kv_memory_tokens": float(series["kv_memory_tokens"].max()),
        "rejected": mix["rejected"], "num_classes": Kc, "stage_width": None, "num_stages": None,
        "capacity_bound_s": float(max(((sg["t1"] - sg["t0"]) * ((sg["q0"] > 0) | (sg["slope"] > 0))).sum()
                                      for sg in segs)),
    }
    result = FluidResult(series, class_waiting, cols["_class_running"], classes, summary)
    result.summary["solve_time_s"] = time.perf_counter() - t_start
    return result
