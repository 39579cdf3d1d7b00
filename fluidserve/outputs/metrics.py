"""Summary metrics of a run: one flat, JSON-serializable dict.

:func:`summarize_requests` works on any request table with the request_traces columns
(``fluidserve/sim/result.py``); only ``arrival_time``, ``decode_length`` and
``completion_time`` are required, the others (``prefill_length``, ``ttft``, ``tpot``,
``total_delay``, ``waiting_time``, ``swap_count``, ``preempt_count``) are summarized when
present. The calibration load client feeds it measured requests, so nothing here depends
on the simulator. :func:`summarize` adds what only a :class:`SimResult` has: rejections,
memory utilization, steps and batch statistics.

Conventions: times in seconds, rates per second, memory in KV tokens. Throughput is taken
over the span first arrival -> last completion (or -> ``horizon_s`` when given). Percentiles
use numpy's default linear interpolation. Values that cannot be computed (no completed
request, empty column) are ``None``, never NaN, so ``json.dumps`` writes valid JSON.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from fluidserve.sim.result import SimResult

#: Delay columns summarized with mean / p50 / p95 / p99 / max, in this order.
DELAY_COLUMNS = ("ttft", "tpot", "total_delay", "waiting_time")
PERCENTILES = (50, 95, 99)

#: Short names of the simulator's rejection reasons (matched on the reason text).
_REASON_KEYS = (("KV blocks", "kv_capacity"), ("token budget", "prompt_over_budget"))


def _num(x: Any) -> float | None:
    """A plain float, or None for NaN/inf/None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def stats(values: pd.Series | np.ndarray, prefix: str) -> dict[str, float | None]:
    """``{prefix}_mean``, ``_p50``, ``_p95``, ``_p99``, ``_max`` over the finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    keys = ["mean"] + [f"p{q}" for q in PERCENTILES] + ["max"]
    if not len(v):
        return {f"{prefix}_{k}": None for k in keys}
    out = {f"{prefix}_mean": float(v.mean())}
    for q, p in zip(PERCENTILES, np.percentile(v, PERCENTILES)):
        out[f"{prefix}_p{q}"] = float(p)
    out[f"{prefix}_max"] = float(v.max())
    return out


def summarize_requests(requests_df: pd.DataFrame, horizon_s: float | None = None) -> dict[str, Any]:
    """Counts, throughput and delay statistics of a request table.

    Args:
        requests_df: one row per request (served or still in the system), request_traces columns.
        horizon_s: end of the throughput span (absolute time, s); default the last completion.

    Returns:
        Flat dict: ``arrived``, ``completed``, ``in_system``, ``span_s``, ``throughput_rps``,
        ``output_tokens_per_s``, ``total_tokens_per_s``, ``output_tokens``, ``prompt_tokens``,
        ``{ttft,tpot,total_delay,waiting_time}_{mean,p50,p95,p99,max}`` (s), and when the
        columns exist ``swap_count``, ``preempt_count`` (totals) and ``requests_swapped``,
        ``requests_preempted`` (requests with at least one).
    """
    for col in ("arrival_time", "decode_length", "completion_time"):
        if col not in requests_df.columns:
            raise KeyError(f"request table has no '{col}' column (has: {', '.join(map(str, requests_df.columns))})")
    n = int(len(requests_df))
    comp_t = requests_df["completion_time"].to_numpy(dtype=float)
    done = np.isfinite(comp_t)
    n_done = int(done.sum())
    out: dict[str, Any] = {"arrived": n, "completed": n_done, "in_system": n - n_done}

    decode = requests_df["decode_length"].to_numpy(dtype=float)
    prompt = (
        requests_df["prefill_length"].to_numpy(dtype=float) if "prefill_length" in requests_df else np.zeros(n)
    )
    out_tokens = float(decode[done].sum())
    prompt_tokens = float(prompt[done].sum())
    arrivals = requests_df["arrival_time"].to_numpy(dtype=float)
    start = float(np.nanmin(arrivals)) if n else math.nan
    end = float(horizon_s) if horizon_s is not None else (float(comp_t[done].max()) if n_done else math.nan)
    span = end - start if n else math.nan
    ok = math.isfinite(span) and span > 0
    out["span_s"] = _num(span)
    out["throughput_rps"] = n_done / span if ok else None
    out["output_tokens_per_s"] = out_tokens / span if ok else None
    out["total_tokens_per_s"] = (out_tokens + prompt_tokens) / span if ok else None
    out["output_tokens"] = int(out_tokens)
    out["prompt_tokens"] = int(prompt_tokens)

    for col in DELAY_COLUMNS:
        if col in requests_df.columns:
            out.update(stats(requests_df[col], col))
        else:
            out.update({k: None for k in stats(np.empty(0), col)})

    for col, who in (("swap_count", "requests_swapped"), ("preempt_count", "requests_preempted")):
        if col in requests_df.columns:
            c = requests_df[col].to_numpy(dtype=float)
            out[col] = int(np.nansum(c))
            out[who] = int((c > 0).sum())
    return out


def reason_key(reason: str) -> str:
    """A short, stable key for a rejection reason (numbers stripped from unknown ones)."""
    for needle, key in _REASON_KEYS:
        if needle in reason:
            return key
    key = re.sub(r"[^a-z]+", "_", re.sub(r"\d+(\.\d+)?", "", reason.lower())).strip("_")
    return key or "other"


def summarize(result: SimResult) -> dict[str, Any]:
    """The run's summary (summary.json): :func:`summarize_requests` plus simulator-only metrics.

    ``arrived`` counts rejected requests too; ``rejected`` is their number and
    ``rejected_<reason>`` the count per reason (see :func:`reason_key`). Memory and batch
    statistics are over the recorded batch snapshots (every ``sim.snapshot_every``-th step),
    pooled over replicas: ``memory_utilization_mean/max`` (fraction of ``M_total``),
    ``memory_used_max_tokens``, ``batch_size_mean``, ``batch_tokens_mean``,
    ``step_time_mean_s``. ``num_steps`` counts all engine steps of all replicas.
    """
    out = summarize_requests(result.requests)
    n_rej = int(len(result.rejected))
    out["arrived"] += n_rej
    out["rejected"] = n_rej
    if n_rej:
        counts = result.rejected["reason"].astype(str).map(reason_key).value_counts()
        for key, count in sorted(counts.items()):
            out[f"rejected_{key}"] = int(count)
    snaps = result.snapshots

    def col_stat(col: str, fn: str) -> float | None:
        if col not in snaps.columns or not len(snaps):
            return None
        return _num(getattr(snaps[col].astype(float), fn)())

    out["memory_utilization_mean"] = col_stat("memory_utilization", "mean")
    out["memory_utilization_max"] = col_stat("memory_utilization", "max")
    out["memory_used_max_tokens"] = col_stat("gpu_memory_used", "max")
    out["M_total_tokens"] = int(result.M_total)
    out["replicas"] = int(result.replicas)
    out["num_steps"] = int(result.num_steps)
    out["num_snapshots"] = int(len(snaps))
    out["batch_size_mean"] = col_stat("batch_size", "mean")
    out["batch_tokens_mean"] = col_stat("batch_tokens", "mean")
    out["step_time_mean_s"] = col_stat("batch_duration", "mean")
    if len(result.events):
        counts = result.events["event"].value_counts()
        for ev in ("admit", "swap_out", "swap_in", "preempt", "complete"):
            out[f"events_{ev}"] = int(counts.get(ev, 0))
    out["scheduler"] = result.meta.get("scheduler")
    out["prefix_cache_hit_rate"] = result.meta.get("prefix_cache_hit_rate")
    out["sim_wall_time_s"] = _num(result.wall_time_s)
    return {k: _plain(v) for k, v in out.items()}


def _plain(v: Any) -> Any:
    """numpy scalars -> Python scalars, NaN -> None."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return _num(v)
    return v


