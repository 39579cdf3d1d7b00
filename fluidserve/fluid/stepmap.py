"""The exact fluid limit of the engine under the crosscheck scaling: a deterministic step map.

Under the scaling of :mod:`fluidserve.fluid.scaling` the step time stays O(1), so as n -> inf
the engine / n does not become an ODE but a discrete-time recursion over engine steps
(theory section "Discrete-time fluid limit (step map)", eqs. sm1-sm8). One iteration of
:func:`step` is one engine step on continuous mass per class k and decode age j (exact ages,
one stage per decode token, no relaxation):

1. arrivals of the previous step join the waiting mass (eq. sm1);
2. growth demand G; if it exceeds free memory, LIFO victims from the youngest stages (eq. sm2);
3. only without preemption: swap-in of the oldest stages (swapping) or re-admission of the
   recompute victims at the head of the queue, then FCFS admission of fresh waiting mass,
   proportional to its class mix, under memory, token budget B and max_num_seqs; no fresh
   admission while swapped mass remains (eqs. sm3-sm4);
4. step time from ``cfg.batch_time_model()`` plus swap time (eq. sm5);
5. every decoding unit advances one age; completions leave at the step end (eq. sm6).

KV memory is block-rounded through the class tables (block_size does not scale with n, so the
rounding survives the limit). Cost per step O(K x J). Series are the end-of-step values held
until the next step ends, exactly what :func:`fluidserve.fluid.compare.sim_on_grid` reads from
the simulator's snapshots.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from fluidserve.fluid.classes import ClassTables
from fluidserve.fluid.params import (
    FluidParams,
    build_params,
    check_supported_ode,
    replica_shares,
)
from fluidserve.fluid.result import SERIES_COLUMNS, FluidResult
from fluidserve.fluid.solve import output_spacing

EMPTY_FRACTION = 1e-9  # the system counts as empty below this fraction of its peak mass
MAX_STEPS = 5_000_000


def exact_stage_config(cfg):
    """A copy of ``cfg`` with ``fluid.stages = None``: the step map needs one stage per decode age."""
    new = cfg.model_copy(deep=True)
    new.fluid.stages = None
    new.base_dir = cfg.base_dir
    return new


def _cum_arrivals(p: FluidParams) -> tuple[np.ndarray, np.ndarray]:
    """Bin edges [s] and cumulative arrivals per class at the edges, shape (nbins + 1, K)."""
    nb = p.lam.shape[0]
    edges = np.arange(nb + 1) * float(p.bin_s)
    cum = np.vstack([np.zeros((1, p.lam.shape[1])), np.cumsum(p.lam * float(p.bin_s), axis=0)])
    return edges, cum


def _arrived(t: float, edges: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Cumulative arrivals Lambda_k(t) (piecewise linear; constant after the last bin)."""
    return np.array([np.interp(t, edges, cum[:, k]) for k in range(cum.shape[1])])


def _oldest_first(cap: float, per_age: np.ndarray) -> np.ndarray:
    """Fraction of each age's demand served when ``cap`` is given to the oldest ages first."""
    after = per_age[::-1].cumsum()[::-1] - per_age  # demand of older ages
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(per_age > 0, (cap - after) / per_age, 1.0)
    return np.clip(f, 0.0, 1.0)


