"""Planner speed: ``fluidserve plan`` against an exhaustive simulator sweep of the same candidate space.

Runs, in one process, (1) the planner's search on a plan file (screen + verification; nothing
resumed), then (2) the exhaustive sweep: every replica type of the candidate space simulated at
every replica count from 1 to the GPUs available. Prints both answers (they must agree; with a
heterogeneous plan the mix is not in the sweep, and the per-GPU-type minima are compared), the
screen-vs-verify split, CPU and wall times and the speed-up ratio.

    python bench/plan_speed.py [--config config/plan_azure_h100.yaml] [--no-sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from fluidserve.plan.config import load_plan_config
from fluidserve.plan.search import rank_key, run_search
from fluidserve.plan.space import replica_types
from fluidserve.plan.store import ResultStore
from fluidserve.plan.traffic import build_traffic
from fluidserve.plan.verify import group_record, simulate_group

ROOT = Path(__file__).resolve().parents[1]


def _clock():
    return time.perf_counter(), time.process_time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "plan_azure_h100.yaml"))
    ap.add_argument("--no-sweep", action="store_true", help="time the planner only")
    args = ap.parse_args()
    plan = load_plan_config(args.config)

    w0, c0 = _clock()
    traffic = build_traffic(plan)
    out = run_search(plan, traffic, ResultStore(None, "bench"), progress=False)
    w1, c1 = _clock()
    rec = out.recommended
    t = out.timing
    result = {
        "config": args.config, "cpus": os.cpu_count(),
        "plan": {"answer": None if rec is None else {"key": rec["key"], "replicas": rec["replicas"],
                                                     "cost_per_hour": rec["cost_per_hour"]},
                 "wall_s": w1 - w0, "cpu_s": c1 - c0, "screen_s": t["screen_s"], "verify_s": t["verify_s"],
                 "simulations": t["simulations"], "fleets_screened": t["fleets_screened"],
                 "fleets_pruned": t["fleets_pruned"]},
    }
    print(f"plan:  {result['plan']['answer']}  wall {w1 - w0:.2f} s (cpu {c1 - c0:.2f} s): screen "
          f"{t['screen_s']:.2f} s, verify {t['verify_s']:.2f} s ({t['simulations']} simulations)", flush=True)
    if not args.no_sweep:
        types, _ = replica_types(plan)
        sweep = []
        for rt in types:
            for n in range(1, rt.max_replicas + 1):
                sweep.append(group_record(rt, n, simulate_group(rt, n, traffic, plan), plan))
        w2, c2 = _clock()
        passing = [r for r in sweep if r["meets_slo"]]
        best = min(passing, key=lambda r: rank_key(plan, r)) if passing else None
        result["sweep"] = {
            "answer": None if best is None else {"key": best["key"], "replicas": best["replicas"],
                                                 "cost_per_hour": best["cost_per_hour"]},
            "wall_s": w2 - w1, "cpu_s": c2 - c1, "simulations": len(sweep),
            "smallest_passing_replicas_per_type": {
                rt.key: min((r["replicas"] for r in sweep if r["key"] == rt.key and r["meets_slo"]), default=None)
                for rt in types},
        }
        same = (best is None and rec is None) or (
            best is not None and rec is not None and best["cost_per_hour"] == rec["cost_per_hour"]
            and best["replicas"] == rec["replicas"])
        result["same_answer"] = same
        # per GPU type: the planner's verified single-type minimum vs the sweep's (a mix is not in the sweep)
        sweep_min = {}
        for r in passing:
            g = r["gpu_type"]
            if g not in sweep_min or rank_key(plan, r) < rank_key(plan, sweep_min[g]):
                sweep_min[g] = r
        result["single_type"] = {
            g: {"plan": None if g not in out.single_type_best else
                [out.single_type_best[g]["replicas"], out.single_type_best[g]["cost_per_hour"]],
                "sweep": [r["replicas"], r["cost_per_hour"]]}
            for g, r in sweep_min.items()}
        result["single_type_agree"] = all(v["plan"] == v["sweep"] for v in result["single_type"].values())
        result["speedup_wall"] = (w2 - w1) / (w1 - w0)
        result["speedup_cpu"] = (c2 - c1) / (c1 - c0)
        print(f"sweep: {result['sweep']['answer']}  wall {w2 - w1:.2f} s (cpu {c2 - c1:.2f} s), {len(sweep)} simulations")
        print(f"single-type minima, plan vs sweep: {result['single_type']} (agree: {result['single_type_agree']})")
        print(f"same answer: {same}; plan is {result['speedup_wall']:.1f}x faster (wall), "
              f"{result['speedup_cpu']:.1f}x (cpu)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
