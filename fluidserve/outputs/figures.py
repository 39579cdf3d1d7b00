"""Figures of a simulator run: system dynamics (six panels) and a request timeline (Gantt).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, so no GUI
backend and no global figure registry); PNG/PDF go through Agg, PGF through matplotlib's pgf
backend (needs a LaTeX install). Every function returns the Figure; :func:`save_figure`
writes it in one or more formats.

Large runs: batch snapshots are aggregated onto a grid of at most ``max_points`` time bins
(default 2000), so 10^6 snapshot rows plot in about a second. Per bin and replica, queue
counts and memory are the mean over the steps that ended in the bin (the last value before
the bin when no step ended in it, e.g. while the replica idles); multi-replica results are
then summed over replicas. Batch time is the mean step duration of the steps that started in
the bin, pooled over replicas.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fluidserve.errors import MissingDependencyError
from fluidserve.sim.result import SimResult

COLORS = {"waiting": "tab:orange", "running": "tab:blue", "swapped": "tab:red", "memory": "tab:purple"}


def save_figure(fig: Figure, path_without_ext: str | Path, formats: Sequence[str] = ("png",), dpi: int = 120) -> list[Path]:
    """Save ``fig`` as ``<path>.<fmt>`` for each format (png, pdf, pgf, svg); returns the paths.

    Each file is written under a temporary name and renamed into place.
    """
    from fluidserve.outputs.writer import atomic_path

    base = Path(path_without_ext)
    out = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        rc = {"pgf.texsystem": _tex_system()} if fmt == "pgf" else {}
        with atomic_path(path) as tmp, matplotlib.rc_context(rc):
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(path)
    return out


def _tex_system() -> str:
    """The configured pgf TeX engine if installed, else the first of pdflatex/lualatex/xelatex found."""
    for name in (matplotlib.rcParams["pgf.texsystem"], "pdflatex", "lualatex", "xelatex"):
        if shutil.which(name):
            return name
    raise MissingDependencyError("PGF figures need a LaTeX install (pdflatex, lualatex or xelatex on PATH)")


def _grid(t0: float, t1: float, max_points: int) -> np.ndarray:
    """Bin edges over [t0, t1] (at least one bin)."""
    if not np.isfinite(t1) or t1 <= t0:
        t1 = t0 + 1.0
    return np.linspace(t0, t1, max_points + 1)


def _binned(times: np.ndarray, values: np.ndarray, edges: np.ndarray, hold: bool) -> np.ndarray:
    """Mean of ``values`` per bin of ``times`` (sorted). Empty bins: previous value (``hold``) or NaN."""
    nb = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, nb - 1)
    cnt = np.bincount(idx, minlength=nb)
    sums = np.bincount(idx, weights=values, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / cnt
    if hold:
        # value in force at the start of each bin: last sample at or before the bin's left edge
        j = np.searchsorted(times, edges[:-1], side="right") - 1
        before = np.where(j >= 0, values[np.maximum(j, 0)], 0.0)
        mean = np.where(cnt > 0, mean, before)
    return mean


def aggregate_snapshots(snapshots: pd.DataFrame, max_points: int = 2000) -> pd.DataFrame:
    """Snapshots on a common time grid, summed over replicas.

    Returns one row per bin: ``time`` (bin centre, s), ``waiting``, ``running``, ``swapped``,
    ``gpu_memory_used`` (tokens, summed over replicas) and ``batch_duration`` (s, mean over
    the steps that started in the bin; NaN when none did).
    """
    if snapshots is None or not len(snapshots):
        return pd.DataFrame(columns=["time", "waiting", "running", "swapped", "gpu_memory_used", "batch_duration"])
    start = snapshots["time"].to_numpy(dtype=float)
    dur = snapshots["batch_duration"].to_numpy(dtype=float)
    end = start + dur  # counts are taken at the end of the step
    edges = _grid(float(start.min()), float(end.max()), max_points)
    out = {"time": 0.5 * (edges[:-1] + edges[1:])}
    replica = snapshots["replica"].to_numpy() if "replica" in snapshots else np.zeros(len(snapshots), dtype=int)
    groups = [np.flatnonzero(replica == r) for r in np.unique(replica)]
    for col in ("waiting", "running", "swapped", "gpu_memory_used"):
        vals = snapshots[col].to_numpy(dtype=float)
        total = np.zeros(len(edges) - 1)
        for g in groups:
            order = g[np.argsort(end[g], kind="stable")]
            total += _binned(end[order], vals[order], edges, hold=True)
        out[col] = total
    order = np.argsort(start, kind="stable")
    out["batch_duration"] = _binned(start[order], dur[order], edges, hold=False)
    return pd.DataFrame(out)


def completion_curve(requests: pd.DataFrame, t: np.ndarray, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative completions at times ``t`` and the moving-average throughput (req/s):
    completions in the trailing window ``(t - window_s, t]`` divided by ``window_s``."""
    comp = np.sort(requests["completion_time"].to_numpy(dtype=float))
    comp = comp[np.isfinite(comp)]
    cum = np.searchsorted(comp, t, side="right")
    cum_lo = np.searchsorted(comp, t - window_s, side="right")
    return cum, (cum - cum_lo) / window_s


