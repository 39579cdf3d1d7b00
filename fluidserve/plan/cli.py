"""``python -m fluidserve plan``: the cheapest fleet, clock and scheduler settings that meet an SLO.

    python -m fluidserve plan --config config/plan_azure_h100.yaml [--json] [--output-dir DIR]

Screens every candidate with the closed forms and the latency model, verifies the best few in
the simulator (bisection on the replica count) and writes, under the output folder (default
``<output_dir>/<name>`` of the plan file): ``plan.json``, ``plan.md``, ``plan.tex``,
``screen.csv``, ``pareto.png/pdf`` and ``verified.jsonl`` (every simulation as it finishes; a
rerun resumes from it, ``--fresh`` ignores it). ``--json`` prints one JSON object on stdout with
``recommended``, ``candidates`` and ``verified``. When no candidate meets the SLO the report
names the closest candidate and the binding constraint, and the command exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fluidserve.errors import cli_errors
from fluidserve.jsonout import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="plan YAML (see config/plan_azure_h100.yaml)")
    parser.add_argument("--output-dir", default=None, help="write plan.json/.md/.tex, screen.csv, pareto.*, verified.jsonl here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--fresh", action="store_true", help="ignore simulations stored by an earlier run")
    parser.add_argument("--no-figures", action="store_true", help="skip the Pareto figure")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.plan.config import load_plan_config
    from fluidserve.plan.report import format_text, payload, write_outputs
    from fluidserve.plan.search import run_search
    from fluidserve.plan.store import ResultStore, simulation_hash
    from fluidserve.plan.traffic import build_traffic

    plan = load_plan_config(args.config)
    outdir = Path(args.output_dir) if args.output_dir else plan.resolve_path(plan.output_dir) / plan.name
    outdir.mkdir(parents=True, exist_ok=True)
    store_path = outdir / "verified.jsonl"
    if args.fresh and store_path.exists():
        store_path.unlink()
    store = ResultStore(store_path, simulation_hash(plan))
    log = (lambda msg: print(msg, file=sys.stderr))
    if store.resumed:
        log(f"resuming: {store.resumed} simulations from {store_path}")
    traffic = build_traffic(plan)
    outcome = run_search(plan, traffic, store, progress=not args.no_progress, log=log)
    write_outputs(plan, outcome, traffic, outdir, figures=not args.no_figures)
    log(f"wrote {outdir}/plan.json, plan.md, plan.tex, screen.csv" + ("" if args.no_figures else ", pareto.png/pdf"))
    if args.json:
        print(to_json(payload(plan, outcome, traffic)))
    else:
        print(format_text(plan, outcome))
    if outcome.recommended is None:
        b = (outcome.closest or {}).get("binding") or {}
        print(f"error: infeasible: no candidate meets the SLO; closest binding constraint: class "
              f"'{b.get('class')}' {b.get('constraint')} = {b.get('value')} vs limit {b.get('limit')}", file=sys.stderr)
        return 2
    return 0
