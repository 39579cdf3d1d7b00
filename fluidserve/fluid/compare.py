"""Distance between a FluidResult and a simulator SimResult, and the comparison figures.

The simulator's snapshots are counts at the *end* of each step (time + batch_duration); they
are held constant until the next step ends and sampled on the fluid's output grid (summed over
replicas), divided by the scale ``n``. After the simulator's last step the system is empty.
Sup-norm errors are normalized by the fluid trajectory's peak; a series whose fluid peak is
below 1% of the running peak (e.g. swapped mass when nothing swaps) is normalized by 1% of the
running peak instead, and the normalizer is reported.

Beside the strict sup norm, ``tol_err_<series>`` is the sup norm *up to one engine step in
time*: at each grid time t the distance from one curve's value to the range of the other over
[t - tau(t), t + tau(t)] (tau: the fluid's step time), taken both ways. The fluid limit of the
engine under the crosscheck scaling is a step map (a piecewise-constant function of time), and
step boundaries of the simulation and of the limit drift apart by a fraction of a step, so at a
steep edge the strict sup norm measures |slope| x phase rather than the model's error; the
tolerant norm is a computable bound in the spirit of Skorokhod's J1 distance, the topology in
which fluid limits with jumps converge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fluidserve.fluid.result import FluidResult
from fluidserve.sim.result import SimResult

PAIRS = {  # fluid column -> simulator snapshot column
    "waiting": "waiting",
    "running": "running",
    "swapped": "swapped",
    "kv_memory_tokens": "gpu_memory_used",
}


def sim_on_grid(sim: SimResult, t: np.ndarray, column: str) -> np.ndarray:
    """Sample-and-hold of a snapshot column at times ``t`` (end-of-step values), summed over replicas."""
    snaps = sim.snapshots
    out = np.zeros(len(t))
    if len(snaps) == 0:
        return out
    for _, s in snaps.groupby("replica", sort=True):
        t_end = (s["time"] + s["batch_duration"]).to_numpy()
        vals = s[column].to_numpy(dtype=float)
        idx = np.searchsorted(t_end, t, side="right") - 1
        held = np.where(idx >= 0, vals[np.clip(idx, 0, len(vals) - 1)], 0.0)
        out += np.where(t <= t_end[-1], held, 0.0 if column != "completed" else vals[-1])
    return out


def _window_range(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of ``x`` over index windows [i - w_i, i + w_i] (w_i >= 0 integers)."""
    lo, hi = x.copy(), x.copy()
    n = len(x)
    idx = np.arange(n)
    for k in range(1, int(w.max(initial=0)) + 1):
        use = w >= k
        for j in (np.clip(idx - k, 0, n - 1), np.clip(idx + k, 0, n - 1)):
            lo = np.where(use, np.minimum(lo, x[j]), lo)
            hi = np.where(use, np.maximum(hi, x[j]), hi)
    return lo, hi


def tolerant_sup(f: np.ndarray, s: np.ndarray, t: np.ndarray, tau: np.ndarray) -> float:
    """Sup norm of f - s up to a time shift of one step tau(t) (both ways; see the module doc)."""
    if len(t) < 2:
        return float(np.max(np.abs(f - s), initial=0.0))
    dt = float(np.median(np.diff(t)))
    w = np.ceil(np.asarray(tau, dtype=float) / dt - 1e-9).astype(int).clip(0, 10_000)
    out = 0.0
    for a, b in ((f, s), (s, f)):
        lo, hi = _window_range(b, w)
        out = max(out, float(np.max(np.maximum(lo - a, 0.0) + np.maximum(a - hi, 0.0))))
    return out


def distance(fluid: FluidResult, sim: SimResult, scale: float = 1.0) -> dict:
    """Flat, JSON-serializable distance between the fluid solution and the simulation / scale.

    Keys: ``sup_err_<series>`` (normalized sup-norm error), ``tol_err_<series>`` (the same up to
    one step in time), ``norm_<series>`` (normalizer),
    ``throughput_rel_err`` (completions by the end of the arrival window), ``step_time_rel_err``
    (mean over steps of |tau_sim - tau_fluid| / tau_fluid), ``<delay>_rel_err`` for mean waiting,
    TTFT and end-to-end delay, and the compared values themselves.
    """
    t = fluid.t_s
    n = float(scale)
    out: dict = {"scale": n}
    peak_running = float(np.max(fluid["running"])) or 1.0
    for fcol, scol in PAIRS.items():
        f = fluid[fcol]
        s = sim_on_grid(sim, t, scol) / n
        peak = float(np.max(np.abs(f)))
        floor = 0.01 * (peak_running if fcol != "kv_memory_tokens" else float(np.max(fluid["kv_memory_tokens"])) or 1.0)
        norm = max(peak, floor)
        out[f"sup_err_{fcol}"] = float(np.max(np.abs(s - f)) / norm)
        out[f"tol_err_{fcol}"] = tolerant_sup(f, s, t, fluid["step_time_s"]) / norm
        out[f"norm_{fcol}"] = norm
        out[f"peak_fluid_{fcol}"] = peak
        out[f"peak_sim_{fcol}"] = float(np.max(s))
    # step time over the simulator's steps
    snaps = sim.snapshots
    if len(snaps):
        t_mid = (snaps["time"] + 0.5 * snaps["batch_duration"]).to_numpy()
        tau_f = np.interp(t_mid, t, fluid["step_time_s"])
        out["step_time_rel_err"] = float(np.mean(np.abs(snaps["batch_duration"].to_numpy() - tau_f) / tau_f))
    # throughput: completions by the end of the arrivals
    t_arr = float(fluid.summary.get("arrival_window_s", t[-1]))
    done_sim = float((sim.requests["completion_time"] <= t_arr).sum()) / n
    done_fluid = float(np.interp(t_arr, t, fluid["completed"]))
    out["completed_by_window_sim"] = done_sim
    out["completed_by_window_fluid"] = done_fluid
    out["throughput_rel_err"] = float(abs(done_sim - done_fluid) / max(done_fluid, 1e-12))
    req = sim.completed
    for key, col in (("waiting", "waiting_time"), ("ttft", "ttft"), ("e2e", "total_delay")):
        s_mean = float(req[col].mean()) if len(req) else float("nan")
        f_mean = float(fluid.summary[f"mean_{key if key != 'e2e' else 'e2e'}_s"])
        out[f"mean_{key}_s_sim"] = s_mean
        out[f"mean_{key}_s_fluid"] = f_mean
        out[f"{key}_rel_err"] = float(abs(f_mean - s_mean) / s_mean) if s_mean > 0 else float("nan")
    return out


