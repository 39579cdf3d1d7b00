"""The main job: ``python -m fluidserve.run --config config/default.yaml``.

config -> workload -> discrete simulator -> results on disk (tables, summary, figures)
-> fluid model (trajectory, fluid-vs-sim figure and distance added to the summary).
Simulator results are written before the fluid model runs, so a failure there loses nothing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from fluidserve.yamlio import safe_load
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config file (see config/default.yaml)")
    parser.add_argument("--output-dir", help="where experiment folders go (overrides the config's output_dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the summary) on stdout")
    parser.add_argument(
        "--set", action="append", default=[], metavar="FIELD=VALUE",
        help="override a config field by dotted path, e.g. --set workload.arrival_rate=150 (repeatable)",
    )
    parser.add_argument("--no-fluid", action="store_true", help="skip the fluid model")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise InputError(f"--set expects FIELD=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = safe_load(value)
        except yaml.YAMLError as exc:
            raise InputError(f"--set {key}: cannot parse value {value!r} ({exc})") from None
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_job(cfg, output_dir: str | None = None, fluid: bool = True, figures: bool = True, progress: bool = True):
    """Run the main job for a loaded config. Returns (experiment_dir, summary_dict)."""
    from fluidserve.outputs import figures as figs
    from fluidserve.outputs.writer import make_experiment_dir, write_result
    from fluidserve.sim import simulate
    from fluidserve.workload import make_workload

    from fluidserve import guards

    t0 = time.perf_counter()
    workload = make_workload(cfg)
    log(f"workload: {len(workload)} requests over {workload.duration_s:.1f} s ({workload.mean_rate:.2f} req/s)")
    guards.check_num_requests(len(workload), "the workload")
    if len(workload):
        guards.check_arrival_window(float(workload.arrival_time_s.max()), "the workload")
    warning = guards.check_capacity(cfg.system, workload.prefill_tokens, workload.decode_tokens)
    if warning:
        log(f"warning: {warning}")
    result = simulate(cfg, workload, progress=progress)
    log(f"simulator: {result.num_steps} steps in {result.wall_time_s:.2f} s")
    exp_dir = make_experiment_dir(output_dir or cfg.output_dir, cfg.name)
    # "incomplete" until the last stage is done: a run stopped in between stays so in "experiments list"
    summary = write_result(result, exp_dir, cfg, status="incomplete")
    log(f"simulator results written to {exp_dir}")
    if figures:
        figs.save_figure(figs.system_dynamics(result), exp_dir / "system_dynamics")
        figs.save_figure(figs.request_timeline(result), exp_dir / "request_timeline")

    if fluid and cfg.fluid.enabled:
        summary["fluid"] = _run_fluid(cfg, workload, result, exp_dir, figures)
    summary["experiment_dir"] = str(exp_dir)
    summary["wall_time_s"] = time.perf_counter() - t0
    summary["status"] = "complete"
    from fluidserve.outputs.writer import write_text_atomic

    write_text_atomic(exp_dir / "summary.json", to_json(summary, indent=2))
    return exp_dir, summary


def _run_fluid(cfg, workload, result, exp_dir: Path, figures: bool) -> dict:
    """Solve the fluid model, write its trajectory and the fluid-vs-sim comparison."""
    from fluidserve.errors import MissingDependencyError, UnsupportedError

    try:
        from fluidserve import fluid
        from fluidserve.fluid import compare
    except ImportError as exc:
        log(f"fluid model unavailable: {exc}")
        return {"status": "unavailable", "reason": str(exc)}
    try:  # fluid.solve refuses windows it cannot model (UnsupportedError: skipped with the reason)
        t0 = time.perf_counter()
        fres = fluid.solve(cfg, workload)
        solve_s = time.perf_counter() - t0
    except (UnsupportedError, MissingDependencyError) as exc:
        log(f"fluid model skipped: {exc}")
        return {"status": "skipped", "reason": str(exc)}
    fres.to_frame().to_csv(exp_dir / "fluid_trajectory.csv", index=False)
    dist = compare.distance(fres, result)
    if figures:
        from fluidserve.outputs.figures import save_figure

        save_figure(compare.fluid_vs_sim_figure(fres, result), exp_dir / "fluid_vs_sim")
    log(f"fluid model: solved in {solve_s:.3f} s")
    backend = fres.summary.get("backend", cfg.fluid.backend)
    lines = ["", f"fluid model ({backend}, solved in {solve_s:.2f} s); trajectories vs the simulator (scale n = 1):",
             f"  {'':<18} {'sup |sim-fluid|':>16} {'sim peak':>12} {'fluid peak':>12}"]
    for key in ("waiting", "running", "swapped", "kv_memory_tokens"):
        err, norm = dist.get(f"sup_err_{key}"), dist.get(f"norm_{key}")
        if err is not None and norm is not None:
            lines.append(
                f"  {key:<18} {err * norm:16,.1f} {dist.get(f'peak_sim_{key}', float('nan')):12,.1f}"
                f" {dist.get(f'peak_fluid_{key}', float('nan')):12,.1f}"
            )
    for key in ("throughput", "ttft", "e2e"):
        if dist.get(f"{key}_rel_err") is not None:
            lines.append(f"  {key + ' rel. error':<18} {dist[f'{key}_rel_err']:8.3f}")
    out = {"status": "ok", "backend": backend, "solve_time_s": solve_s, "distance": dist}
    if fres.request_delays is not None:
        out["percentiles"], table = _fluid_percentiles(fres, result)
        lines += table
    with open(exp_dir / "summary.txt", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return out


def _fluid_percentiles(fres, result) -> tuple[dict, list[str]]:
    """Fluid per-request percentiles beside the simulator's (JSON dict, summary.txt lines) [s]."""
    import numpy as np

    fl = fres.percentiles((50, 90, 99))
    req = result.completed
    cols = {"ttft": "ttft", "tpot": "tpot", "e2e": "total_delay", "waiting": "waiting_time"}
    out, lines = {}, ["", "  latency (ms)        fluid p50   sim p50  fluid p90   sim p90  fluid p99   sim p99"]
    for key, col in cols.items():
        x = req[col].to_numpy(dtype=float) if len(req) else np.zeros(0)
        x = x[np.isfinite(x)]
        sim = {f"p{q}": (float(np.percentile(x, q)) if len(x) else float("nan")) for q in (50, 90, 99)}
        out[key] = {"fluid": fl[key], "sim": sim}
        cells = "".join(f"{fl[key][f'p{q}'] * 1e3:11.1f}{sim[f'p{q}'] * 1e3:10.1f}" for q in (50, 90, 99))
        lines.append(f"  {key:<18}{cells}")
    return out, lines


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.config import load_config

    cfg = load_config(args.config, parse_overrides(args.set))
    exp_dir, summary = run_job(
        cfg, args.output_dir, fluid=not args.no_fluid, figures=not args.no_figures, progress=not args.quiet
    )
    if args.json:
        print(to_json(summary))
    else:
        txt = exp_dir / "summary.txt"
        if txt.exists():
            print(txt.read_text())
        print(f"results written to {exp_dir}")
    log(f"results: {exp_dir}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    from fluidserve.__main__ import OneLineErrorParser

    parser = OneLineErrorParser(prog="python -m fluidserve.run", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
