"""``python -m fluidserve calibrate <action>``: the calibration command group.

Each action is a module exposing ``add_arguments(parser)`` and ``main(args)``; adding one is one
line in :data:`ACTIONS`. A module is imported when the parser is built (so ``--help`` lists its
flags); modules must keep heavy imports (torch, pynvml, httpx) inside their functions. An action
whose module cannot be imported still appears and exits 2 with the reason when chosen.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: (action, module, one-line help)
ACTIONS: list[tuple[str, str, str]] = [
    ("fit", "fluidserve.calibration.fit", "fit batch-time coefficients (with CIs, MAPE) to a step-profile CSV"),
    ("roofline", "fluidserve.calibration.roofline", "batch-time coefficients and M_total from GPU/model presets"),
    ("profile", "fluidserve.calibration.profiler", "measure step times (and energy) over a grid of batch shapes"),
    ("load", "fluidserve.calibration.loadclient", "open-loop load against an OpenAI-compatible endpoint"),
    ("from-runs", "fluidserve.calibration.from_runs", "fit a GPU's serving efficiencies to real vLLM runs (simulation in the loop)"),
    ("fit-tp", "fluidserve.calibration.tp_fit", "fit all-reduce latency/bandwidth and TP overheads from TP profiles"),
]


def _unavailable(action: str, reason: str):
    def main(args: argparse.Namespace) -> int:
        print(f"error: calibrate {action} is unavailable: {reason}", file=sys.stderr)
        return 2

    return main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, module_name, help_ in ACTIONS:
        p = sub.add_parser(action, help=help_, description=help_)  # same parser class as the group's
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            p.add_argument("rest", nargs=argparse.REMAINDER)
            p.set_defaults(_action_main=_unavailable(action, str(exc)))
            continue
        module.add_arguments(p)
        p.set_defaults(_action_main=module.main)


def main(args: argparse.Namespace) -> int:
    return int(args._action_main(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m fluidserve calibrate")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
