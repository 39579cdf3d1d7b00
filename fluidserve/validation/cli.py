"""``python -m fluidserve validate RUN_DIR... --gpu H100-SXM``: predictions against real vLLM runs.

Reads inference-perf run folders (or vLLM ``benchmark_serving.py --save-result`` JSON files),
rebuilds their workloads, simulates them with the runs' vLLM settings and the GPU's serving preset
(``--preset``; default: the shipped fitted preset of the GPU, see
:mod:`fluidserve.validation.preset`) and prints predicted against measured per stage, with the
MAPE over the stages that were not overloaded. ``--output-dir`` writes ``validation.json``,
``validation.txt`` and the figure ``validation.png`` / ``.pdf``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json
from fluidserve.validation import report
from fluidserve.validation.preset import ServingPreset, default_preset, read_preset
from fluidserve.validation.replay import predict_run
from fluidserve.validation.runs import Run, read_run


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags shared with ``calibrate from-runs``: the runs and how to read them."""
    parser.add_argument("runs", nargs="+", metavar="RUN", help="inference-perf run folder or vLLM benchmark JSON")
    parser.add_argument("--gpu", required=True, help=f"GPU preset ({', '.join(specs.gpu_names())})")
    parser.add_argument("--models-dir", help="folder with <name>/config.json for model ids org/<name>")
    parser.add_argument("--model", help="model (preset, config.json path) for runs that do not name one")
    parser.add_argument("--tp", type=int, help="tensor_parallelism of benchmark-JSON runs (default 1)")
    parser.add_argument("--max-num-batched-tokens", type=int, help="for benchmark-JSON runs (vLLM default 2048)")
    parser.add_argument("--max-num-seqs", type=int, help="for benchmark-JSON runs (vLLM default 256)")
    parser.add_argument("--max-model-len", type=int, help="for benchmark-JSON runs")
    parser.add_argument("--seed", type=int, default=0, help="seed of Poisson arrivals")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument("--preset", help="serving preset YAML (calibrate from-runs --out) or a batch-time "
                        "preset (calibrate fit --out; one model only); default: the GPU's shipped vLLM preset")
    parser.add_argument("--output-dir", help="write validation.json, validation.txt, validation.png/.pdf here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def load_runs(args: argparse.Namespace) -> list[Run]:
    settings = {k: v for k, v in (("tensor_parallelism", args.tp), ("max_num_batched_tokens", args.max_num_batched_tokens),
                                  ("max_num_seqs", args.max_num_seqs), ("max_model_len", args.max_model_len))
                if v is not None}
    runs = [read_run(p, settings) for p in args.runs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InputError(f"the same run is given twice: {sorted(n for n in set(names) if names.count(n) > 1)}")
    return runs


def run_model(run: Run, args: argparse.Namespace) -> specs.ModelSpec:
    name = args.model or run.model
    if not name:
        raise InputError(f"{run.path}: the run names no model; give --model")
    try:
        return specs.model(name, models_dir=args.models_dir)
    except InputError as exc:
        raise InputError(f"{run.path}: model '{name}': {exc} (try --models-dir DIR with DIR/<name>/config.json)") from None


def resolve_preset(path: str | None, gpu: str) -> ServingPreset | BatchTimeModel:
    if path is None:
        return default_preset(gpu)
    from fluidserve.yamlio import read_yaml

    data = read_yaml(path, "preset")
    if isinstance(data, dict) and "efficiency" in data:
        return read_preset(path, gpu)
    return BatchTimeModel.from_yaml(path)


def predict_all(runs: Sequence[Run], models: Sequence[specs.ModelSpec], gpu: str,
                preset: ServingPreset | BatchTimeModel, seed: int = 0, reqs=None) -> list[list[dict]]:
    """Predicted metrics per stage of every run."""
    out = []
    for i, (run, m) in enumerate(zip(runs, models)):
        if isinstance(preset, ServingPreset):
            bt, overhead, lag = preset.batch_time(m, run.tensor_parallel), preset.request_overhead_s, \
                preset.first_token_lag_steps
        else:
            bt, overhead, lag = preset, 0.0, 0.0
        out.append(predict_run(run, gpu, m, bt, overhead, seed, None if reqs is None else reqs[i], lag))
    return out


@cli_errors
def main(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    gpu = specs.gpu(args.gpu).name
    runs = load_runs(args)
    models = [run_model(r, args) for r in runs]
    preset = resolve_preset(args.preset, gpu)
    preds = predict_all(runs, models, gpu, preset, args.seed)
    stage_rows = report.rows(runs, preds)
    errs = report.mape(stage_rows)
    out: dict[str, Any] = {"stages": report.json_rows(stage_rows), "mape": errs}
    table = report.format_table(stage_rows)
    if isinstance(preset, ServingPreset):
        src = f"serving preset of {preset.gpu}: {preset.provenance.get('kind', 'fitted')}"
    else:
        src = f"batch-time preset {args.preset}"
    lines = [f"validate: {len(runs)} run(s), {len(stage_rows)} stage(s) on {gpu} ({src})", table,
             "MAPE over the stages that were not overloaded: "
             + ", ".join(f"{k} {v:.1f}%" for k, v in errs.items() if v == v)]
    if args.output_dir:
        d = Path(args.output_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "validation.json").write_text(to_json(out) + "\n")
        (d / "validation.txt").write_text("\n".join(lines) + "\n")
        fig = report.plot(stage_rows, title=f"fluidserve vs real vLLM on {gpu}")
        paths = report.save_figure(fig, d / "validation")
        lines.append("wrote " + ", ".join(str(p) for p in [d / "validation.json", d / "validation.txt", *paths]))
    print(f"validate: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    if args.json:
        print(to_json(out))
    else:
        print("\n".join(lines))
    return 0