def system_dynamics(result: SimResult, max_points: int = 2000, window_s: float | None = None) -> Figure:
    """Six panels over simulated time: queue states, memory used (tokens) with ``M_total``,
    memory utilization (%), batch time (ms), cumulative completions and moving-average
    throughput (req/s, trailing window ``window_s``, default 1/50 of the run)."""
    agg = aggregate_snapshots(result.snapshots, max_points)
    R = max(int(result.replicas), 1)
    capacity = float(result.M_total) * R
    fig = Figure(figsize=(13, 10), layout="constrained")
    axes = fig.subplots(3, 2, sharex=True).ravel()
    suffix = f" (sum over {R} replicas)" if R > 1 else ""
    fig.suptitle(f"System dynamics{suffix}")
    t = agg["time"].to_numpy(dtype=float)

    ax = axes[0]
    for col in ("waiting", "running", "swapped"):
        ax.plot(t, agg[col], label=col, color=COLORS[col], lw=1)
    ax.set_ylabel("requests")
    ax.set_title("Queue states")
    ax.legend(loc="upper right", fontsize="small")

    ax = axes[1]
    ax.plot(t, agg["gpu_memory_used"], color=COLORS["memory"], lw=1, label="KV used")
    ax.axhline(capacity, color="k", ls="--", lw=1, label="M_total" + (f" x {R}" if R > 1 else ""))
    ax.set_ylabel("KV memory (tokens)")
    ax.set_title("Memory used")
    ax.legend(loc="lower right", fontsize="small")

    ax = axes[2]
    ax.plot(t, 100.0 * agg["gpu_memory_used"] / capacity, color=COLORS["memory"], lw=1)
    ax.set_ylim(0, 105)
    ax.set_ylabel("memory utilization (%)")
    ax.set_title("Memory utilization")

    ax = axes[3]
    ax.plot(t, 1e3 * agg["batch_duration"], color="tab:green", lw=1)
    ax.set_ylabel("batch time (ms)")
    ax.set_title("Batch time (mean per bin)")

    requests = result.requests
    if len(t):
        span = float(t[-1] - t[0]) if len(t) > 1 else 1.0
        w = window_s if window_s is not None else max(span / 50.0, 1e-9)
        cum, rate = completion_curve(requests, t, w)
    else:
        w, cum, rate = window_s or 0.0, np.empty(0), np.empty(0)
    ax = axes[4]
    ax.plot(t, cum, color="tab:gray", lw=1.2)
    ax.set_ylabel("completed requests")
    ax.set_title("Cumulative completions")

    ax = axes[5]
    ax.plot(t, rate, color="tab:cyan", lw=1)
    ax.set_ylabel("throughput (req/s)")
    ax.set_title(f"Moving-average throughput (window {w:.3g} s)")

    for ax in axes[4:]:
        ax.set_xlabel("time (s)")
    if not len(t):
        for ax in axes:
            ax.text(0.5, 0.5, "no batch snapshots", ha="center", va="center", transform=ax.transAxes)
    return fig