def fit_rate(ns, errs) -> float:
    """Least-squares slope b of log(err) = a + b log(n); the convergence rate is -b."""
    ns = np.asarray(ns, dtype=float)
    errs = np.asarray(errs, dtype=float)
    ok = (errs > 0) & np.isfinite(errs)
    if ok.sum() < 2:
        return float("nan")
    b, _ = np.polyfit(np.log(ns[ok]), np.log(errs[ok]), 1)
    return float(-b)


def fluid_vs_sim_figure(fluid: FluidResult, sim: SimResult, scale: float = 1.0, title: str | None = None):
    """Overlay of the fluid trajectory and simulation / scale: waiting, running, swapped, KV, step time."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(3, 2).ravel()
    t = fluid.t_s
    labels = {"waiting": "waiting", "running": "running", "swapped": "swapped", "kv_memory_tokens": "KV memory (tokens)"}
    for ax, (fcol, scol) in zip(axes, PAIRS.items()):
        ax.step(t, sim_on_grid(sim, t, scol) / scale, where="post", lw=0.8, color="0.5", label=f"simulator / {scale:g}")
        ax.plot(t, fluid[fcol], lw=1.4, color="C0", label="fluid")
        ax.set_ylabel(labels[fcol])
    ax = axes[4]
    snaps = sim.snapshots
    if len(snaps):
        ax.plot(snaps["time"], snaps["batch_duration"] * 1e3, lw=0.5, color="0.5", label="simulator")
    ax.plot(t, fluid["step_time_s"] * 1e3, lw=1.4, color="C0", label="fluid")
    ax.set_ylabel("step time (ms)")
    ax = axes[5]
    ax.plot(t, fluid["throughput_rps"], lw=1.4, color="C0", label="fluid completions/s")
    ax.plot(t, fluid["arrival_rate"], lw=0.8, color="C1", label="fluid arrivals/s")
    ax.set_ylabel("rate (req/s)")
    for ax in axes:
        ax.set_xlabel("time (s)")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title or f"fluid vs simulator (scale n = {scale:g})")
    return fig


#: readable panel titles of the crosscheck series.
SERIES_TITLES = {"waiting": "waiting requests", "running": "running requests", "swapped": "swapped requests",
                 "kv_memory_tokens": "KV memory (tokens)"}


def convergence_figure(table: pd.DataFrame):
    """Log-log sup-norm error vs n per scenario and series (table from the crosscheck).

    Solid: strict sup norm; dashed, open markers: the one-step tolerant norm (``tol_err_*``).
    A series that is zero in every scenario (swapped mass without swapping) gets no panel, and
    zero errors (nothing to compare: neither curve has that mass) are not drawn; the y axis shows
    1e-4 to 3 (larger values, at n = 1 where a series' normalizer is tiny, run off the top)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    tiny = 1e-9
    series = [c for c in ("waiting", "running", "swapped", "kv_memory_tokens")
              if f"sup_err_{c}" in table and float(table[f"sup_err_{c}"].abs().max()) > tiny]
    fig = Figure(figsize=(3.5 * len(series) + 2.5, 3.4), layout="constrained")
    axes = fig.subplots(1, len(series), sharey=True)
    for ax, col in zip(np.atleast_1d(axes), series):
        for i, (name, g) in enumerate(table.groupby("scenario", sort=False)):
            g = g.sort_values("n")
            sup = g[f"sup_err_{col}"].where(g[f"sup_err_{col}"] > tiny)
            ax.loglog(g["n"], sup, "o-", color=f"C{i}", label=name)
            if f"tol_err_{col}" in g:
                ax.loglog(g["n"], g[f"tol_err_{col}"].where(g[f"tol_err_{col}"] > tiny), "o--", color=f"C{i}",
                          mfc="none", lw=0.9, label=f"{name}, one-step tolerant")
        ax.set_ylim(1e-4, 3.0)
        ns = np.array(sorted(table["n"].unique()), dtype=float)
        ax.loglog(ns, 0.5 * ns ** -0.5, "k--", lw=0.8, label=r"$\propto n^{-1/2}$")
        ax.axhline(0.02, color="r", lw=0.8, ls=":", label="2% error")
        ax.set_title(SERIES_TITLES.get(col, col.replace("_", " ")))
        ax.set_xlabel("scale n")
    np.atleast_1d(axes)[0].set_ylabel("normalized sup-norm error")
    handles, labels = np.atleast_1d(axes)[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7)
    return fig
