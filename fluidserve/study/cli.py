"""``python -m fluidserve study scaling``: the multi-GPU scaling study.

    python -m fluidserve study scaling --config config/scaling_burstgpt.yaml --gpus 1,2,4,8,16 \\
        [--tensor-parallel 1,2] [--executor local|dask] [--workers N] [--output-dir DIR] [--json]

Writes into the output directory as each configuration finishes: ``scaling.csv`` (one row per
configuration), ``latency_<G>gpu_tp<T>.csv`` (the latency quantiles of each configuration), then
``report.md``, ``scaling.png`` / ``scaling.pdf`` and ``scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json


def _ints(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag}: expected comma-separated integers, got '{text}'") from None
    if not values or any(v < 1 for v in values):
        raise InputError(f"{flag}: expected positive integers, got '{text}'")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    p = sub.add_parser("scaling", help="latency, throughput and efficiency against the GPU count")
    p.add_argument("--config", required=True, help="run config (system, batch_time, workload, cluster.router)")
    p.add_argument("--gpus", default="1,2,4,8,16", help="GPU counts")
    p.add_argument("--tensor-parallel", default="1", help="TP degrees (a GPU count runs each TP degree dividing it)")
    p.add_argument("--num-requests", type=int, help="override workload.num_requests (synthetic) / trace max_requests")
    p.add_argument("--executor", default="local", choices=["local", "dask"])
    p.add_argument("--workers", type=int, default=1, help="parallel configurations (local pool or Dask workers)")
    p.add_argument("--address", help="Dask scheduler address (executor dask)")
    p.add_argument("--output-dir", help="results folder (default: <config output_dir>/scaling_<name>)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true")
    q = sub.add_parser("length-aware", help="shortest-predicted-first vs FCFS by predictor quality")
    q.add_argument("--config", required=True, help="run config with a trace or synthetic workload (FCFS)")
    q.add_argument("--noise", default="0.25,0.5,1,2", help="sigmas of log-normal noise on the exact lengths")
    q.add_argument("--aging", type=float, default=50.0, help="aging, predicted tokens of rank per second waited")
    q.add_argument("--train-frac", type=float, default=0.5, help="first part of the workload that trains the predictor")
    q.add_argument("--predictor", default="gbt", choices=["linear", "gbt"], help="the fitted predictor's kind")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    q.add_argument("--output-dir", help="write length_aware.csv / .json here")
    q.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    q.add_argument("--no-progress", action="store_true")


def _length_aware_main(args) -> int:
    import pandas as pd
    import yaml

    from fluidserve.config import load_config
    from fluidserve.study.length_aware import run_length_aware

    overrides = {}
    for item in args.set:
        if "=" not in item:
            raise InputError(f"--set expects KEY=VALUE, got '{item}'")
        k, v = item.split("=", 1)
        overrides[k] = yaml.safe_load(v)
    cfg = load_config(args.config, overrides)
    try:
        sigmas = [float(x) for x in args.noise.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--noise: expected comma-separated numbers, got '{args.noise}'") from None
    if any(not s >= 0 for s in sigmas):
        raise InputError(f"--noise: sigmas must be >= 0, got '{args.noise}'")
    res = run_length_aware(cfg, sigmas, args.aging, args.train_frac, args.predictor, progress=not args.no_progress)
    df = pd.DataFrame(res["policies"])
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        df.to_csv(out / "length_aware.csv", index=False, float_format="%.6g")
        (out / "length_aware.json").write_text(to_json(res))
    if args.json:
        print(to_json(res))
    else:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


@cli_errors
def main(args: argparse.Namespace) -> int:
    if args.study == "length-aware":
        return _length_aware_main(args)
    return _scaling_main(args)


def _scaling_main(args: argparse.Namespace) -> int:
    import pandas as pd

    from fluidserve.config import load_config
    from fluidserve.outputs.figures import save_figure
    from fluidserve.study import report
    from fluidserve.study.scaling import add_efficiency, plan_points, point_config, run_point
    from fluidserve.sweep.executors import execute
    from fluidserve.workload import make_workload

    overrides = {}
    cfg = load_config(args.config)
    if args.num_requests is not None:
        if args.num_requests < 1:
            raise InputError(f"--num-requests must be >= 1, got {args.num_requests}")
        key = "workload.num_requests" if cfg.workload.source == "synthetic" else "workload.trace.max_requests"
        overrides[key] = args.num_requests
        cfg = load_config(args.config, overrides)
    points = plan_points(_ints(args.gpus, "--gpus"), _ints(args.tensor_parallel, "--tensor-parallel"))
    use_roofline = any(p.tensor_parallel > 1 for p in points)
    configs = [point_config(cfg, p, use_roofline) for p in points]  # validates every point before running
    out_dir = Path(args.output_dir) if args.output_dir else Path(cfg.output_dir) / f"scaling_{cfg.name}"
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--output-dir {out_dir} is a file")
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    workload = make_workload(cfg)
    print(f"workload: {len(workload):,} requests over {workload.duration_s:.0f} s; {len(points)} configurations",
          file=sys.stderr)
    rows = []
    csv_path = out_dir / "scaling.csv"
    tasks = [(c, workload, p, str(out_dir)) for c, p in zip(configs, points)]
    for _, row in execute(run_point, tasks, args.executor, args.workers, args.address,
                          progress=not args.no_progress, desc="scaling"):
        rows.append(row)
        pd.DataFrame(sorted(rows, key=lambda r: (r["tensor_parallel"], r["gpus"]))).to_csv(
            csv_path, index=False, float_format="%.6g")  # written as each configuration finishes
    rows = add_efficiency(sorted(rows, key=lambda r: (r["tensor_parallel"], r["gpus"])))
    df = pd.DataFrame(rows)[report.SUMMARY_COLUMNS]
    df.to_csv(csv_path, index=False, float_format="%.6g")
    meta = {"name": cfg.name, "requests": len(workload), "workload": workload.name,
            "offered_rps": float(workload.mean_rate),
            "step_times": f"roofline {cfg.system.gpu} x {cfg.system.model} per TP degree" if use_roofline
            else "the config's batch_time", "router": cfg.cluster.router, "wall_s": time.perf_counter() - t0}
    (out_dir / "report.md").write_text(report.markdown(df, meta))
    fig = report.figure(df, f"{cfg.name}: {len(workload):,} requests")
    save_figure(fig, out_dir / "scaling", formats=("png", "pdf"), dpi=200)
    result = {**meta, "output_dir": str(out_dir), "configurations": df.to_dict("records")}
    (out_dir / "scaling.json").write_text(to_json(result))
    if args.json:
        print(to_json(result))
    else:
        print(report.markdown(df, meta))
    return 0
