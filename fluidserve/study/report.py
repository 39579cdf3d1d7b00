"""Outputs of the scaling study: CSVs, a Markdown report, figures and the JSON summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SUMMARY_COLUMNS = [
    "gpus", "tensor_parallel", "replicas", "requests", "completed", "rejected", "throughput_rps",
    "output_tokens_per_s", "ideal_throughput_rps", "speedup", "scaling_efficiency", "ttft_mean_s", "ttft_p50_s",
    "ttft_p99_s", "tpot_mean_s", "tpot_p99_s", "e2e_mean_s", "e2e_p50_s", "e2e_p99_s", "makespan_s", "sim_wall_s",
    "sim_steps",
]


def markdown(df: pd.DataFrame, meta: dict[str, Any]) -> str:
    lines = [f"# Scaling study: {meta['name']}", "",
             f"Workload: {meta['requests']:,} requests ({meta['workload']}), offered {meta['offered_rps']:.1f} req/s. "
             f"Step times: {meta['step_times']}. Router: {meta['router']}.", "",
             "| GPUs | TP | replicas | throughput (req/s) | output tok/s | efficiency | TTFT mean (s) | TTFT p99 (s) "
             "| E2E mean (s) | E2E p99 (s) | sim wall (s) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    f = lambda v, d=3: "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{d}g}"  # noqa: E731
    for r in df.to_dict("records"):
        lines.append(f"| {r['gpus']} | {r['tensor_parallel']} | {r['replicas']} | {f(r['throughput_rps'], 4)} | "
                     f"{f(r['output_tokens_per_s'], 4)} | {f(r['scaling_efficiency'])} | {f(r['ttft_mean_s'])} | "
                     f"{f(r['ttft_p99_s'])} | {f(r['e2e_mean_s'])} | {f(r['e2e_p99_s'])} | {f(r['sim_wall_s'])} |")
    lines += ["", "Scaling efficiency = throughput(g) / (g / g0 x throughput(g0)), g0 the smallest GPU count of the "
              "same TP degree. With a fixed offered load it falls below 1 once the fleet serves everything offered "
              "(throughput can then not grow): read it together with the latency columns."]
    return "\n".join(lines) + "\n"


def figure(df: pd.DataFrame, title: str = ""):
    """Latency, throughput (with ideal linear scaling) and efficiency against GPUs, one line per TP degree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    for tp, g in df.groupby("tensor_parallel"):
        g = g.sort_values("gpus")
        axes[0].plot(g["gpus"], g["e2e_p99_s"], "o-", label=f"E2E p99, TP={tp}")
        axes[0].plot(g["gpus"], g["ttft_p99_s"], "s--", label=f"TTFT p99, TP={tp}")
        axes[1].plot(g["gpus"], g["throughput_rps"], "o-", label=f"measured, TP={tp}")
        axes[1].plot(g["gpus"], g["ideal_throughput_rps"], ":", color="gray", label=f"ideal linear, TP={tp}")
        axes[2].plot(g["gpus"], g["scaling_efficiency"], "o-", label=f"TP={tp}")
    axes[0].set(xscale="log", yscale="log", xlabel="GPUs", ylabel="latency (s)", title="p99 latency")
    axes[1].set(xscale="log", yscale="log", xlabel="GPUs", ylabel="throughput (req/s)", title="throughput")
    axes[2].set(xscale="log", xlabel="GPUs", ylabel="efficiency", title="scaling efficiency", ylim=(0, 1.1))
    for ax in axes:
        ax.set_xticks(sorted(df["gpus"].unique()))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return fig


def distribution_csv(requests: pd.DataFrame, path: Path) -> Path:
    """Quantiles 1..99 (and 99.9) of TTFT, TPOT and E2E of one configuration, seconds."""
    qs = list(range(1, 100)) + [99.9]
    out = {"quantile": [q / 100 for q in qs]}
    for col, name in (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("total_delay", "e2e_s")):
        v = requests[col].to_numpy(float) if col in requests else np.array([])
        v = v[np.isfinite(v)]
        out[name] = np.percentile(v, qs) if len(v) else np.full(len(qs), np.nan)
    pd.DataFrame(out).to_csv(path, index=False, float_format="%.6g")
    return path
