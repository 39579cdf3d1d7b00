"""The per-point metrics of a sweep: one flat row, the same columns for both engines.

Times in seconds, memory in KV tokens, masses in requests. A metric an engine does not give
is NaN (the fluid model has no percentiles). Definitions:

* ``completed``: requests completed (fluid: completed mass).
* ``throughput_rps``: completed / (time of the last completion - first arrival); for the fluid
  model the last completion is when the remaining-to-complete mass falls below half a request.
* ``mean_waiting_s``, ``mean_ttft_s``, ``mean_e2e_s``: means over completed requests of the
  time from arrival to first admission, to the first output token, to completion.
* ``p99_ttft_s``, ``p99_e2e_s``: 99th percentiles (simulator only).
* ``peak_waiting``, ``peak_running``, ``peak_swapped``, ``peak_kv_memory_tokens``: maxima over time.
* ``rejected``: requests the engine can never serve.
"""

from __future__ import annotations

import numpy as np

METRICS = [
    "completed", "throughput_rps", "mean_waiting_s", "mean_ttft_s", "mean_e2e_s", "p99_ttft_s", "p99_e2e_s",
    "peak_waiting", "peak_running", "peak_swapped", "peak_kv_memory_tokens", "rejected",
]

NAN = float("nan")


def sim_metrics(result, first_arrival_s: float) -> dict[str, float]:
    """Metrics of a :class:`~fluidserve.sim.SimResult` (``first_arrival_s`` of its workload)."""
    done = result.completed
    snaps = result.snapshots
    n = len(done)
    if n:
        last = float(done["completion_time"].max())
        span = last - first_arrival_s
        ttft = done["ttft"].to_numpy(float)
        e2e = done["total_delay"].to_numpy(float)
        out = {
            "throughput_rps": n / span if span > 0 else NAN,
            "mean_waiting_s": float(done["waiting_time"].mean()),
            "mean_ttft_s": float(ttft.mean()),
            "mean_e2e_s": float(e2e.mean()),
            "p99_ttft_s": float(np.quantile(ttft, 0.99)),
            "p99_e2e_s": float(np.quantile(e2e, 0.99)),
        }
    else:
        out = dict.fromkeys(("throughput_rps", "mean_waiting_s", "mean_ttft_s", "mean_e2e_s", "p99_ttft_s",
                             "p99_e2e_s"), NAN)
    peaks = {}
    for col, name in (("waiting", "peak_waiting"), ("running", "peak_running"), ("swapped", "peak_swapped"),
                      ("gpu_memory_used", "peak_kv_memory_tokens")):
        if len(snaps) == 0:
            peaks[name] = 0.0
        elif result.replicas > 1:
            # cluster total: each replica's value holds until its next snapshot
            wide = snaps.pivot_table(index="time", columns="replica", values=col, aggfunc="last")
            peaks[name] = float(wide.ffill().fillna(0.0).sum(axis=1).max())
        else:
            peaks[name] = float(snaps[col].max())
    out.update(peaks)
    out["completed"] = float(n)
    out["rejected"] = float(len(result.rejected))
    return {k: out[k] for k in METRICS}


def fluid_metrics(result) -> dict[str, float]:
    """Metrics of a :class:`~fluidserve.fluid.FluidResult` (or anything with its ``summary`` and
    ``series`` time, arrival_rate and throughput_rps columns)."""
    s = result.summary
    series = result.series  # a DataFrame, or any mapping of column -> array
    t = np.asarray(series["time"], dtype=float)
    arrivals = np.asarray(series["arrival_rate"], dtype=float)
    thr = np.asarray(series["throughput_rps"], dtype=float)
    done = np.concatenate([[0.0], np.cumsum(0.5 * (thr[1:] + thr[:-1]) * np.diff(t))])
    total = float(s["completed"])
    first = float(t[np.argmax(arrivals > 0)]) if np.any(arrivals > 0) else 0.0
    reach = np.nonzero(done >= total - 0.5)[0]
    last = float(t[reach[0]]) if len(reach) else float(t[-1])
    out = {
        "completed": total,
        "throughput_rps": total / (last - first) if last > first else NAN,
        "mean_waiting_s": float(s["mean_waiting_s"]),
        "mean_ttft_s": float(s["mean_ttft_s"]),
        "mean_e2e_s": float(s["mean_e2e_s"]),
        "p99_ttft_s": NAN,
        "p99_e2e_s": NAN,
        "peak_waiting": float(s["peak_waiting"]),
        "peak_running": float(s["peak_running"]),
        "peak_swapped": float(s["peak_swapped"]),
        "peak_kv_memory_tokens": float(s["peak_kv_memory_tokens"]),
        "rejected": float(s.get("rejected", 0)),
    }
    return out