def format_summary(summary: dict[str, Any], title: str = "") -> str:
    """Human-readable summary.txt: grouped lines, times in ms where that reads better."""

    def f(key: str, scale: float = 1.0, unit: str = "", digits: int = 2) -> str:
        v = summary.get(key)
        return "n/a" if v is None else f"{v * scale:,.{digits}f}{unit}"

    lines = [title] if title else []
    lines += [
        f"requests   arrived {summary.get('arrived')}, completed {summary.get('completed')}, "
        f"rejected {summary.get('rejected', 0)}, still in system {summary.get('in_system')}",
    ]
    rej = [f"{k.removeprefix('rejected_')}={v}" for k, v in summary.items() if k.startswith("rejected_")]
    if rej:
        lines.append(f"rejected   by reason: {', '.join(rej)}")
    lines += [
        f"throughput {f('throughput_rps', unit=' req/s')}, {f('output_tokens_per_s', unit=' output tok/s', digits=1)}, "
        f"{f('total_tokens_per_s', unit=' total tok/s', digits=1)} over {f('span_s', unit=' s')}",
        "",
        f"{'latency (ms)':<14}{'mean':>10}{'p50':>10}{'p95':>10}{'p99':>10}{'max':>10}",
    ]
    for col in DELAY_COLUMNS:
        cells = "".join(f"{f(f'{col}_{s}', 1e3):>10}" for s in ("mean", "p50", "p95", "p99", "max"))
        lines.append(f"{col:<14}{cells}")
    lines.append("")
    if "memory_utilization_mean" in summary:
        lines += [
            f"memory     utilization mean {f('memory_utilization_mean', 100, '%', 1)}, "
            f"max {f('memory_utilization_max', 100, '%', 1)} of M_total = {summary.get('M_total_tokens')} tokens",
            f"steps      {summary.get('num_steps')} steps, mean batch size {f('batch_size_mean')}, "
            f"mean step time {f('step_time_mean_s', 1e3, ' ms', 3)}",
        ]
    if "swap_count" in summary:
        lines.append(
            f"preemption {summary.get('swap_count')} swap-outs ({summary.get('requests_swapped')} requests), "
            f"{summary.get('preempt_count')} recompute preemptions ({summary.get('requests_preempted')} requests)"
        )
    if summary.get("scheduler"):
        lines.append(f"scheduler  {summary['scheduler']}, prefix-cache hit rate {f('prefix_cache_hit_rate', 100, '%', 1)}")
    return "\n".join(lines) + "\n"
