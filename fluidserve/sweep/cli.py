"""``python -m fluidserve sweep --config sweep.yaml``: run a parameter sweep.

    python -m fluidserve sweep --config config/sweep_example.yaml --output-dir results --latex
    python -m fluidserve sweep --config sweep.yaml --executor dask --address tcp://10.0.0.5:8786

The sweep file is validated and expanded before any point runs (see
:mod:`fluidserve.sweep.spec`). Results are appended to ``<output-dir>/<name>/results/`` as
points finish; running the same command again computes only the missing points. Then the
figures (PNG; with ``--latex`` PGF/PDF and booktabs tables) are written from the whole dataset.
Exit code 0 when every point is stored, 1 when some failed (listed in errors.jsonl; a re-run
retries them), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys

from fluidserve.errors import cli_errors
from fluidserve.jsonout import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="sweep YAML file (see config/sweep_example.yaml)")
    parser.add_argument("--output-dir", help="folder of sweep folders (default: the sweep's output_dir, or results)")
    parser.add_argument("--executor", choices=["local", "dask"], default="local",
                        help="local process pool (default) or a Dask distributed cluster")
    parser.add_argument("--address", help="Dask scheduler address, e.g. tcp://host:8786 (default: a LocalCluster)")
    parser.add_argument("--workers", type=int, help="local processes / LocalCluster workers (default: CPU count; Dask LocalCluster: 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the run report) on stdout")
    parser.add_argument("--latex", action="store_true", help="also export PGF/PDF figures and LaTeX tables")
    parser.add_argument("--no-vmap", action="store_true", help="solve fluid points one by one (no JAX vmap)")
    parser.add_argument("--no-figures", action="store_true", help="write no figures or tables")
    parser.add_argument("--dry-run", action="store_true", help="validate and list the points, run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.sweep.runner import run_sweep, sweep_dir
    from fluidserve.sweep.spec import load_sweep
    from fluidserve.sweep.store import load_results

    sweep = load_sweep(args.config)
    if args.dry_run:
        info = {"name": sweep.name, "points": len(sweep.points), "engines": list(sweep.engines),
                "fields": sweep.fields, "sweep_dir": str(sweep_dir(sweep, args.output_dir))}
        print(to_json(info) if args.json else "\n".join(f"{k}: {v}" for k, v in info.items()))
        return 0
    report = run_sweep(sweep, args.output_dir, executor=args.executor, workers=args.workers,
                       address=args.address, progress=not args.quiet, use_vmap=not args.no_vmap)
    result = report.to_dict()
    if not args.no_figures:
        from fluidserve.sweep.outputs import write_outputs

        df = load_results(report.dataset_dir)
        result.update(write_outputs(df, sweep.fields, report.sweep_dir, latex=args.latex))
    print(f"sweep {sweep.name}: {report.computed} computed, {report.skipped} already stored, "
          f"{len(report.errors)} failed, {report.wall_time_s:.1f} s -> {report.sweep_dir}", file=sys.stderr)
    for err in report.errors[:5]:
        print(f"  failed {err['engine']} {err['params']}: {err['error']}", file=sys.stderr)
    if args.json:
        print(to_json(result))
    else:
        print(f"results: {report.dataset_dir}")
    return 1 if report.errors else 0


def cli(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m fluidserve.sweep.cli`` (used by tests that kill a sweep)."""
    from fluidserve.__main__ import OneLineErrorParser

    parser = OneLineErrorParser(prog="python -m fluidserve sweep", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(cli())
