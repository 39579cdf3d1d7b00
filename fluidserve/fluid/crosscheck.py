"""``python -m fluidserve crosscheck``: fluid model vs simulator at growing scales n.

For each scenario (overrides applied to the given config) the base workload is generated, its
rejected requests removed, and the fluid model solved once (normalized units). For each scale n
the simulator runs the scaled system (:mod:`fluidserve.fluid.scaling`) on a scaled workload
and its trajectories / n are compared with the fluid solution (:func:`compare.distance`). A
least-squares rate is fitted to log(error) vs log(n) per series.

Writes ``crosscheck.csv`` (one row per scenario and n), ``convergence.png``,
``fluid_vs_sim_<scenario>.png`` (at the largest n) and ``crosscheck.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json

# Scenario overrides (dotted config paths) on top of the user's config. Rates are chosen for the
# default config (H100-like coefficients, M_total 32000 tokens): see README "Fluid model".
SCENARIOS: dict[str, dict] = {
    "underloaded": {  # rho ~ 0.55, memory ~ 60 % of M_total: the steady state of eq. 17
        "workload.source": "synthetic", "workload.scenario": "normal", "workload.arrival_process": "poisson",
        "workload.arrival_rate": 150.0, "workload.num_requests": 1500, "fluid.bin_s": 2.0,
    },
    "overload_swapping": {  # heavy mix at 1.6 x its memory-bound limit X_max ~ 51 req/s
        "workload.source": "synthetic", "workload.scenario": "heavy", "workload.arrival_process": "poisson",
        "workload.arrival_rate": 80.0, "workload.num_requests": 800, "fluid.bin_s": 2.0, "system.mode": "swapping",
    },
    "recompute": {
        "workload.source": "synthetic", "workload.scenario": "heavy", "workload.arrival_process": "poisson",
        "workload.arrival_rate": 80.0, "workload.num_requests": 800, "fluid.bin_s": 2.0, "system.mode": "recompute",
    },
    "bursty": {  # MMPP bursts at 4x the mean rate; the fluid sees the rate binned at 0.1 s
        "workload.source": "synthetic", "workload.scenario": "bursty", "workload.arrival_process": "poisson",
        "workload.arrival_rate": 150.0, "workload.num_requests": 3000, "fluid.bin_s": 0.1,
    },
    "shared_prefix": {  # four 1000-token system prompts, prefix caching on (vllm_v1): hits skip compute
        "workload.source": "synthetic", "workload.scenario": "normal", "workload.arrival_process": "poisson",
        "workload.arrival_rate": 150.0, "workload.num_requests": 1500, "fluid.bin_s": 2.0,
        "system.scheduler": "vllm_v1", "system.chunked_prefill": True, "system.enable_prefix_caching": True,
        "workload.shared_prefix": {"num_groups": 4, "system_prompt_len": 1000, "question_len": [20, 200]},
    },
    "azure": {  # the shipped Azure conv trace, first 300 s, rates binned at 5 s; D reaches 1000, so
        # decode ages are grouped in 100 stages of 10 tokens (exact stages: 4000 per class, too slow)
        "workload.source": "trace", "workload.trace": {"path": "__AZURE__", "format": "azure", "end_s": 300.0},
        "fluid.bin_s": 5.0, "fluid.stages": 100,
    },
}
DEFAULT_SCALES = (1, 4, 16, 64, 256)
SERIES = ("waiting", "running", "swapped", "kv_memory_tokens")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config (scenarios override parts of it)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument("--scales", default=",".join(map(str, DEFAULT_SCALES)), help="comma-separated n values")
    parser.add_argument("--backend", choices=["stepclock", "stepclock_jax", "scipy", "jax", "stepmap", "quasistatic"],
                        help="fluid backend (default: the config's); stepmap = the exact discrete-time limit")
    parser.add_argument("--dt-out", type=float, default=0.01, help="fluid output spacing [s] (default 0.01)")
    parser.add_argument("--output-dir", help="where tables and figures go (default: <config output_dir>/crosscheck)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--no-figures", action="store_true")


def scenario_config(cfg, name: str):
    """``cfg`` with a scenario's overrides applied (validated again)."""
    from fluidserve.config import config_from_dict, set_dotted
    from fluidserve.workload import AZURE_CONV_SAMPLE

    if name not in SCENARIOS:
        raise InputError(f"unknown crosscheck scenario {name!r}; choose from: {', '.join(SCENARIOS)}")
    data = cfg.to_yaml_dict()
    for key, value in SCENARIOS[name].items():
        if isinstance(value, dict):
            value = {k: (str(AZURE_CONV_SAMPLE) if v == "__AZURE__" else v) for k, v in value.items()}
        set_dotted(data, key, value)
    if SCENARIOS[name].get("workload.source") == "trace":
        data["workload"].pop("mmpp", None)
    data["sim"]["record_events"] = False
    return config_from_dict(data, f"crosscheck scenario {name}", cfg.base_dir)


