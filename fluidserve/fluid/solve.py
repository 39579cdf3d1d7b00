"""Solve the fluid model for a config and a workload (either backend) -> FluidResult.

The horizon is the arrival window (bins of ``fluid.bin_s``) followed by drain segments until the
system is empty (mass below 1e-6 of its peak), unless ``fluid.horizon_s`` fixes it. Integration
runs in chunks of output points so that only derived series, not full states, are kept.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, UnsupportedError
from fluidserve.fluid.classes import ClassTables
from fluidserve.fluid.params import (
    FluidParams,
    build_params,
    check_supported_ode,
    replica_shares,
)
from fluidserve.fluid.result import SERIES_COLUMNS, FluidResult
from fluidserve.fluid.vector_field import initial_state, step_quantities, unpack

CHUNK_POINTS = 400
MAX_DRAIN_SEGMENTS = 200
EMPTY_FRACTION = 1e-6


def make_integrator(backend: str, params: FluidParams, fluid_cfg):
    if backend == "scipy":
        from fluidserve.fluid.scipy_backend import ScipyIntegrator

        return ScipyIntegrator(params, fluid_cfg.method, fluid_cfg.rtol, fluid_cfg.atol)
    if backend == "jax":
        from fluidserve.fluid.jax_backend import JaxIntegrator

        return JaxIntegrator(params, rtol=fluid_cfg.rtol, atol=fluid_cfg.atol)
    raise InputError(f"fluid.backend must be 'scipy' or 'jax', got {backend!r}")


def output_spacing(window_s: float, fluid_cfg) -> float:
    """Output spacing [s]: fluid.dt_out_s, else the arrival window / 2000 within [0.01, 1] s."""
    if getattr(fluid_cfg, "dt_out_s", None):
        return float(fluid_cfg.dt_out_s)
    return float(min(1.0, max(0.01, float(window_s) / 2000.0)))


def output_step(params: FluidParams, fluid_cfg) -> float:
    """:func:`output_spacing` of the parameters' arrival window."""
    return output_spacing(params.lam.shape[0] * float(params.bin_s), fluid_cfg)


def derived(ts: np.ndarray, ys: np.ndarray, params: FluidParams) -> dict:
    """Derived series at output times from states (T, N) (numpy, vectorized over time)."""
    q = step_quantities(ts, ys, params, np)
    rc = float(params.recompute)
    W, r, H, tau = q["W"], q["r"], q["H"], q["tau"]
    K, J = params.num_classes, params.num_stages
    _, _, _, A, C, IW, IT, IS = unpack(ys, K, J)
    held = H.sum(axis=(-2, -1))
    return {
        "time": ts,
        "waiting": W.sum(-1) + rc * held,
        "running": r.sum(axis=(-2, -1)),
        "swapped": (1.0 - rc) * held,
        "kv_memory_tokens": q["used"],
        "kv_context_tokens": q["kv_read"],
        "step_time_s": tau,
        "throughput_rps": q["complete"].sum(-1) / tau,
        "decode_tokens_per_s": q["n_dec"] / tau,
        "arrival_rate": q["lam"].sum(-1),
        "admission_rate": q["admit"].sum(-1) / tau,
        "preemption_rate": q["victims"].sum(axis=(-2, -1)) / tau,
        "swap_in_rate": q["held_in"].sum(axis=(-2, -1)) / tau,
        "_class_waiting": W + rc * H.sum(-1),
        "_class_running": r.sum(-1),
        "_A": A, "_C": C, "_IW": IW, "_IT": IT, "_IS": IS,
        "_mass": W.sum(-1) + r.sum(axis=(-2, -1)) + held,
    }


def integrate(params: FluidParams, integrator, dt_out: float, horizon_s: float | None = None) -> dict:
    """Run the chunked integration; returns concatenated derived series (dict of arrays)."""
    window = params.lam.shape[0] * float(params.bin_s)
    end_fixed = horizon_s
    y = np.asarray(initial_state(params))
    t = 0.0
    pieces = [derived(np.array([0.0]), y[None, :], params)]
    peak = 0.0
    drained = 0
    while True:
        stop = end_fixed if end_fixed is not None else None
        if stop is None:
            if t < window - 1e-12:
                stop = window
            else:
                if drained >= MAX_DRAIN_SEGMENTS:
                    break
                stop = t + CHUNK_POINTS * dt_out
                drained += 1
        if t >= stop - 1e-12:
            break
        t1 = min(stop, t + CHUNK_POINTS * dt_out)
        n = max(1, int(round((t1 - t) / dt_out)))
        t_eval = np.linspace(t, t1, n + 1)[1:]
        ys = integrator.integrate(y, t, t1, t_eval)
        piece = derived(t_eval, ys, params)
        pieces.append(piece)
        y = ys[-1]
        t = t1
        peak = max(peak, float(piece["_mass"].max()))
        if end_fixed is None and t >= window - 1e-12 and piece["_mass"][-1] <= EMPTY_FRACTION * max(peak, 1e-12):
            break
    return {key: np.concatenate([p[key] for p in pieces], axis=0) for key in pieces[0]}


