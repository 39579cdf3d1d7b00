"""Sweep speed: the JAX vmap fast path vs SciPy point by point; local pool vs a Dask LocalCluster.

1. ``--fluid-points`` (default 10,000) fluid points, a 100 x 100 grid over batch_time.d0_s and
   system.M_total on config/default.yaml (300 requests, the step-clock model), solved in vmapped
   batches (the fluid limit's means; the per-point path adds the n = 1 step fluctuations, so the
   sample's difference measures those too). The same points one by one through SciPy (``fluid.solve``, the ``--no-vmap`` path)
   would take hours, so ``--scipy-sample`` evenly spaced points of the grid are timed and the
   mean time per point is extrapolated to all points (the printout says so). The sample's
   metrics are compared with the vmap rows of the same points.
2. ``--sim-points`` (default 200) simulator points (2,000 requests each, a grid over the
   arrival rate and M_total) on the local process pool and on a Dask LocalCluster, both with 2
   worker processes, each into a fresh dataset.

    python bench/sweep_speed.py [--fluid-points 10000] [--scipy-sample 20] [--sim-points 200]

Run on a quiet machine; the ratios are measured in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLUID_SET = {"workload.num_requests": 300, "fluid.num_classes": 2, "fluid.bin_s": 0.5}  # step-clock model (default)


def fluid_sweep(n_points: int):
    from fluidserve.sweep import sweep_from_dict

    side = int(round(math.sqrt(n_points)))
    return sweep_from_dict(
        {
            "name": "bench_fluid",
            "base": str(ROOT / "config" / "default.yaml"),
            "set": FLUID_SET,
            "engines": "fluid",
            "axes": [
                {"field": "batch_time.d0_s", "grid": {"start": 0.004, "stop": 0.012, "num": side}},
                {"field": "system.M_total", "grid": {"start": 4000, "stop": 40000, "num": side, "scale": "log"}},
            ],
        },
        "bench fluid sweep",
    )


def bench_fluid(n_points: int, sample: int) -> dict:
    from fluidserve.sweep import load_results, run_sweep
    from fluidserve.sweep.runner import compute_task, make_task

    sweep = fluid_sweep(n_points)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = run_sweep(sweep, tmp, progress=False, use_vmap=True, vmap_batch=1024)
        vmap_s = time.perf_counter() - t0
        df = load_results(Path(tmp) / sweep.name).set_index("point_id")
    assert report.vmap_points == len(sweep.points), report
    idx = np.linspace(0, len(sweep.points) - 1, sample).round().astype(int)
    times, rel = [], []
    for i in idx:
        task = make_task(sweep.points[i], "fluid")
        t0 = time.perf_counter()
        res = compute_task(task)
        times.append(time.perf_counter() - t0)
        assert res["ok"], res.get("error")
        row = df.loc[task["point_id"]]
        for m in ("mean_e2e_s", "mean_ttft_s", "throughput_rps", "peak_kv_memory_tokens"):
            rel.append(abs(res["row"][m] - row[m]) / max(abs(res["row"][m]), 1e-12))
    scipy_per_point = float(np.mean(times))
    scipy_total = scipy_per_point * len(sweep.points)
    return {
        "fluid_points": len(sweep.points),
        "vmap_s": vmap_s,
        "vmap_points_per_s": len(sweep.points) / vmap_s,
        "scipy_sample_points": int(sample),
        "scipy_s_per_point": scipy_per_point,
        "scipy_extrapolated_s": scipy_total,
        "speedup_vmap_vs_scipy": scipy_total / vmap_s,
        "max_rel_diff_vmap_vs_scipy": float(max(rel)),
    }


def sim_sweep(n_points: int):
    from fluidserve.sweep import sweep_from_dict

    rates = 20
    mems = max(1, n_points // rates)
    return sweep_from_dict(
        {
            "name": "bench_sim",
            "base": str(ROOT / "config" / "default.yaml"),
            "set": {"workload.num_requests": 2000, "sim.record_events": False},
            "engines": "sim",
            "axes": [
                {"field": "workload.arrival_rate", "grid": {"start": 50, "stop": 300, "num": rates}},
                {"field": "system.M_total", "grid": {"start": 4000, "stop": 40000, "num": mems, "scale": "log"}},
            ],
        },
        "bench sim sweep",
    )


def bench_sim(n_points: int, workers: int) -> dict:
    import distributed

    from fluidserve.sweep import load_results, run_sweep

    sweep = sim_sweep(n_points)
    out = {"sim_points": len(sweep.points), "workers": workers}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        local = run_sweep(sweep, Path(tmp) / "local", executor="local", workers=workers, progress=False)
        out["local_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster:
            out["dask_cluster_start_s"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            dask = run_sweep(sweep, Path(tmp) / "dask", executor="dask", address=cluster.scheduler_address,
                             progress=False)
            out["dask_s"] = time.perf_counter() - t1
        assert local.computed == dask.computed == len(sweep.points)
        a = load_results(Path(tmp) / "local" / sweep.name).set_index("point_id").sort_index()
        b = load_results(Path(tmp) / "dask" / sweep.name).set_index("point_id").sort_index()
        out["identical_results"] = bool(a["mean_e2e_s"].equals(b["mean_e2e_s"]))
    out["dask_over_local"] = out["dask_s"] / out["local_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fluid-points", type=int, default=10_000)
    ap.add_argument("--scipy-sample", type=int, default=20)
    ap.add_argument("--sim-points", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-sim", action="store_true", help="only the fluid part")
    args = ap.parse_args()

    fl = bench_fluid(args.fluid_points, args.scipy_sample)
    print(f"fluid: {fl['fluid_points']:,d} points via vmap in {fl['vmap_s']:.1f} s "
          f"({fl['vmap_points_per_s']:.0f} points/s)")
    print(f"fluid: SciPy one by one {fl['scipy_s_per_point']:.3f} s/point, timed on {fl['scipy_sample_points']} "
          f"points and extrapolated to {fl['fluid_points']:,d}: {fl['scipy_extrapolated_s']:.0f} s")
    print(f"fluid: vmap speed-up {fl['speedup_vmap_vs_scipy']:.0f}x; max relative difference of the sample's "
          f"metrics {fl['max_rel_diff_vmap_vs_scipy']:.1e}")
    if args.skip_sim:
        print(json.dumps({"fluid": fl}))
        return
    sm = bench_sim(args.sim_points, args.workers)
    print(f"sim:   {sm['sim_points']} points, {sm['workers']} workers: local pool {sm['local_s']:.1f} s, "
          f"Dask LocalCluster {sm['dask_s']:.1f} s (+{sm['dask_cluster_start_s']:.1f} s cluster start), "
          f"dask/local {sm['dask_over_local']:.2f}, identical results: {sm['identical_results']}")
    print(json.dumps({"fluid": fl, "sim": sm}))


if __name__ == "__main__":
    main()
