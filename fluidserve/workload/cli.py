"""``python -m fluidserve generate-requests``: write a requests CSV (the seed's generate_requests).

    python -m fluidserve generate-requests --num_requests 1000 --arrival_rate 2 \\
        --scenario bursty --seed 7 --output requests.csv --json

``--config FILE`` takes the config's ``workload`` section and ``seed`` instead (a trace source
is loaded and written in the generic format); flags given on the command line override them.
The CSV is the generic format read by ``read_requests_csv`` and by ``workload.source: trace``
with ``format: generic``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from pydantic import ValidationError

from fluidserve.config import WorkloadConfig, format_validation_error, load_config
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="take the workload section and seed from this YAML config")
    parser.add_argument("--num_requests", "--num-requests", dest="num_requests", type=int,
                        help="number of requests (default 1000)")
    parser.add_argument("--arrival_rate", "--arrival-rate", dest="arrival_rate", type=float,
                        help="mean arrival rate, req/s (default: the scenario's)")
    parser.add_argument("--scenario", choices=["normal", "heavy", "bursty"], help="default normal")
    parser.add_argument("--arrival-process", "--arrival_process", dest="arrival_process",
                        choices=["poisson", "gamma", "mmpp"], help="default poisson")
    parser.add_argument("--gamma-cv", "--gamma_cv", dest="gamma_cv", type=float,
                        help="coefficient of variation of Gamma inter-arrivals, > 1 (default 2)")
    parser.add_argument("--mmpp", nargs=4, type=float, metavar=("RATE_LOW", "RATE_HIGH", "MEAN_LOW_S", "MEAN_HIGH_S"),
                        help="two-state MMPP: rates (req/s) and mean sojourns (s); default: the burst pattern")
    parser.add_argument("--seed", type=int, help="random seed (default 0, or the config's)")
    parser.add_argument("--output", default="requests.csv", help="CSV file to write (default requests.csv)")
    parser.add_argument("--output-dir", help="folder for --output when it is a relative path")
    parser.add_argument("--json", action="store_true", help="print one JSON object describing the file on stdout")


def workload_settings(args: argparse.Namespace):
    """(WorkloadConfig, seed, cfg or None) from --config and the flags (flags win)."""
    cfg = load_config(args.config) if args.config else None
    data = cfg.workload.model_dump(exclude_unset=True) if cfg is not None else {}
    flags = {
        "num_requests": args.num_requests,
        "arrival_rate": args.arrival_rate,
        "scenario": args.scenario,
        "arrival_process": args.arrival_process,
        "gamma_cv": args.gamma_cv,
    }
    if any(v is not None for v in flags.values()) and data.get("source") == "trace":
        data["source"] = "synthetic"  # synthetic flags on top of a trace config: generate instead
    data.update({k: v for k, v in flags.items() if v is not None})
    if args.mmpp is not None:
        data["mmpp"] = dict(zip(("rate_low", "rate_high", "mean_low_s", "mean_high_s"), args.mmpp))
    try:
        wcfg = WorkloadConfig.model_validate(data)
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "generate-requests workload")) from None
    seed = args.seed if args.seed is not None else (cfg.seed if cfg is not None else 0)
    if seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {seed}")
    return wcfg, seed, cfg


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.workload import build_workload, write_requests_csv

    wcfg, seed, cfg = workload_settings(args)
    path = Path(args.output)
    if args.output_dir and not path.is_absolute():
        path = Path(args.output_dir) / path
    if path.is_dir():
        raise InputError(f"--output {path} is a directory; give a file name, e.g. {path / 'requests.csv'}")
    workload = build_workload(wcfg, seed, cfg.resolve_path if cfg is not None else Path)
    write_requests_csv(workload, path)
    info = {
        "path": str(path),
        "num_requests": len(workload),
        "mean_rate": workload.mean_rate if math.isfinite(workload.mean_rate) else None,
        "mean_prefill": float(workload.prefill_tokens.mean()),
        "mean_decode": float(workload.decode_tokens.mean()),
    }
    if args.json:
        print(to_json(info))
    else:
        print(
            f"wrote {info['num_requests']} requests to {path} (mean rate {workload.mean_rate:.3f} req/s, "
            f"mean prefill {info['mean_prefill']:.1f}, mean decode {info['mean_decode']:.1f} tokens)",
            file=sys.stdout,
        )
    return 0
