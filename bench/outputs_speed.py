"""Time the output stage on a 10^6-request / 10^6-snapshot result (one run, one core).

    python bench/outputs_speed.py [--rows 1000000]

Prints seconds for summarize, write_result (pyarrow CSV writer and the pandas fallback)
and system_dynamics + PNG, plus the pandas/pyarrow ratio. The tables are random but have
the simulator's columns and realistic magnitudes; figures and CSV writers do not look at
values beyond their dtype, so timings carry over to real runs of the same size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fluidserve.outputs import figures, writer
from fluidserve.outputs.metrics import summarize
from fluidserve.sim.result import (
    EVENT_COLUMNS, MEMORY_EVENT_COLUMNS, REJECTED_COLUMNS, REQUEST_COLUMNS, SNAPSHOT_COLUMNS, SimResult,
)


def synthetic_result(n: int, seed: int = 0) -> SimResult:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(0.005, n))
    P = rng.integers(10, 200, n)
    D = rng.integers(10, 100, n)
    wait = rng.exponential(0.02, n)
    enter = arrival + wait
    first = enter + 0.05
    comp = first + 0.02 * (D - 1)
    req = pd.DataFrame({
        "req_id": np.arange(n), "arrival_time": arrival, "prefill_length": P, "decode_length": D,
        "first_enter_running_time": enter, "first_token_time": first, "completion_time": comp,
        "waiting_time": wait, "execution_time": comp - enter, "swap_count": rng.poisson(0.01, n),
        "preempt_count": 0, "ttft": first - arrival, "tpot": (comp - first) / (D - 1),
        "total_delay": comp - arrival, "replica": 0,
    })[REQUEST_COLUMNS]
    dur = rng.uniform(0.01, 0.03, n)
    t = np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    used = rng.integers(0, 32000, n)
    snaps = pd.DataFrame({
        "time": t, "batch_id": np.arange(n), "batch_size": rng.integers(1, 256, n),
        "batch_tokens": rng.integers(1, 2048, n), "prefill_tokens": rng.integers(0, 2048, n),
        "decode_tokens": rng.integers(0, 256, n), "kv_tokens": rng.integers(0, 32000, n), "batch_duration": dur,
        "waiting": rng.integers(0, 50, n), "running": rng.integers(0, 256, n), "swapped": rng.integers(0, 5, n),
        "completed": np.arange(n), "gpu_memory_used": used, "memory_utilization": used / 32000, "replica": 0,
    })[SNAPSHOT_COLUMNS]
    events = pd.DataFrame({"time": np.repeat(arrival, 2), "event": np.tile(["admit", "complete"], n),
                           "req_id": np.repeat(np.arange(n), 2), "replica": 0})[EVENT_COLUMNS]
    return SimResult(req, snaps, events, pd.DataFrame(columns=MEMORY_EVENT_COLUMNS),
                     pd.DataFrame(columns=REJECTED_COLUMNS), M_total=32000, num_steps=n)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    n = ap.parse_args().rows
    res = synthetic_result(n)
    print(f"{n:,} requests, {n:,} snapshots, {2 * n:,} events")
    print(f"summarize                 {timed(lambda: summarize(res)):7.2f} s")
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "arrow"), Path(tmp, "pandas")
        a.mkdir()
        b.mkdir()
        t_arrow = timed(lambda: writer.write_result(res, a))
        orig = writer._write_csv_arrow
        writer._write_csv_arrow = lambda df, path: False
        try:
            t_pandas = timed(lambda: writer.write_result(res, b))
        finally:
            writer._write_csv_arrow = orig
        print(f"write_result (pyarrow)    {t_arrow:7.2f} s")
        print(f"write_result (pandas)     {t_pandas:7.2f} s   ratio pandas/pyarrow {t_pandas / t_arrow:.1f}x")
        t_fig = timed(lambda: figures.save_figure(figures.system_dynamics(res), Path(tmp, "sd")))
        print(f"system_dynamics + PNG     {t_fig:7.2f} s")
        t_tl = timed(lambda: figures.save_figure(figures.request_timeline(res), Path(tmp, "tl")))
        print(f"request_timeline + PNG    {t_tl:7.2f} s")


if __name__ == "__main__":
    main()
