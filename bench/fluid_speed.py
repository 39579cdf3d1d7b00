"""Fluid model speed, measured in one run (print only; no timed tests).

0. The step-clock model (``stepclock`` numpy and ``stepclock_jax`` compiled) on the Azure hour
   (config/default.yaml with the Azure conv trace, vllm_v1) and on config/azure_conv.yaml, with the
   simulator in the same run: speed-up ratios and the n = 1 errors of throughput, mean and p99
   E2E / TTFT. ``--stepclock-only`` stops there.
1. Azure conv trace replay: fluid solve (SciPy and JAX ODE backends, the quasi-static model and the
   step map) vs the discrete simulator on the
   same window, at scale n = 1 and at a scaled system n (sim cost grows with n, the fluid's does
   not). ``--window-s 3600`` is the full hour; the fluid uses ``--stages`` coarse decode stages.
2. JAX ``vmap`` sweep over 10,000 parameter points (d0 x arrival-rate factor) of a small
   two-class model solved to t = 2 s; compile time reported separately.

    python bench/fluid_speed.py [--window-s 600] [--stages 40] [--scale 16] [--points 10000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def azure(window_s: float, stages: int, scale: int) -> None:
    from fluidserve import fluid
    from fluidserve.config import load_config
    from fluidserve.fluid import compare, scaling
    from fluidserve.sim import simulate
    from fluidserve.workload import AZURE_CONV_SAMPLE, make_workload

    cfg = load_config(ROOT / "config" / "seed_swapping.yaml", {
        "workload.source": "trace",
        "workload.trace": {"path": str(AZURE_CONV_SAMPLE), "format": "azure", "end_s": window_s},
        "fluid.bin_s": 10.0, "fluid.stages": stages, "fluid.dt_out_s": 1.0, "sim.record_events": False,
    })
    wl = make_workload(cfg)
    t0 = time.perf_counter()
    sim = simulate(cfg, wl)
    sim_s = time.perf_counter() - t0
    print(f"azure {window_s:.0f} s window: {len(wl)} requests, simulator n=1: {sim_s:.2f} s ({sim.num_steps} steps)")
    ref = scaling.reference_workload(cfg, wl)
    swl = scaling.scaled_workload(ref, scale, cfg.fluid.bin_s, cfg.seed)
    t0 = time.perf_counter()
    simulate(scaling.scaled_config(cfg, scale), swl, batch_time=cfg.batch_time_model().scaled(scale))
    sim_n_s = time.perf_counter() - t0
    print(f"  simulator n={scale}: {sim_n_s:.2f} s ({len(swl)} requests)")
    for backend in ("scipy", "jax"):
        t0 = time.perf_counter()
        res = fluid.solve(cfg, wl, backend=backend)
        fl_s = time.perf_counter() - t0
        if backend == "jax":  # second solve: compiled
            t0 = time.perf_counter()
            res = fluid.solve(cfg, wl, backend=backend)
            fl2 = time.perf_counter() - t0
            print(f"  fluid jax: {fl_s:.2f} s first (with compile), {fl2:.2f} s compiled")
            fl_s = fl2
        else:
            print(f"  fluid scipy: {fl_s:.2f} s (nfev {res.summary['nfev']})")
        print(f"    speed-up vs simulator: n=1 {sim_s / fl_s:.2f}x, n={scale} {sim_n_s / fl_s:.2f}x "
              f"(fluid {res.summary['num_stages']} stages x {res.summary['num_classes']} classes)")
    d = compare.distance(res, sim, 1.0)
    print("  n=1 distance: " + ", ".join(f"{k}={d[k]:.3f}" for k in d if k.startswith("sup_err")))
    # the quasi-static model: closed forms per rate bin plus a fluid queue (first call compiles sympy)
    fluid.solve(cfg, wl, backend="quasistatic")
    reps = []
    for _ in range(20):
        t0 = time.perf_counter()
        res = fluid.solve(cfg, wl, backend="quasistatic")
        reps.append(time.perf_counter() - t0)
    qs_s = float(np.median(reps))
    print(f"  fluid quasistatic: {qs_s * 1e3:.2f} ms (median of 20; {res.summary['segments']} segments); "
          f"speed-up vs simulator: n=1 {sim_s / qs_s:.0f}x, n={scale} {sim_n_s / qs_s:.0f}x")
    done = sim.completed
    for key, col in (("waiting", "waiting_time"), ("ttft", "ttft"), ("e2e", "total_delay")):
        print(f"    mean {key}: simulator {done[col].mean():.4f} s, quasistatic {res.summary[f'mean_{key}_s']:.4f} s")
    # the step map (exact discrete-time limit): one iteration per engine step, exact decode ages
    smcfg = cfg.model_copy(deep=True)
    smcfg.fluid.stages = None
    smcfg.base_dir = cfg.base_dir
    t0 = time.perf_counter()
    res = fluid.solve(smcfg, wl, backend="stepmap")
    sm_s = time.perf_counter() - t0
    print(f"  fluid stepmap: {sm_s:.2f} s ({res.summary['steps']} steps, {res.summary['num_stages']} stages x "
          f"{res.summary['num_classes']} classes); speed-up vs simulator: n=1 {sim_s / sm_s:.2f}x, "
          f"n={scale} {sim_n_s / sm_s:.2f}x")


def stepclock(window_s: float) -> None:
    from fluidserve import fluid
    from fluidserve.config import load_config
    from fluidserve.sim import simulate
    from fluidserve.workload import AZURE_CONV_SAMPLE, make_workload

    runs = {
        f"Azure hour ({window_s:.0f} s, default.yaml)": load_config(ROOT / "config" / "default.yaml", {
            "workload.source": "trace",
            "workload.trace": {"path": str(AZURE_CONV_SAMPLE), "format": "azure", "end_s": window_s},
            "fluid.bin_s": 10.0, "fluid.dt_out_s": 1.0, "sim.record_events": False}),
        "azure_conv.yaml": load_config(ROOT / "config" / "azure_conv.yaml", {"sim.record_events": False}),
    }
    for name, cfg in runs.items():
        wl = make_workload(cfg)
        t0 = time.perf_counter()
        sim = simulate(cfg, wl)
        sim_s = time.perf_counter() - t0
        done = sim.completed
        print(f"{name}: {len(wl)} requests, {cfg.system.scheduler}, simulator n=1 {sim_s:.2f} s ({sim.num_steps} steps)")
        for backend in ("stepclock", "stepclock_jax"):
            t0 = time.perf_counter()
            res = fluid.solve(cfg, wl, backend=backend)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = fluid.solve(cfg, wl, backend=backend)
            fl_s = time.perf_counter() - t0
            note = f" (first call {first:.2f} s, with compilation)" if backend == "stepclock_jax" else ""
            print(f"  {backend}: {fl_s:.3f} s{note}, {res.summary['macro_steps']} macro steps of "
                  f"{res.summary['step_stride']} engine steps; speed-up vs simulator {sim_s / fl_s:.1f}x")
        pc = res.percentiles()
        t_end = float(res.summary["arrival_window_s"])
        x_sim = float((sim.requests["completion_time"] <= t_end).sum())
        x_fl = float(np.interp(t_end, res.t_s, res["completed"]))
        rows = [("throughput (completed by the window end)", x_fl, x_sim)]
        for key, col in (("e2e", "total_delay"), ("ttft", "ttft")):
            rows += [(f"mean {key}", pc[key]["mean"], float(done[col].mean())),
                     (f"p99 {key}", pc[key]["p99"], float(done[col].quantile(0.99)))]
        for label, f, s_ in rows:
            print(f"    {label:<42} fluid {f:10.4f}  sim {s_:10.4f}  error {f / s_ - 1:+.1%}")


def sweep(points: int) -> None:
    from fluidserve.config import load_config
    from fluidserve.fluid.jax_backend import _jax, solve_fixed, to_jax
    from fluidserve.fluid.params import build_params
    from fluidserve.fluid.vector_field import step_quantities
    from fluidserve.workload.base import Workload

    jax = _jax()
    jnp = jax.numpy
    cfg = load_config(ROOT / "config" / "seed_swapping.yaml", {"fluid.num_classes": 2, "fluid.bin_s": 100.0})
    rng = np.random.default_rng(3)
    wl = Workload(np.sort(rng.random(2000)) * 99.0, rng.integers(20, 200, 2000), rng.integers(2, 13, 2000))
    p, tables = build_params(cfg, wl)
    base = to_jax(p._replace(lam=150.0 * tables.share[None, :]))
    side = int(np.sqrt(points))
    d0 = jnp.repeat(jnp.linspace(0.004, 0.010, side), side)
    fac = jnp.tile(jnp.linspace(0.2, 1.5, side), side)

    def tau_end(d0_s, f):
        q = base._replace(d0_s=d0_s, lam=base.lam * f)
        ys = solve_fixed(q, jnp.array([2.0]), rtol=1e-5, atol=1e-7, max_steps=4096)
        return step_quantities(jnp.float64(2.0), ys[-1], q, jnp)["tau"]

    fn = jax.jit(jax.vmap(tau_end))
    t0 = time.perf_counter()
    fn.lower(d0, fac).compile()
    compile_s = time.perf_counter() - t0
    compiled = fn.lower(d0, fac).compile()
    t0 = time.perf_counter()
    out = np.asarray(compiled(d0, fac))
    run_s = time.perf_counter() - t0
    print(f"jax vmap sweep: {side * side} points, compile {compile_s:.2f} s, run {run_s:.2f} s "
          f"({run_s / (side * side) * 1e3:.3f} ms/point); tau range {out.min() * 1e3:.2f}-{out.max() * 1e3:.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window-s", type=float, default=600.0)
    ap.add_argument("--stages", type=int, default=40)
    ap.add_argument("--scale", type=int, default=16)
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--skip-azure", action="store_true")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--stepclock-only", action="store_true", help="only part 0 (the step-clock model)")
    args = ap.parse_args()
    stepclock(3600.0)
    if args.stepclock_only:
        return
    if not args.skip_sweep:
        sweep(args.points)
    if not args.skip_azure:
        azure(args.window_s, args.stages, args.scale)


if __name__ == "__main__":
    main()