def _virtual_wait(ts, lam_total_cum, admitted_cum) -> np.ndarray:
    """w(t) = A^{-1}(Lambda(t)) - t for FCFS (theory section 5); A made strictly increasing."""
    a = np.maximum.accumulate(admitted_cum + 1e-12 * np.arange(len(admitted_cum)))
    return np.maximum(0.0, np.interp(lam_total_cum, a, ts) - ts)


def summarize(raw: dict, tables: ClassTables, meta: dict) -> tuple[dict, dict]:
    """Scalar summary and per-class delays (eq. 16) of the (cluster-summed) raw series.

    Returns (summary, per_class) where per_class holds arrays over classes: admitted,
    completed, mean_waiting_s, mean_ttft_s, mean_e2e_s. Used by :func:`assemble` and, without
    building a FluidResult, by the sweeps' vmap path.
    """
    ts = raw["time"]
    tau = raw["step_time_s"]
    lam = raw["arrival_rate"]
    weight = np.trapezoid(lam, ts)
    tau_bar = float(np.trapezoid(lam * tau, ts) / weight) if weight > 0 else float(tau[0])
    A_end, C_end = raw["_A"][-1], raw["_C"][-1]
    safe = np.where(A_end > 0, A_end, 1.0)
    per_class = {
        "admitted": A_end, "completed": C_end,
        "mean_waiting_s": raw["_IW"][-1] / safe + 0.5 * tau_bar,
        "mean_ttft_s": raw["_IT"][-1] / safe + 1.5 * tau_bar,
        "mean_e2e_s": raw["_IS"][-1] / safe + 1.5 * tau_bar,
    }
    wsum = A_end.sum() if A_end.sum() > 0 else 1.0
    summary = dict(meta)
    summary.update(
        {
            "horizon_s": float(ts[-1]),
            "admitted": float(A_end.sum()),
            "completed": float(C_end.sum()),
            "mean_step_time_s": tau_bar,
            **{k: float((A_end * per_class[k]).sum() / wsum) for k in ("mean_waiting_s", "mean_ttft_s", "mean_e2e_s")},
            **{f"peak_{k}": float(np.max(raw[k])) for k in ("waiting", "running", "swapped", "kv_memory_tokens")},
            "rejected": tables.rejected,
            "num_classes": tables.num_classes,
            "stage_width": tables.stage_width,
            "num_stages": tables.num_stages,
        }
    )
    return summary, per_class


def assemble(raw: dict, params_list: list[FluidParams], tables: ClassTables, meta: dict) -> FluidResult:
    """Turn the (cluster-summed) raw series into a FluidResult."""
    ts = raw["time"]
    cols = {c: raw[c] for c in SERIES_COLUMNS if c in raw}
    # cumulative arrivals Lambda(t) (exact for piecewise-constant rates), admissions A(t)
    lam_cum = np.zeros_like(ts)
    for p in params_list:
        edges = np.arange(p.lam.shape[0] + 1) * float(p.bin_s)
        cum = np.concatenate([[0.0], np.cumsum(p.lam.sum(-1) * float(p.bin_s))])
        lam_cum += np.interp(ts, edges, cum)
    A_tot = raw["_A"].sum(-1)
    cols["completed"] = raw["_C"].sum(-1)
    cols["virtual_waiting_s"] = _virtual_wait(ts, lam_cum, A_tot) + 0.5 * raw["step_time_s"]
    series = pd.DataFrame(cols)[SERIES_COLUMNS]
    summary, per_class = summarize(raw, tables, meta)
    edges = tables.d_edges
    classes = pd.DataFrame(
        {
            "class": np.arange(tables.num_classes),
            "decode_lo": edges[:-1] + 1,
            "decode_hi": edges[1:],
            "share": tables.share,
            "mean_prefill_tokens": tables.mean_prefill_tokens,
            "mean_decode_tokens": tables.mean_decode_tokens,
            **per_class,
        }
    )
    return FluidResult(series, raw["_class_waiting"].T, raw["_class_running"].T, classes, summary)


