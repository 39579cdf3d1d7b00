"""Simulator speed: simulated requests per wall-clock second.

Runs (1) the one-hour Azure LLM conversation trace (19,366 requests) on config/azure_conv.yaml,
and (2) a 1,000,000-request synthetic 'normal' run on config/default.yaml's system, with event
logging off and on. Prints requests/s and requests/min for each. Goal: >= 1,000,000 req/min.

    python bench/sim_speed.py [--requests 1000000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fluidserve.config import load_config
from fluidserve.sim import simulate
from fluidserve.workload import make_workload

ROOT = Path(__file__).resolve().parents[1]


def bench(cfg, label: str) -> None:
    workload = make_workload(cfg)
    t0 = time.perf_counter()
    result = simulate(cfg, workload)
    wall = time.perf_counter() - t0
    done = int(result.requests["completion_time"].notna().sum())
    print(
        f"{label:<46} {len(workload):>9,d} req  {result.num_steps:>9,d} steps  {wall:7.2f} s  "
        f"{len(workload) / wall:>10,.0f} req/s  {60 * len(workload) / wall:>12,.0f} req/min  (completed {done:,d})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    args = ap.parse_args()
    azure = load_config(ROOT / "config" / "azure_conv.yaml", {"sim.record_events": False})
    bench(azure, "Azure conv trace, 1 h (events off)")
    azure = load_config(ROOT / "config" / "azure_conv.yaml", {"sim.record_events": True})
    bench(azure, "Azure conv trace, 1 h (events on)")
    for events in (False, True):
        cfg = load_config(
            ROOT / "config" / "default.yaml",
            {"workload.num_requests": args.requests, "sim.record_events": events, "sim.snapshot_every": 1},
        )
        bench(cfg, f"synthetic normal @200 req/s (events {'on' if events else 'off'})")


if __name__ == "__main__":
    main()
