"""Load on the simulated endpoint: achieved request rate, client-side latency overhead over the
simulator's ideal timings, and server CPU use, at 100 and 500 concurrent streams.

    .venv/bin/python bench/serve_load.py [--streams 100,500] [--time-scale 1.0] [--tokens 64]

For each stream count N, N streaming completions (prompts of 128-512 tokens, ``--tokens``
output tokens each) are sent ``--send-gap-ms`` apart to a fresh ``fluidserve serve`` (a
subprocess on 127.0.0.1, batch time of config/default.yaml, room for all N in one batch) by
the lean client of fluidserve/serve/probe.py. Overheads are client-side wall times minus the
simulator's own records converted to wall time (``/sim/requests``, divided by the time
scale): TTFT overhead = client TTFT - simulated TTFT; last-token overhead = client completion
- simulated completion (both ends measured on the host's monotonic clock). Server CPU is the
subprocess's user + system CPU seconds over the run, per wall second (client CPU likewise,
for this process: on a small machine the client is often the bottleneck).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import yaml

from fluidserve.serve.launch import ServerProcess
from fluidserve.serve.probe import peak_concurrency, run_streams

ROOT = Path(__file__).resolve().parents[1]


def config(n: int) -> dict:
    base = yaml.safe_load((ROOT / "config" / "default.yaml").read_text())
    return {
        "name": f"bench-serve-{n}",
        "seed": 0,
        "system": {"M_total": 4_000_000, "block_size": 16, "B": 65536, "max_num_seqs": max(n, 256)},
        "batch_time": base["batch_time"],
    }


def run_one(n: int, time_scale: float, tokens: int, send_gap_s: float, workdir: Path) -> dict:
    path = workdir / f"serve_{n}.yaml"
    path.write_text(yaml.safe_dump(config(n)))
    rng = np.random.default_rng(n)
    shapes = [(int(rng.integers(128, 513)), tokens) for _ in range(n)]
    with ServerProcess(path, time_scale=time_scale, extra_args=["--max-concurrency", str(n + 10)]) as srv:
        proc = psutil.Process(srv.pid())
        cpu0 = sum(proc.cpu_times()[:2])
        me0 = time.process_time()
        t0 = time.monotonic()
        records = asyncio.run(run_streams(srv.url, "fluidserve-sim", shapes, send_gap_s))
        wall = time.monotonic() - t0
        cpu = sum(proc.cpu_times()[:2]) - cpu0
        client_cpu = time.process_time() - me0
        sim = httpx.get(srv.url + "/sim/requests", timeout=60).json()
    t0_sim = sim["t0_monotonic_s"]
    by_id = {r["req_id"]: r for r in sim["requests"]}
    ok = [r for r in records if not r.error and len(r.token_walls) == r.max_tokens]
    ttft_over = np.array([(r.ttft_wall_s - by_id[r.gid]["ttft"] / time_scale) for r in ok]) * 1e3
    last_over = np.array([(r.token_walls[-1] - (t0_sim + by_id[r.gid]["completion_time"] / time_scale)) for r in ok]) * 1e3
    span = max(r.end_wall for r in ok) - min(r.send_wall for r in ok)
    return {
        "streams": n,
        "completed": len(ok),
        "errors": n - len(ok),
        "peak_concurrency": peak_concurrency(records),
        "request_rate_per_s": len(ok) / span,
        "token_rate_per_s": len(ok) * tokens / span,
        "ttft_overhead_ms_p50": float(np.percentile(ttft_over, 50)),
        "ttft_overhead_ms_p99": float(np.percentile(ttft_over, 99)),
        "last_token_overhead_ms_p50": float(np.percentile(last_over, 50)),
        "last_token_overhead_ms_p99": float(np.percentile(last_over, 99)),
        "server_cpu_s": cpu,
        "server_cpu_per_wall_s": cpu / wall,
        "client_cpu_per_wall_s": client_cpu / wall,
        "wall_s": wall,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="100,500", help="comma-separated stream counts")
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--tokens", type=int, default=64, help="output tokens per stream")
    ap.add_argument("--send-gap-ms", type=float, default=2.0)
    args = ap.parse_args()
    print(f"time scale {args.time_scale:g}, {args.tokens} output tokens per stream, sends {args.send_gap_ms:g} ms apart; "
          f"{psutil.cpu_count()} CPUs, load average {psutil.getloadavg()[0]:.2f}", file=sys.stderr)
    header = (f"{'streams':>7} {'done':>5} {'err':>4} {'peak':>5} {'req/s':>7} {'tok/s':>8} "
              f"{'TTFT+ p50':>10} {'TTFT+ p99':>10} {'last+ p50':>10} {'last+ p99':>10} {'srv CPU':>8}")
    print(header)
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(x) for x in args.streams.split(",")]:
            r = run_one(n, args.time_scale, args.tokens, args.send_gap_ms / 1e3, Path(tmp))
            print(f"{r['streams']:>7} {r['completed']:>5} {r['errors']:>4} {r['peak_concurrency']:>5} "
                  f"{r['request_rate_per_s']:>7.1f} {r['token_rate_per_s']:>8.0f} "
                  f"{r['ttft_overhead_ms_p50']:>8.1f}ms {r['ttft_overhead_ms_p99']:>8.1f}ms "
                  f"{r['last_token_overhead_ms_p50']:>8.1f}ms {r['last_token_overhead_ms_p99']:>8.1f}ms "
                  f"{100 * r['server_cpu_per_wall_s']:>7.0f}% {100 * r['client_cpu_per_wall_s']:>7.0f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