def step(W, r, H, p: FluidParams, empty_tol: float) -> dict:
    """One engine step of the fluid limit (eqs. sm1-sm6) from the state at the step start.

    Args:
        W: fresh waiting mass per class (K,), arrivals of the previous step included [requests].
        r: decoding mass (K, J); stage j holds m(j) and decodes iteration j in this step.
        H: held mass (K, J): swapped (swapping) or recompute victims at the head of the queue.
        empty_tol: mass below which a queue counts as empty (the limit of "no request").

    Returns the new (W, r, H), the step time [s] and the per-step flows.
    """
    m, g, ctx, haz = p.mem, p.grow, p.ctx, p.haz
    rc = float(p.recompute) > 0.5
    M, B, S = float(p.M_total), float(p.B), float(p.max_num_seqs)
    # eq. sm2: growth demand and LIFO victims from the youngest stages
    used = float((r * m).sum())
    G = float((r * g).sum())
    need = G - (M - used)
    v = np.zeros_like(r)
    if need > 0:
        relief = (r * (m + g)).sum(axis=0)
        before = np.cumsum(relief) - relief
        with np.errstate(divide="ignore", invalid="ignore"):
            fv = np.where(relief > 0, np.clip((need - before) / relief, 0.0, 1.0), 0.0)
        v = fv[None, :] * r
    preempted = float(v.sum()) > empty_tol
    run = r - v
    n_run = float(run.sum())
    mem_left = M - float((run * (m + g)).sum())
    tok_left = B - n_run
    seq_left = S - n_run
    u = np.zeros_like(H)
    admit = np.zeros_like(W)
    if not preempted:
        # eq. sm3: held mass, oldest stage first (swap-in needs m+g, re-prefill needs m and c tokens)
        if float(H.sum()) > 0:
            nu_mem = m if rc else m + g
            nu_tok = ctx if rc else np.ones_like(ctx)
            f = np.minimum.reduce([
                _oldest_first(mem_left, (H * nu_mem).sum(0)),
                _oldest_first(tok_left, (H * nu_tok).sum(0)),
                _oldest_first(seq_left, H.sum(0)),
            ])
            u = f[None, :] * H
            mem_left -= float((u * nu_mem).sum())
            tok_left -= float((u * nu_tok).sum())
            seq_left -= float(u.sum())
        # eq. sm4: fresh FCFS admission only when nothing stays held
        if float((H - u).sum()) <= empty_tol and float(W.sum()) > 0:
            demand = ((W * m[:, 0]).sum(), (W * p.prefill).sum(), W.sum())
            theta = min([1.0] + [max(0.0, c) / d for c, d in zip((mem_left, tok_left, seq_left), demand) if d > 0])
            admit = theta * W
    # eq. sm5: the step's batch and its duration
    dec = run + (0.0 if rc else u)
    n_dec = float(dec.sum())
    kv_read = float((dec * ctx).sum())
    prefill = float((admit * p.prefill).sum()) + (float((u * ctx).sum()) if rc else 0.0)
    swap_tok = 0.0 if rc else float(((v + u) * ctx).sum())
    tau = float(p.d0_s + p.d1_prefill_s * prefill + p.d1_decode_s * n_dec + p.d2_kv_s * kv_read
                + p.swap_s_per_token * swap_tok)
    # eq. sm6: one age per step; completions leave at the step end
    done = dec * haz
    r_new = np.zeros_like(r)
    r_new[:, 1:] = (dec - done)[:, :-1]
    r_new[:, 0] += admit
    if rc:
        r_new += u
    return {
        "W": W - admit, "r": r_new, "H": H - u + v, "tau": tau, "admit": admit, "done": done.sum(1),
        "victims": float(v.sum()), "held_in": float(u.sum()), "n_dec": n_dec, "kv_read": kv_read,
    }