def solve_params(params_list: list[FluidParams], tables: ClassTables, fluid_cfg, backend: str,
                 dt_out_s: float | None = None) -> FluidResult:
    """Solve one replica per params entry and sum the series over replicas."""
    t0 = time.perf_counter()
    dt_out = dt_out_s or output_step(params_list[0], fluid_cfg)
    raws, nfev, fallbacks = [], 0, 0
    # identical replicas (round robin) are solved once
    cache: dict[bytes, dict] = {}
    for p in params_list:
        key = np.asarray(p.lam).tobytes()
        if key not in cache:
            integ = make_integrator(backend, p, fluid_cfg)
            cache[key] = integrate(p, integ, dt_out, fluid_cfg.horizon_s)
            nfev += getattr(integ, "nfev", 0)
            fallbacks += getattr(integ, "fallbacks", 0)
        raws.append(cache[key])
    n = min(len(r["time"]) for r in raws)
    raw = {}
    for key in raws[0]:
        if key == "time":
            raw[key] = raws[0][key][:n]
        elif key == "step_time_s":
            raw[key] = np.mean([r[key][:n] for r in raws], axis=0)
        else:
            raw[key] = np.sum([r[key][:n] for r in raws], axis=0)
    meta = {"backend": backend, "replicas": len(params_list), "nfev": nfev, "lsoda_fallbacks": fallbacks,
            "arrival_window_s": float(params_list[0].lam.shape[0] * float(params_list[0].bin_s))}
    result = assemble(raw, params_list, tables, meta)
    result.summary["solve_time_s"] = time.perf_counter() - t0
    return result


def solve(cfg, workload, backend: str | None = None, batch_time=None) -> "FluidResult":
    """Solve the fluid model of ``workload`` served as configured by ``cfg``.

    Args:
        cfg: validated Config; ``cfg.fluid`` holds classes, stages, bins, tolerances.
        workload: the requests (their arrival rates are binned, their lengths build the classes).
        backend: "stepclock" / "stepclock_jax" (the step-clock transport model of
            :mod:`fluidserve.fluid.stepclock`, numpy or compiled), "scipy" or "jax" (the ODE), "stepmap" (the exact step map of
            :mod:`fluidserve.fluid.stepmap`) or "quasistatic" (:mod:`fluidserve.fluid.quasistatic`);
            None uses ``cfg.fluid.backend``.
        batch_time: override of ``cfg.batch_time_model()`` (used by the fluid-limit scaling).

    With several replicas (round_robin or weighted routers) each replica gets its share of the
    arrival rate and the series are summed (step_time_s is the replicas' mean).
    """
    from fluidserve import guards

    window_s = float(np.max(workload.arrival_time_s)) if len(workload) else 0.0
    guards.check_fluid_sizes(cfg.fluid, window_s)
    # every backend bins the arrival rate: refuse windows shorter than one bin (a 10 s bin spread
    # 1 s of arrivals over 10 s: the step-clock model put mean E2E 40-60% low)
    guards.check_fluid_window(cfg.fluid, window_s)
    backend = backend or cfg.fluid.backend
    if backend in ("stepclock", "stepclock_jax"):
        from fluidserve.fluid.stepclock_solve import solve_stepclock

        return solve_stepclock(cfg, workload, batch_time, impl="jax" if backend == "stepclock_jax" else "numpy")
    check_supported_ode(cfg)
    if backend == "stepmap":
        from fluidserve.fluid.stepmap import solve_stepmap

        if cfg.fluid.stages is not None:
            raise UnsupportedError(f"fluid.stages={cfg.fluid.stages} is not used by fluid.backend 'stepmap' "
                                   "(it tracks every decode age exactly): remove fluid.stages or use scipy/jax")
        return solve_stepmap(cfg, workload, batch_time)
    if backend == "quasistatic":
        from fluidserve.fluid.quasistatic import solve_quasistatic

        return solve_quasistatic(cfg, workload, batch_time)
    shares = replica_shares(cfg)
    params_list = []
    tables = None
    for share in shares:
        p, tables = build_params(cfg, workload, tables, share, batch_time)
        params_list.append(p)
    return solve_params(params_list, tables, cfg.fluid, backend)
