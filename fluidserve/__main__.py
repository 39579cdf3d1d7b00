"""``python -m fluidserve <command>``: the command dispatcher.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``main(args)``;
the module is imported only when its command runs, so a missing optional extra affects only
the commands that need it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("fluidserve.run", "the main job: workload -> simulator (+ fluid model) -> results"),
    "crosscheck": ("fluidserve.fluid.crosscheck", "fluid model vs simulator at growing scales n"),
    "calibrate": ("fluidserve.calibration.cli", "profile a GPU, fit batch-time coefficients, roofline presets"),
    "lp": ("fluidserve.policy.cli", "LP routing / DVFS policy, validated in the simulator"),
    "serve": ("fluidserve.serve.cli", "OpenAI-compatible simulated endpoint"),
    "sweep": ("fluidserve.sweep.cli", "parameter sweeps over config fields"),
    "experiments": ("fluidserve.outputs.experiments", "list / show / compare / archive / export experiments"),
    "generate-requests": ("fluidserve.workload.cli", "write a synthetic requests CSV"),
    "validate": ("fluidserve.validation.cli", "predicted vs measured on real vLLM runs (inference-perf, benchmark JSON)"),
    "predict": ("fluidserve.predict.cli", "fit / evaluate output-length predictors"),
    "study": ("fluidserve.study.cli", "studies: multi-GPU scaling (data and tensor parallel)"),
    "harness": ("fluidserve.harness.cli", "real-engine experiments: single vs disaggregated vLLM, proxy, power, report"),
    "plan": ("fluidserve.plan.cli", "cheapest fleet / clock / scheduler meeting a latency SLO, verified in the simulator"),
    "docs": ("fluidserve.docs", "write docs/config.md, the reference of every config field"),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse with one readable error line on stderr and exit code 2 for bad flags."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def _top_level_help() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: python -m fluidserve <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "'python -m fluidserve <command> --help' shows a command's options.",
              "The main job is also 'python -m fluidserve.run --config FILE'."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_top_level_help())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from fluidserve import __version__

        print(__version__)
        return 0
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command '{name}'; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module_name, help_ = COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"error: command '{name}' is unavailable: {exc}", file=sys.stderr)
        return 2
    parser = OneLineErrorParser(prog=f"python -m fluidserve {name}", description=help_)
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    return int(module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
