"""Time the scaling study at BurstGPT scale (1.4M requests, 1-16 GPUs) on this machine.

    python bench/scaling_study.py [--gpus 1,2,4,8,16] [--num-requests 1400000] [--workers 1]

Runs ``python -m fluidserve study scaling`` on config/scaling_burstgpt.yaml and prints the wall
time of the whole study, the simulator's time per configuration, and the study's table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="1,2,4,8,16")
    ap.add_argument("--num-requests", type=int, default=1_400_000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--output-dir", help="keep the study's outputs here (default: a temporary folder)")
    args = ap.parse_args()
    out = args.output_dir or tempfile.mkdtemp(prefix="scaling_bench_")
    cmd = [sys.executable, "-m", "fluidserve", "study", "scaling", "--config", str(ROOT / "config/scaling_burstgpt.yaml"),
           "--gpus", args.gpus, "--num-requests", str(args.num_requests), "--workers", str(args.workers),
           "--output-dir", out, "--json", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        return proc.returncode
    res = json.loads(proc.stdout)
    print(f"scaling study: {res['requests']:,} requests, GPUs {args.gpus}: {wall:.1f} s wall in total "
          f"(goal < 300 s); outputs in {out}")
    for r in res["configurations"]:
        print(f"  {r['gpus']:>3} GPUs TP={r['tensor_parallel']}: simulator {r['sim_wall_s']:.1f} s, "
              f"{r['throughput_rps']:.0f} req/s, efficiency {r['scaling_efficiency']:.2f}, "
              f"p99 E2E {r['e2e_p99_s']:.3g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