def solve_reference(cfg, reference, backend: str | None = None):
    """The fluid solution that the scaled simulations converge to.

    The scaled workloads draw lengths i.i.d. from ``reference`` at the binned total rate, so the
    class mix is constant in time: class rates are the total rate profile times the class shares
    (not the per-bin class counts of the single base realization).
    """
    from fluidserve.fluid.params import build_params
    from fluidserve.fluid.scaling import rate_profile
    from fluidserve.fluid.solve import solve_params

    backend = backend or cfg.fluid.backend  # the config's backend when --backend is not given
    if backend in ("stepclock", "stepclock_jax"):
        from fluidserve.fluid.stepclock_solve import solve_stepclock

        # one engine step per macro step unless the config sets a stride: the limit's own step map
        # (a stride > 1 spreads a macro step's admissions evenly and cannot follow a burst's ramp)
        stride = cfg.fluid.step_stride if cfg.fluid.step_stride is not None else 1
        return solve_stepclock(cfg, reference, impl="jax" if backend == "stepclock_jax" else "numpy", stride=stride,
                               pooled_mix=True, fluctuations=False)
    if backend == "quasistatic":  # no class tables: bins of the reference, its pooled mean request
        from fluidserve.fluid.quasistatic import solve_quasistatic

        return solve_quasistatic(cfg, reference, pooled_mix=True)
    if backend == "stepmap":
        from fluidserve.fluid.stepmap import exact_stage_config, solve_stepmap_params

        cfg = exact_stage_config(cfg)
    p, tables = build_params(cfg, reference)
    p = p._replace(lam=np.outer(rate_profile(reference, cfg.fluid.bin_s), tables.share))
    if backend == "stepmap":
        return solve_stepmap_params([p], tables, cfg.fluid)
    return solve_params([p], tables, cfg.fluid, backend or cfg.fluid.backend)


def run_scenario(cfg, name: str, scales, backend: str | None, dt_out: float, progress=None, on_row=None):
    """Returns (rows, fluid_result, last_sim, fluid_solve_s); ``on_row(row)`` is called as each n finishes."""
    from fluidserve.fluid import compare, scaling
    from fluidserve.sim import simulate
    from fluidserve.workload import make_workload

    scfg = scenario_config(cfg, name)
    base = scaling.reference_workload(scfg, make_workload(scfg))
    scfg.fluid.dt_out_s = dt_out
    t0 = time.perf_counter()
    fres = solve_reference(scfg, base, backend)
    fluid_s = time.perf_counter() - t0
    rows, sim = [], None
    for n in scales:
        wl = scaling.scaled_workload(base, n, scfg.fluid.bin_s, scfg.seed)
        t0 = time.perf_counter()
        sim = simulate(scaling.scaled_config(scfg, n), wl, batch_time=scfg.batch_time_model().scaled(n))
        sim_s = time.perf_counter() - t0
        d = compare.distance(fres, sim, n)
        d.update(scenario=name, n=n, requests=len(wl), sim_time_s=sim_s, fluid_time_s=fluid_s)
        rows.append(d)
        if progress:
            progress(f"{name} n={n}: sup errors " + ", ".join(f"{s}={d['sup_err_' + s]:.4f}" for s in SERIES)
                     + "; one-step tolerant " + ", ".join(f"{d['tol_err_' + s]:.4f}" for s in SERIES)
                     + f" (sim {sim_s:.1f} s)")
        if on_row:
            on_row(d)
    return rows, fres, sim, fluid_s