def run_steps(p: FluidParams, horizon_s: float | None = None) -> dict:
    """Iterate the step map from the empty system; returns per-step arrays (end-of-step values).

    Stops at ``horizon_s`` or, without one, when the arrival window is over and the mass is
    below EMPTY_FRACTION of its peak. While the system is empty and the rate is zero the clock
    jumps to the next bin with arrivals (engine rule 6).
    """
    K, J = p.mem.shape
    edges, cum = _cum_arrivals(p)
    window = float(edges[-1])
    total = float(cum[-1].sum())
    empty_tol = EMPTY_FRACTION * max(total, 1e-12)
    W, r, H = np.zeros(K), np.zeros((K, J)), np.zeros((K, J))
    rec = {key: [] for key in ("t0", "t1", "W", "H", "run", "kv", "kvr", "tau", "done", "admit", "arr",
                               "vict", "held_in", "n_dec", "cW", "cR")}
    IW, IT, IS = np.zeros(K), np.zeros(K), np.zeros(K)
    A, C = np.zeros(K), np.zeros(K)
    t = 0.0
    lam_done = _arrived(0.0, edges, cum)
    rc = float(p.recompute) > 0.5
    for _ in range(MAX_STEPS):
        mass = float(W.sum() + r.sum() + H.sum())
        if horizon_s is not None and t >= horizon_s:
            break
        if mass <= empty_tol:
            if t >= window and horizon_s is None:
                break
            b = int(t // float(p.bin_s))
            rate = p.lam[b].sum() if b < p.lam.shape[0] else 0.0
            if rate <= 0:  # rule 6: jump to the next bin with arrivals
                nxt = np.nonzero(p.lam[b + 1:].sum(1) > 0)[0] if b + 1 < p.lam.shape[0] else []
                if len(nxt) == 0:
                    if horizon_s is None:
                        break
                    t = float(horizon_s)
                    continue
                t = float((b + 1 + nxt[0]) * float(p.bin_s))
                lam_done = _arrived(t, edges, cum)
                continue
        W0, r0, H0 = W, r, H
        s = step(W, r, H, p, empty_tol)
        tau = s["tau"]
        t1 = t + tau
        lam_next = _arrived(t1, edges, cum)
        arr = lam_next - lam_done
        # delay integrals (Little's law): arrivals of the step wait tau/2 on average in it
        IW += (W0 - s["admit"]) * tau + 0.5 * arr * tau
        IT += (W0 + r0[:, 0] + H0[:, 0]) * tau + 0.5 * arr * tau
        IS += (W0 + r0.sum(1) + H0.sum(1)) * tau + 0.5 * arr * tau
        A += s["admit"]
        C += s["done"]
        W, r, H = s["W"], s["r"], s["H"]
        for key, val in (("t0", t), ("t1", t1), ("W", W.sum() + (H.sum() if rc else 0.0)),
                         ("H", 0.0 if rc else H.sum()), ("run", r.sum()), ("kv", (r * p.mem).sum()),
                         ("kvr", s["kv_read"]), ("tau", tau), ("done", s["done"].sum()),
                         ("admit", s["admit"].sum() + (s["held_in"] if rc else 0.0)), ("arr", arr.sum()),
                         ("vict", s["victims"]), ("held_in", s["held_in"]), ("n_dec", s["n_dec"])):
            rec[key].append(val)
        rec["cW"].append(W + (H.sum(1) if rc else 0.0))
        rec["cR"].append(r.sum(1))
        W = W + arr  # eq. sm1: arrivals of this step join waiting at the next step start
        lam_done = lam_next
        t = t1
    else:
        raise RuntimeError(f"step map did not drain within {MAX_STEPS} steps (t = {t:.1f} s)")
    out = {k: np.asarray(v) for k, v in rec.items()}
    out.update(IW=IW, IT=IT, IS=IS, A=A, C=C, arrived=lam_done, window=window)
    return out


def on_grid(steps: dict, p: FluidParams, ts: np.ndarray) -> dict:
    """End-of-step values held until the next step ends, sampled at ``ts`` (as compare.sim_on_grid)."""
    t1, t0, tau = steps["t1"], steps["t0"], steps["tau"]
    idx = np.searchsorted(t1, ts, side="right") - 1
    ok = idx >= 0
    ii = np.clip(idx, 0, max(len(t1) - 1, 0))

    def held(x):
        return np.where(ok, x[ii], 0.0) if len(x) else np.zeros(len(ts))

    cur = np.clip(np.searchsorted(t0, ts, side="right") - 1, 0, max(len(t0) - 1, 0))
    inside = (len(t0) > 0) & (ts < (t1[-1] if len(t1) else 0.0))
    tau_now = np.where(inside, tau[cur], float(p.d0_s)) if len(tau) else np.full(len(ts), float(p.d0_s))

    def rate(x):
        return np.where(inside, x[cur] / tau_now, 0.0) if len(x) else np.zeros(len(ts))

    nb = p.lam.shape[0]
    b = np.floor(ts / float(p.bin_s)).astype(int)
    lam_t = np.where((b >= 0) & (b < nb), p.lam.sum(1)[np.clip(b, 0, nb - 1)], 0.0)
    return {
        "time": ts, "waiting": held(steps["W"]), "running": held(steps["run"]), "swapped": held(steps["H"]),
        "kv_memory_tokens": held(steps["kv"]), "kv_context_tokens": rate(steps["kvr"]) * tau_now,
        "step_time_s": tau_now, "throughput_rps": rate(steps["done"]),
        "decode_tokens_per_s": rate(steps["n_dec"]), "arrival_rate": lam_t,
        "admission_rate": rate(steps["admit"]), "preemption_rate": rate(steps["vict"]),
        "swap_in_rate": rate(steps["held_in"]), "completed": held(np.cumsum(steps["done"])),
        "_cW": np.stack([held(c) for c in steps["cW"].T]) if len(steps["cW"]) else np.zeros((p.lam.shape[1], len(ts))),
        "_cR": np.stack([held(c) for c in steps["cR"].T]) if len(steps["cR"]) else np.zeros((p.lam.shape[1], len(ts))),
    }


def _virtual_wait(steps: dict, ts: np.ndarray) -> np.ndarray:
    """FCFS virtual waiting time [s]: time until the mass arrived by t has been admitted."""
    if len(steps["t0"]) == 0:
        return np.zeros(len(ts))
    arrived = np.concatenate([[0.0], np.cumsum(steps["arr"])])
    t_ends = np.concatenate([[0.0], steps["t1"]])
    admitted = np.maximum.accumulate(np.concatenate([[0.0], np.cumsum(steps["admit"])])
                                     + 1e-12 * np.arange(len(t_ends)))
    lam_at = np.interp(ts, t_ends, arrived)
    return np.maximum(0.0, np.interp(lam_at, admitted, np.concatenate([[0.0], steps["t0"]])) - ts)


def solve_stepmap_params(params_list: list[FluidParams], tables: ClassTables, fluid_cfg,
                         dt_out_s: float | None = None) -> FluidResult:
    """Run the step map once per replica (rate split) and sum the series on one output grid."""
    t0 = time.perf_counter()
    for p in params_list:
        if np.any(np.asarray(p.adv)[np.asarray(tables.valid)] != 1.0):
            raise ValueError("step map needs exact stages (fluid.stages=None): use exact_stage_config(cfg)")
    cache: dict[bytes, dict] = {}
    runs = []
    for p in params_list:
        key = np.asarray(p.lam).tobytes()
        if key not in cache:
            cache[key] = run_steps(p, fluid_cfg.horizon_s)
        runs.append(cache[key])
    end = max(float(r["t1"][-1]) if len(r["t1"]) else 0.0 for r in runs)
    window = float(params_list[0].lam.shape[0] * float(params_list[0].bin_s))
    end = fluid_cfg.horizon_s if fluid_cfg.horizon_s is not None else max(end, window)
    dt = dt_out_s or output_spacing(window, fluid_cfg)
    ts = np.arange(0.0, end + dt, dt)
    grids = [on_grid(r, p, ts) for r, p in zip(runs, params_list)]
    cols = {c: np.sum([g[c] for g in grids], axis=0) for c in grids[0] if c != "time"}
    cols["time"] = ts
    cols["step_time_s"] = np.mean([g["step_time_s"] for g in grids], axis=0)
    cols["virtual_waiting_s"] = np.mean([_virtual_wait(r, ts) for r in runs], axis=0)
    series = pd.DataFrame({c: cols[c] for c in SERIES_COLUMNS})
    IW, IT, IS = (np.sum([r[k] for r in runs], axis=0) for k in ("IW", "IT", "IS"))
    A, C, arrived = (np.sum([r[k] for r in runs], axis=0) for k in ("A", "C", "arrived"))
    safe = np.where(arrived > 0, arrived, 1.0)
    mean_wait, mean_ttft, mean_e2e = IW / safe, IT / safe, IS / safe
    tot = float(arrived.sum()) or 1.0
    taus = np.concatenate([r["tau"] for r in runs])
    edges = tables.d_edges
    classes = pd.DataFrame({
        "class": np.arange(tables.num_classes), "decode_lo": edges[:-1] + 1, "decode_hi": edges[1:],
        "share": tables.share, "mean_prefill_tokens": tables.mean_prefill_tokens,
        "mean_decode_tokens": tables.mean_decode_tokens, "admitted": A, "completed": C,
        "mean_waiting_s": mean_wait, "mean_ttft_s": mean_ttft, "mean_e2e_s": mean_e2e,
    })
    summary = {
        "backend": "stepmap", "replicas": len(params_list), "arrival_window_s": window,
        "steps": int(sum(len(r["tau"]) for r in runs)), "horizon_s": float(ts[-1]),
        "admitted": float(A.sum()), "completed": float(C.sum()),
        "mean_step_time_s": float(taus.mean()) if len(taus) else float(params_list[0].d0_s),
        "mean_waiting_s": float(IW.sum() / tot), "mean_ttft_s": float(IT.sum() / tot),
        "mean_e2e_s": float(IS.sum() / tot),
        "peak_waiting": float(series["waiting"].max()), "peak_running": float(series["running"].max()),
        "peak_swapped": float(series["swapped"].max()),
        "peak_kv_memory_tokens": float(series["kv_memory_tokens"].max()),
        "rejected": tables.rejected, "num_classes": tables.num_classes, "stage_width": tables.stage_width,
        "num_stages": tables.num_stages,
    }
    result = FluidResult(series, cols["_cW"], cols["_cR"], classes, summary)
    result.summary["solve_time_s"] = time.perf_counter() - t0
    return result


def solve_stepmap(cfg, workload, batch_time=None) -> FluidResult:
    """Solve the step map (the exact discrete-time fluid limit) of ``workload`` under ``cfg``.

    Args:
        cfg: validated Config (``fluid.stages`` is ignored: the step map uses exact decode ages).
        workload: arrival rates are binned at ``fluid.bin_s``; lengths build the classes.
        batch_time: override of ``cfg.batch_time_model()`` (used by the fluid-limit scaling).

    Raises UnsupportedError for configs the fluid model does not represent (as the ODE).
    """
    check_supported_ode(cfg)
    cfg = exact_stage_config(cfg)
    params_list, tables = [], None
    for share in replica_shares(cfg):
        p, tables = build_params(cfg, workload, tables, share, batch_time)
        params_list.append(p)
    return solve_stepmap_params(params_list, tables, cfg.fluid)
