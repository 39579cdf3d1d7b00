"""Figures of a sweep's results table (:func:`fluidserve.sweep.load_results`); each returns a Figure.

* :func:`metric_vs_field`: one panel per metric against a swept field, a line per engine
  (fluid solid, simulator dashed) and per value of an optional ``hue`` field; other swept
  swept fields (``df.attrs["fields"]``) are averaged over (the title says so).
* :func:`heatmap`: a metric over two swept fields (cells at the grid values, any spacing).
* :func:`fluid_vs_sim`: every point's fluid value against its simulator value, with y = x.

Built on :class:`matplotlib.figure.Figure` (no pyplot state); style them for LaTeX with
:func:`fluidserve.export.latex.latex_style` and save with
:func:`fluidserve.export.latex.export_figure`.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from fluidserve.errors import InputError

METRIC_LABELS = {
    "completed": "completed (requests)",
    "throughput_rps": "throughput (req/s)",
    "mean_waiting_s": "mean waiting (s)",
    "mean_ttft_s": "mean TTFT (s)",
    "mean_e2e_s": "mean end-to-end (s)",
    "p99_ttft_s": "p99 TTFT (s)",
    "p99_e2e_s": "p99 end-to-end (s)",
    "peak_waiting": "peak waiting (requests)",
    "peak_running": "peak running (requests)",
    "peak_swapped": "peak swapped (requests)",
    "peak_kv_memory_tokens": "peak KV memory (tokens)",
    "rejected": "rejected (requests)",
    "wall_time_s": "compute time (s)",
}
FIELD_LABELS = {
    "workload.arrival_rate": "arrival rate (req/s)",
    "workload.num_requests": "requests",
    "system.M_total": "KV capacity (tokens)",
    "system.B": "token budget B (tokens/step)",
    "system.max_num_seqs": "max sequences",
    "system.block_size": "block size (tokens)",
    "system.swap_bandwidth_GBps": "swap bandwidth (GB/s)",
    "batch_time.d0_s": "$d_0$ (s)",
    "batch_time.d1_prefill_s": "$d_{1p}$ (s/token)",
    "batch_time.d1_decode_s": "$d_{1d}$ (s/token)",
    "batch_time.d2_kv_s": "$d_2$ (s/token)",
    "cluster.replicas": "replicas",
}
ENGINE_STYLE = {"fluid": {"linestyle": "-", "marker": None}, "sim": {"linestyle": "--", "marker": "o"}}
ENGINE_LABELS = {"fluid": "fluid model", "sim": "simulator"}
DEFAULT_METRICS = ("throughput_rps", "mean_ttft_s", "mean_e2e_s", "peak_kv_memory_tokens")


def metric_label(name: str) -> str:
    return METRIC_LABELS.get(name, name.replace("_", " "))


def field_label(name: str) -> str:
    return FIELD_LABELS.get(name, name.replace("_", " "))


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, numbers.Real) and not isinstance(value, bool) else str(value)


def _need(df: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"sweep results have no column '{missing[0]}' (columns: {', '.join(map(str, df.columns))})")
    if df.empty:
        raise InputError("sweep results are empty: nothing to plot")


def metric_vs_field(df: pd.DataFrame, field: str, metrics: Sequence[str] = DEFAULT_METRICS,
                    hue: str | None = None, max_hue: int = 6) -> Figure:
    """Metrics (one panel each) against ``field``; lines per engine and per ``hue`` value."""
    _need(df, [field, "engine", *metrics] + ([hue] if hue else []))
    hues = sorted(df[hue].unique()) if hue else [None]
    if len(hues) > max_hue:
        raise InputError(f"hue field '{hue}' has {len(hues)} values; at most {max_hue} lines per engine")
    keys = [field, "engine"] + ([hue] if hue else [])
    averaged = [c for c in df.columns if c not in keys and c in df.attrs.get("fields", [])]
    grouped = df.groupby(keys, dropna=False)[list(metrics)].mean().reset_index()
    n = len(metrics)
    cols = min(n, 2)
    rows = int(np.ceil(n / cols))
    legend_rows = int(np.ceil((len(ENGINE_STYLE) + (len(hues) if hue else 0)) / 2))
    # sized for \columnwidth (3.4 in): ~1.5 in per panel row plus the legend below
    fig = Figure(figsize=(3.4, 1.55 * rows + 0.45 + 0.16 * legend_rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    colors = [f"C{i}" for i in range(len(hues))]
    many = df[field].nunique() > 25  # sampled axes: points, not lines
    engines = [e for e in ENGINE_STYLE if e in set(grouped["engine"])]
    for ax, metric in zip(axes, metrics):
        for engine in engines:
            style = ENGINE_STYLE[engine]
            for color, hv in zip(colors, hues):
                sel = grouped[grouped["engine"] == engine]
                if hue:
                    sel = sel[sel[hue] == hv]
                if sel.empty:
                    continue
                sel = sel.sort_values(field)
                if many:
                    ax.scatter(sel[field], sel[metric], s=6, color=color, marker="o" if engine == "sim" else "x")
                else:
                    ax.plot(sel[field], sel[metric], color=color, **style)
        ax.set_xlabel(field_label(field))
        ax.set_ylabel(metric_label(metric))
        ax.grid(True, alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    # legend: line style = engine, colour = hue value
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.2", **ENGINE_STYLE[e]) for e in engines]
    labels = [ENGINE_LABELS[e] for e in engines]
    if hue:
        handles += [Line2D([], [], color=c) for c in colors]
        labels += [f"{field_label(hue)} = {_fmt(hv)}" if i == 0 else _fmt(hv) for i, hv in enumerate(hues)]
    fig.legend(handles, labels, loc="outside lower center", ncol=2, frameon=False)
    if averaged:
        fig.suptitle("mean over " + ", ".join(field_label(a) for a in averaged))
    return fig


def heatmap(df: pd.DataFrame, x: str, y: str, metric: str = "mean_e2e_s", engine: str | None = None) -> Figure:
    """``metric`` over the grid of two swept fields (mean over any other field), one engine."""
    _need(df, [x, y, metric, "engine"])
    engines = sorted(df["engine"].unique())
    engine = engine or engines[0]
    sel = df[df["engine"] == engine]
    if sel.empty:
        raise InputError(f"no rows for engine '{engine}' (engines: {', '.join(engines)})")
    table = sel.groupby([y, x])[metric].mean().unstack(x).sort_index().sort_index(axis=1)
    fig = Figure(figsize=(3.4, 2.7), layout="constrained")
    ax = fig.subplots()
    values = table.to_numpy(float)
    mesh = ax.pcolormesh(np.arange(values.shape[1] + 1), np.arange(values.shape[0] + 1),
                         np.ma.masked_invalid(values), cmap="viridis", shading="flat")
    ax.set_xticks(np.arange(values.shape[1]) + 0.5, [_fmt(v) for v in table.columns])
    ax.set_yticks(np.arange(values.shape[0]) + 0.5, [_fmt(v) for v in table.index])
    ax.set_xlabel(field_label(x))
    ax.set_ylabel(field_label(y))
    ax.set_title(ENGINE_LABELS.get(engine, engine))
    cbar = fig.colorbar(mesh, ax=ax, label=metric_label(metric))
    cbar.solids.set_rasterized(False)  # vector colour bar: PGF needs no side images
    cbar.solids.set_edgecolor("face")
    return fig


def fluid_vs_sim(df: pd.DataFrame, metrics: Sequence[str] = ("mean_e2e_s", "throughput_rps")) -> Figure:
    """Each point's fluid value against its simulator value, per metric, with the line y = x."""
    _need(df, ["point_id", "engine", *metrics])
    wide = df.pivot_table(index="point_id", columns="engine", values=list(metrics), aggfunc="first")
    if "fluid" not in df["engine"].values or "sim" not in df["engine"].values:
        raise InputError("fluid_vs_sim needs rows of both engines (engines: both)")
    fig = Figure(figsize=(3.2 * len(metrics), 2.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(metrics), squeeze=False)).ravel()
    for ax, metric in zip(axes, metrics):
        sim, fl = wide[(metric, "sim")].to_numpy(float), wide[(metric, "fluid")].to_numpy(float)
        ok = np.isfinite(sim) & np.isfinite(fl)
        ax.scatter(sim[ok], fl[ok], s=8, color="C0")
        if ok.any():
            lo, hi = min(sim[ok].min(), fl[ok].min()), max(sim[ok].max(), fl[ok].max())
            ax.plot([lo, hi], [lo, hi], color="0.4", linewidth=0.8, linestyle=":")
        ax.set_xlabel(f"simulator: {metric_label(metric)}")
        ax.set_ylabel(f"fluid: {metric_label(metric)}")
        ax.grid(True, alpha=0.3)
    return fig
