"""``python -m fluidserve lp``: solve the LP policy, replay it in the simulator, report.

    python -m fluidserve lp --config config/lp_example.yaml [--output-dir DIR] [--json]

Writes ``report.json``, ``report.txt``, ``routing.csv`` and figures (``routing.png/pdf``,
``energy_vs_load.png/pdf``) under ``--output-dir``. With ``--json`` prints one JSON object on
stdout with at least ``energy_per_token_j``, ``baseline_energy_per_token_j``, ``energy_saving``,
``slo_attainment`` and ``lp_vs_sim_energy_error``. An infeasible input prints the report (naming
the constraint that cannot be met) and exits 2 with a one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np

from fluidserve.errors import cli_errors
from fluidserve.jsonout import to_json
from fluidserve.policy.lp import solve
from fluidserve.policy.lp_config import LpConfig, load_lp_config
from fluidserve.policy.problem import build_problem
from fluidserve.policy.report import format_report, report_dict, routing_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="LP config YAML (see config/lp_example.yaml)")
    parser.add_argument("--output-dir", default=None, help="write report.json, report.txt, routing.csv, figures here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--objective", choices=["energy", "cost", "throughput"], default=None,
                        help="override the config's objective")
    parser.add_argument("--continuous", action="store_true", help="solve the LP relaxation (fractional GPU counts)")
    parser.add_argument("--no-validate", action="store_true", help="skip the simulator replay")
    parser.add_argument("--num-requests", type=int, default=None, help="requests per simulated policy")
    parser.add_argument("--no-figures", action="store_true")


def _plain(v):
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return [_plain(x) for x in v.tolist()]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def energy_curves(cfg: LpConfig, integer: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """LP-predicted energy per token vs load factor, with DVFS and at max clock only (NaN: infeasible)."""
    x = np.array(cfg.validation.load_factors, dtype=float)
    out = {}
    for label, max_only in (("LP with DVFS", False), ("LP at max clock", True)):
        pb = build_problem(cfg, max_clock_only=max_only)
        ys = []
        for f in x:
            sol = solve(dataclasses.replace(pb, rate=pb.rate * f), "energy", integer)
            ys.append(sol.energy_per_token_j if sol.feasible else np.nan)
        out[label] = (x, np.array(ys))
    return out


def disagg_section(cfg: LpConfig, simulate: bool, num_requests: int) -> dict:
    from fluidserve.policy.disagg import choose_split
    from fluidserve.policy.validate import _pool_config, class_workload
    from fluidserve.sim.disagg import simulate_disagg

    names = [c.name for c in cfg.classes]
    split = choose_split(cfg)
    out = split.to_dict(names)
    dg = cfg.disagg
    j = [p.name for p in cfg.pools].index(dg.pool)
    pool = cfg.pools[j].model_copy(update={"count": dg.gpus, "clocks_mhz": [cfg.pools[j].clocks_mhz[-1]],
                                           "cost_per_hour": 1.0})
    colo_cfg = cfg.model_copy(update={"pools": [pool], "objective": "cost", "disagg": None})
    colo = solve(build_problem(colo_cfg), "cost", True)
    out["colocated_gpus"] = int(round(colo.cost_per_hour)) if colo.feasible else None
    if simulate and split.status == "optimal":
        wl = class_workload(cfg, num_requests, cfg.seed + 1)
        res = simulate_disagg(_pool_config(cfg, j), wl, split.n_prefill, split.n_decode, dg.link_GBps)
        r = res.requests
        r = r[r["arrival_time"] >= cfg.validation.warmup_fraction * r["arrival_time"].max()]
        out["simulated"] = {
            "mean_ttft_s": float(r["ttft"].mean()), "mean_tbt_s": float(r["tbt"].mean()),
            "mean_e2e_s": float(r["e2e"].mean()), "mean_kv_transfer_s": float(r["kv_transfer_s"].mean()),
            "ttft_s": {n: float(r["ttft"][wl.priority[r["req_id"]] == k].mean()) for k, n in enumerate(names)},
        }
    return out


@cli_errors
def main(args: argparse.Namespace) -> int:
    cfg = load_lp_config(args.config)
    objective = args.objective or cfg.objective
    integer = cfg.integer and not args.continuous
    log = (lambda msg: print(msg, file=sys.stderr))
    pb = build_problem(cfg)
    sol = solve(pb, objective, integer)
    outdir = Path(args.output_dir) if args.output_dir else None
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)

    if not sol.feasible:
        rep = report_dict(sol)
        payload = _plain({"status": "infeasible", "reason": rep["reason"], "report": rep})
        if outdir:
            (outdir / "report.json").write_text(json.dumps(payload, indent=2))
            (outdir / "report.txt").write_text(format_report(rep) + "\n")
        if args.json:
            print(to_json(payload))
        else:
            print(format_report(rep))
        print(f"error: {rep['reason']}", file=sys.stderr)
        return 2

    from fluidserve.policy.validate import lp_predictions, validate

    pred = lp_predictions(sol, cfg)
    rep = report_dict(sol, pred)
    val = None
    n = args.num_requests or cfg.validation.num_requests
    if not args.no_validate and cfg.validation.enabled:
        val = validate(cfg, sol, num_requests=n, progress=lambda name: log(f"simulating policy '{name}'"))
    dis = disagg_section(cfg, val is not None, n) if cfg.disagg is not None else None
    text = format_report(rep, val, dis)

    payload = {"status": "optimal", "objective": objective}
    if val is not None:
        for key in ("energy_per_token_j", "baseline_energy_per_token_j", "energy_saving", "slo_attainment", "slos_met",
                    "saving_vs_best_single_clock", "lp_predicted_energy_per_token_j", "lp_vs_sim_energy_error",
                    "lp_vs_sim_latency_error", "band"):
            payload[key] = val[key]
    else:
        payload["lp_predicted_energy_per_token_j"] = sol.energy_per_token_j
    # how much of the saving is DVFS: the same program with every pool at its highest clock
    maxclk = solve(build_problem(cfg, max_clock_only=True), objective, integer)
    if maxclk.feasible:
        payload["lp_max_clock_predicted_energy_per_token_j"] = maxclk.energy_per_token_j
        payload["dvfs_share_of_lp_energy_saving_predicted"] = 1.0 - sol.energy_per_token_j / maxclk.energy_per_token_j
    payload["report"] = rep
    payload["validation"] = val
    payload["disagg"] = dis
    payload = _plain(payload)

    if outdir:
        (outdir / "report.json").write_text(json.dumps(payload, indent=2))
        (outdir / "report.txt").write_text(text + "\n")
        routing_table(sol).to_csv(outdir / "routing.csv", index=False)
        if not args.no_figures:
            from fluidserve.policy import figures

            figures.save(figures.routing_bars(rep["routing"], pb.class_names), outdir / "routing")
            curves = energy_curves(cfg, integer)
            pts = None
            if val is not None:
                pts = {"simulated LP policy": (1.0, val["energy_per_token_j"]),
                       "simulated max-clock round robin": (1.0, val["baseline_energy_per_token_j"])}
            figures.save(figures.energy_vs_load(curves, pts), outdir / "energy_vs_load")
    if args.json:
        print(to_json(payload))
    else:
        print(text)
    return 0
