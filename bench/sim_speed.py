"""Simulator speed: simulated requests per wall-clock minute, new engine beside the old one.

In one run, on the same synthetic workload (config/default.yaml's 'normal' traffic at 200 req/s,
events off), it times:

* ``vllm_v0`` (config/seed_swapping.yaml) against the engine before issue 11 (the seed's
  ``fluidserve/sim/engine.py`` at commit ``OLD_COMMIT``, loaded from git history; same semantics),
* ``vllm_v1`` (config/default.yaml) with and without prefix caching against that old engine,

and prints requests/min and the ratio new/old. Goals: >= 10 M req/min (events off, one core) and
``vllm_v1`` >= 0.8x the old engine. ``--json`` prints one JSON object.

    python bench/sim_speed.py [--requests 200000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import types
from pathlib import Path

from fluidserve.config import load_config
from fluidserve.sim.simulator import make_engine
from fluidserve.workload import make_workload

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "499d0bd"  # main before issue 11


def old_engine_class():
    """The pre-issue-11 ``ReplicaEngine`` from git history (None when git or the commit is missing)."""
    try:
        src = subprocess.run(["git", "show", f"{OLD_COMMIT}:fluidserve/sim/engine.py"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    mod = types.ModuleType("fluidserve_seed_engine")
    exec(compile(src, "seed_engine.py", "exec"), mod.__dict__)
    return mod.ReplicaEngine


def run_old(Old, cfg, workload) -> float:
    """Wall seconds of the old engine on ``workload`` (one replica, cfg's vllm_v0 system)."""
    s = cfg.system
    e = Old(cfg.batch_time_model(), M_total=s.M_total, block_size=s.block_size, B=s.B, max_num_seqs=s.max_num_seqs,
            mode=s.mode, chunked_prefill=s.chunked_prefill, record_events=False,
            swap_s_per_token=s.kv_bytes_per_token / (s.swap_bandwidth_GBps * 1e9))
    arr, P, D = workload.arrival_time_s.tolist(), workload.prefill_tokens.tolist(), workload.decode_tokens.tolist()
    t0 = time.perf_counter()
    for i in range(len(arr)):
        e.submit(i, arr[i], P[i], D[i])
    e.run()
    return time.perf_counter() - t0


def run_new(cfg, workload) -> float:
    """Wall seconds of ``make_engine(cfg)``: submit and run, like :func:`run_old` (tables not built)."""
    e = make_engine(cfg)
    arr, P, D = workload.arrival_time_s.tolist(), workload.prefill_tokens.tolist(), workload.decode_tokens.tolist()
    t0 = time.perf_counter()
    for i in range(len(arr)):
        e.submit(i, arr[i], P[i], D[i])
    e.run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings per engine")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    over = {"workload.num_requests": args.requests, "sim.record_events": False}
    v0 = load_config(ROOT / "config" / "seed_swapping.yaml", over)
    v1 = load_config(ROOT / "config" / "default.yaml", over)
    v1_nopc = load_config(ROOT / "config" / "default.yaml", {**over, "system.enable_prefix_caching": False})
    workload = make_workload(v0)
    assert (make_workload(v1).prefill_tokens == workload.prefill_tokens).all()
    Old = old_engine_class()
    cases = [("old engine (seed, swapping)", lambda: run_old(Old, v0, workload)) if Old else None,
             ("vllm_v0 (swapping)", lambda: run_new(v0, workload)),
             ("vllm_v1, prefix caching off", lambda: run_new(v1_nopc, workload)),
             ("vllm_v1, prefix caching on (default)", lambda: run_new(v1, workload))]
    cases = [c for c in cases if c is not None]
    walls: dict[str, list[float]] = {name: [] for name, _ in cases}
    for _ in range(args.repeat):  # interleaved, so that no case always runs after the others' garbage
        for name, fn in cases:
            gc.collect()
            walls[name].append(fn())
    rows = {}
    for name, _ in cases:
        wall = min(walls[name])
        rows[name] = {"wall_s": wall, "req_per_min": 60 * len(workload) / wall}
        print(f"{name:<40} {len(workload):>9,d} req  {wall:7.3f} s  {rows[name]['req_per_min']:>13,.0f} req/min",
              file=sys.stderr)
    old = rows.get("old engine (seed, swapping)")
    if old:
        for name, r in rows.items():
            r["ratio_to_old"] = r["req_per_min"] / old["req_per_min"]
            print(f"{name:<40} {r['ratio_to_old']:.2f}x the old engine", file=sys.stderr)
    if args.json:
        print(json.dumps({"requests": len(workload), "cases": rows}))


if __name__ == "__main__":
    main()