def sample_requests(requests: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` consecutive requests (by arrival), a window the timeline can show legibly.

    The window is centred on a seeded random request that was swapped or preempted at least
    once when there is one (so the markers are visible), else on a seeded random request.
    """
    req = requests.sort_values(["arrival_time", "req_id"], kind="stable").reset_index(drop=True)
    n = min(n, len(req))
    rng = np.random.default_rng(seed)
    hit = np.zeros(len(req), dtype=bool)
    for col in ("swap_count", "preempt_count"):
        if col in req:
            hit |= req[col].fillna(0).to_numpy() > 0
    pool = np.flatnonzero(hit) if hit.any() else np.arange(len(req))
    centre = int(rng.choice(pool))
    start = int(np.clip(centre - n // 2, 0, len(req) - n))
    return req.iloc[start:start + n]


def request_timeline(result: SimResult, n: int = 40, seed: int = 0) -> Figure:
    """Gantt chart of ``n`` consecutive requests (see :func:`sample_requests`): the waiting
    span (arrival -> first entry into running) and the running span (-> completion), plus
    swap-out, swap-in and recompute-preemption markers from the events table. Requests
    unfinished at the end of the run are drawn up to the last simulated time, hatched."""
    req = result.requests
    fig = Figure(figsize=(11, max(3.0, 0.16 * min(n, max(len(req), 1)) + 1.5)), layout="constrained")
    ax = fig.subplots()
    ax.set_xlabel("time (s)")
    ax.set_ylabel("request id")
    if not len(req):
        ax.set_title("Request timeline (no requests)")
        return fig
    sample = sample_requests(req, n, seed)
    horizon = _horizon(result)
    arrival = sample["arrival_time"].to_numpy(dtype=float)
    enter = sample["first_enter_running_time"].to_numpy(dtype=float)
    comp = sample["completion_time"].to_numpy(dtype=float)
    y = np.arange(len(sample))
    wait_end = np.where(np.isfinite(enter), enter, horizon)
    run_end = np.where(np.isfinite(comp), comp, horizon)
    ax.barh(y, wait_end - arrival, left=arrival, height=0.6, color=COLORS["waiting"], label="waiting")
    started = np.isfinite(enter)
    unfinished = started & ~np.isfinite(comp)
    ax.barh(y[started & ~unfinished], (run_end - enter)[started & ~unfinished], left=enter[started & ~unfinished],
            height=0.6, color=COLORS["running"], label="running (incl. swapped/preempted)")
    if unfinished.any():
        ax.barh(y[unfinished], (run_end - enter)[unfinished], left=enter[unfinished], height=0.6,
                color=COLORS["running"], alpha=0.5, hatch="//", label="unfinished at end")
    ev = result.events
    if ev is not None and len(ev):
        row_of = pd.Series(y, index=sample["req_id"].to_numpy())
        ev = ev[ev["req_id"].isin(row_of.index)]
        for kind, marker, color in (("swap_out", "v", COLORS["swapped"]), ("swap_in", "^", "tab:green"),
                                    ("preempt", "x", "k")):
            sel = ev[ev["event"] == kind]
            if len(sel):
                ax.scatter(sel["time"], row_of.loc[sel["req_id"]].to_numpy(), marker=marker, color=color,
                           s=28, zorder=3, label=kind)
    ax.set_yticks(y)
    ax.set_yticklabels([str(i) for i in sample["req_id"]], fontsize="x-small")
    ax.invert_yaxis()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.set_title(f"Request timeline ({len(sample)} consecutive of {len(req)} requests, seed {seed})")
    return fig


def _horizon(result: SimResult) -> float:
    """Last simulated time (s): end of the last recorded step, last completion or last arrival."""
    cand = [float(result.requests["arrival_time"].max())]
    s = result.snapshots
    if s is not None and len(s):
        cand.append(float((s["time"] + s["batch_duration"]).max()))
    comp = result.requests["completion_time"].to_numpy(dtype=float)
    if np.isfinite(comp).any():
        cand.append(float(np.nanmax(comp)))
    return max(cand)
