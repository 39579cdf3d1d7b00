"""``python -m fluidserve predict fit|eval``: train and evaluate output-length predictors.

    python -m fluidserve predict fit --trace TRACE.csv --format azure --predictor gbt \\
        --train-frac 0.7 --out model.joblib --json
    python -m fluidserve predict eval --model model.joblib --trace TRACE.csv --format azure \\
        --train-frac 0.7 --json

``fit`` trains on the first ``--train-frac`` of the requests by arrival time and reports the
metrics on the rest (the later part); ``eval`` scores a saved predictor on the later part of any
trace (``--train-frac 0`` scores the whole trace).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action in ("fit", "eval"):
        p = sub.add_parser(action, help=f"{action} an output-length predictor")
        p.add_argument("--trace", required=True, help="trace file (CSV)")
        p.add_argument("--format", default="generic", choices=["azure", "burstgpt", "generic"])
        p.add_argument("--train-frac", type=float, default=0.7,
                       help="share of requests (first by arrival) used for training; the rest is the test set")
        p.add_argument("--output-dir", help="write metrics.json (and the model for fit) here")
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        if action == "fit":
            p.add_argument("--predictor", default="gbt", choices=["linear", "gbt", "text"])
            p.add_argument("--text-model", help="local encoder directory for --predictor text")
            p.add_argument("--out", default="length_predictor.joblib", help="model file (relative to --output-dir)")
        else:
            p.add_argument("--model", required=True, help="a saved predictor (.joblib)")


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.predict.data import request_table, time_split
    from fluidserve.predict.evaluate import evaluate
    from fluidserve.predict.predictors import load, make_predictor

    frame = request_table(args.trace, args.format)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--output-dir {out_dir} is a file")
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.action == "fit":
        train, test = time_split(frame, args.train_frac)
        predictor = make_predictor(args.predictor, model_dir=args.text_model)
        print(f"fitting {args.predictor} on {len(train)} requests ...", file=sys.stderr)
        predictor.fit(train, train["output_tokens"])
        model_path = Path(args.out)
        if out_dir is not None and not model_path.is_absolute():
            model_path = out_dir / model_path
        predictor.save(model_path)
        result = {"model": str(model_path), "train_requests": int(len(train)),
                  "features": _features(train, args.predictor), "test": evaluate(predictor, test, test["output_tokens"])}
    else:
        predictor = load(args.model)
        test = frame if args.train_frac == 0 else time_split(frame, args.train_frac)[1]
        result = {"model": args.model, "test": evaluate(predictor, test, test["output_tokens"])}
    if out_dir is not None:
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    if args.json:
        print(to_json(result))
    else:
        t = result["test"]
        print(f"{t['predictor']}: {t['requests']} test requests, MAE {t['mae_tokens']:.1f} tokens "
              f"(constant median {t['mae_baseline_tokens']:.1f}), Spearman {t['spearman']:.3f}, "
              f"coverage {', '.join(f'q{q}={c:.2f}' for q, c in t['coverage'].items())}")
    return 0


def _features(frame, predictor: str) -> list[str]:
    from fluidserve.predict.features import category_column

    feats = ["log1p(prefill_tokens)", "prefill_tokens"]
    if category_column(frame):
        feats.append(category_column(frame))
    if predictor == "text":
        feats.insert(0, "encoder(prompt)")
    return feats