def rates(table: pd.DataFrame) -> dict:
    """Fitted convergence rate per scenario and series."""
    from fluidserve.fluid.compare import fit_rate

    out = {}
    for name, g in table.groupby("scenario", sort=False):
        out[name] = {s: fit_rate(g["n"], g[f"sup_err_{s}"]) for s in SERIES}
        out[name] |= {f"{s}_tolerant": fit_rate(g["n"], g[f"tol_err_{s}"]) for s in SERIES}
        out[name]["throughput"] = fit_rate(g["n"], g["throughput_rel_err"])
    return out


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.config import load_config
    from fluidserve.fluid import compare

    cfg = load_config(args.config)
    try:
        scales = [int(x) for x in args.scales.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--scales must be comma-separated integers, got {args.scales!r}") from None
    if not scales or min(scales) < 1:
        raise InputError(f"--scales must be integers >= 1, got {args.scales!r}")
    if not (math.isfinite(args.dt_out) and args.dt_out > 0):
        raise InputError(f"--dt-out must be a number of seconds > 0, got {args.dt_out}")
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in names:
        if name not in SCENARIOS:
            raise InputError(f"--scenarios: unknown scenario {name!r}; choose from: {', '.join(SCENARIOS)}")
    out_dir = Path(args.output_dir) if args.output_dir else Path(cfg.output_dir) / "crosscheck"
    out_dir.mkdir(parents=True, exist_ok=True)
    all_rows = []
    partial = out_dir / "crosscheck.csv"
    partial.unlink(missing_ok=True)

    def append_row(row: dict) -> None:  # each (scenario, n) is on disk as soon as it is computed
        pd.DataFrame([row]).to_csv(partial, mode="a", header=not partial.exists(), index=False)

    for name in names:
        rows, fres, sim, _ = run_scenario(cfg, name, scales, args.backend, args.dt_out,
                                          progress=lambda m: print(m, file=sys.stderr, flush=True),
                                          on_row=append_row)
        all_rows += rows
        if not args.no_figures:
            fig = compare.fluid_vs_sim_figure(fres, sim, scales[-1], title=f"{name}: fluid vs simulator / {scales[-1]}")
            fig.savefig(out_dir / f"fluid_vs_sim_{name}.png", dpi=110)
    table = pd.DataFrame(all_rows)
    table.to_csv(out_dir / "crosscheck.csv", index=False)
    if not args.no_figures:
        compare.convergence_figure(table).savefig(out_dir / "convergence.png", dpi=110)
    largest = table[table["n"] == max(scales)]
    summary = {
        "scales": scales,
        "rates": rates(table) if len(scales) > 1 else {},
        "errors_at_largest_n": {
            r["scenario"]: {s: r[f"sup_err_{s}"] for s in SERIES}
            | {f"{s}_tolerant": r[f"tol_err_{s}"] for s in SERIES} | {"throughput": r["throughput_rel_err"]}
            for _, r in largest.iterrows()
        },
        "backend": args.backend or cfg.fluid.backend,
        "output_dir": str(out_dir),
    }
    (out_dir / "crosscheck.json").write_text(to_json(summary, indent=2))
    if args.json:
        print(to_json(summary))
    else:
        cols = (["scenario", "n"] + [f"sup_err_{s}" for s in SERIES] + [f"tol_err_{s}" for s in SERIES]
                + ["throughput_rel_err", "e2e_rel_err"])
        print(table[cols].to_string(index=False))
        print(to_json(summary["rates"], indent=1))
    return 0
