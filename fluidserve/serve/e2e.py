"""End-to-end calibration loop on a CPU: recover known batch-time coefficients through the
OpenAI-compatible simulated endpoint, using only what a client can measure.

1. Start ``fluidserve serve`` with a config whose ``batch_time`` holds the *true* coefficients
   (no chunked prefill, a KV cache large enough that nothing is preempted).
2. Drive it with the calibration load client (fluidserve/calibration/loadclient.py): open-loop
   arrivals of a workload, exact token-id prompts, streaming, per-token receive times.
3. Turn the measured token times (scaled to simulated seconds) and TTFTs into a step profile
   (fluidserve/serve/streamprofile.py), drop the rows disturbed by scheduling hiccups (robust
   fit, :func:`~fluidserve.serve.streamprofile.drop_outliers`) and fit the rest
   (fluidserve/calibration/fit.py).
4. Compare the fitted coefficients with the truth (relative errors).

The default workload (:func:`calibration_workload`) takes turns between low and high arrival
rates and short and long prompts, so that the decode batch, the prompt tokens per step and the
KV tokens vary independently enough to identify the four coefficients.

Command: ``python -m fluidserve.serve.e2e --config cfg.yaml [--time-scale 0.5] [--num-requests
400] [--json] [--output-dir DIR]`` (the config's batch_time is the truth; its system section
is used with chunked prefill off).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json
from fluidserve.workload.base import Workload

COEFFICIENTS = ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s")


def calibration_workload(
    n: int = 400,
    rate_low: float = 10.0,
    rate_high: float = 60.0,
    period_s: float = 1.0,
    short_prompts: tuple[int, int] = (16, 96),
    long_prompts: tuple[int, int] = (640, 1024),
    decode_range: tuple[int, int] = (8, 48),
    seed: int = 0,
) -> Workload:
    """``n`` requests from four regimes that take turns every ``period_s`` (simulated) seconds:
    (low rate, short prompts), (high rate, short), (low rate, long), (high rate, long).

    Rates are Poisson req/s; lengths uniform over the inclusive ranges. The rate changes the
    decode batch size, the prompt regime the context per decoding request, so the batch-time
    regressors (prompt tokens, decode batch, KV tokens) are far from collinear; a single
    stationary mix would make KV tokens almost proportional to the batch size.
    """
    if n < 10:
        raise InputError(f"calibration workload needs at least 10 requests, got {n}")
    rng = np.random.default_rng(seed)
    t = 0.0
    arrivals, prefill = [], []
    while len(arrivals) < n:
        regime = int(t // period_s) % 4
        rate = rate_high if regime % 2 else rate_low
        lo, hi = long_prompts if regime >= 2 else short_prompts
        t += rng.exponential(1.0 / rate)
        arrivals.append(t)
        prefill.append(int(rng.integers(lo, hi, endpoint=True)))
    decode = rng.integers(decode_range[0], decode_range[1], endpoint=True, size=n)
    return Workload(np.asarray(arrivals), np.asarray(prefill), decode, name="calibration")


def serve_config(truth: BatchTimeModel, system: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """A config dict for the endpoint: ``truth`` as batch_time, no chunked prefill, no preemption.

    The step profile (``streamprofile``) reads token times with the ``vllm_v0`` timing (first token
    at the end of the first decode step), so the endpoint runs that scheduler.
    """
    sysc = {"scheduler": "vllm_v0", "M_total": 4_000_000, "block_size": 16, "B": 8192, "max_num_seqs": 512}
    sysc.update(system or {})
    sysc["chunked_prefill"] = False
    return {"name": "e2e-calibration", "seed": seed, "system": sysc, "batch_time": truth.to_dict()}


def fit_profile(profile: pd.DataFrame) -> tuple[BatchTimeModel, dict[str, Any]]:
    """Fit the four coefficients with fluidserve.calibration.fit (relative weighting, >= 0)."""
    from fluidserve.calibration import fit as fitmod

    res = fitmod.fit_batch_time(profile[list(fitmod.PROFILE_COLUMNS)])
    fit = res.summary()
    info = {"mape": fit["mape"], "ci": fit["ci"], "unidentified": fit["unidentified"], "clipped": fit["clipped"]}
    return res.model, info


@dataclass
class E2EResult:
    """Truth, fit and what they were computed from."""

    truth: BatchTimeModel
    fitted: BatchTimeModel
    profile: pd.DataFrame
    requests: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rel_error(self) -> dict[str, float]:
        t, f = self.truth.to_dict(), self.fitted.to_dict()
        return {k: (f[k] - t[k]) / t[k] if t[k] else float("nan") for k in COEFFICIENTS}

    def summary(self) -> dict[str, Any]:
        return {
            "truth": self.truth.to_dict(),
            "fitted": self.fitted.to_dict(),
            "rel_error": self.rel_error,
            "max_abs_rel_error": max(abs(v) for v in self.rel_error.values()),
            "profile_rows": int(len(self.profile)),
            "profile_phases": {str(k): int(v) for k, v in self.profile["phase"].value_counts().items()},
            "requests": int(len(self.requests)),
            "errors": int((self.requests["error"].fillna("") != "").sum()) if "error" in self.requests else 0,
            **self.info,
        }


def run_e2e(
    truth: BatchTimeModel,
    workload: Workload | None = None,
    time_scale: float = 0.5,
    system: dict[str, Any] | None = None,
    workdir: str | Path | None = None,
) -> E2EResult:
    """Start an endpoint with ``truth``, drive it with the load client, fit, compare.

    ``time_scale`` is the endpoint's simulated seconds per wall second; the load client sends
    at wall times ``arrival / time_scale`` and token times are scaled back by ``time_scale``.
    """
    from fluidserve.calibration.loadclient import LoadSettings, run_load
    from fluidserve.serve.launch import ServerProcess
    from fluidserve.serve.streamprofile import drop_outliers, step_profile

    workload = workload if workload is not None else calibration_workload()
    with tempfile.TemporaryDirectory(prefix="fluidserve-e2e-") as tmp:
        base = Path(workdir) if workdir is not None else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        cfg_path = base / "e2e_config.yaml"
        cfg_path.write_text(yaml.safe_dump(serve_config(truth, system)))
        with ServerProcess(cfg_path, time_scale=time_scale) as srv:
            settings = LoadSettings(url=srv.url, model="fluidserve-sim", time_scale=1.0 / time_scale, metrics_interval_s=0.0)
            load = run_load(workload, settings)
    tokens = load.token_gaps[["req_id", "token_index", "time"]].copy()
    tokens["time"] = tokens["time"] * time_scale  # wall -> simulated seconds
    prompts = dict(enumerate(workload.prefill_tokens.tolist()))
    measured = step_profile(tokens, prompts)
    profile, dropped = drop_outliers(measured)
    if len(profile) < 20:
        raise InputError(f"only {len(profile)} steps could be identified from the token times; use more requests")
    fitted, info = fit_profile(profile)
    info.update({"time_scale": time_scale, "wall_s": load.summary.get("wall_s"), "outlier_rows_dropped": dropped})
    return E2EResult(truth, fitted, profile, load.requests, info)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config: batch_time is the truth, system is used")
    parser.add_argument("--time-scale", type=float, default=0.5, help="endpoint simulated seconds per wall second")
    parser.add_argument("--num-requests", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default=None, help="write profile.csv, requests.csv and e2e.json here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.config import load_config

    if args.num_requests < 10:
        raise InputError(f"--num-requests must be >= 10, got {args.num_requests}")
    cfg = load_config(args.config)
    system = cfg.system.model_dump(include={"M_total", "block_size", "B", "max_num_seqs"})
    result = run_e2e(cfg.batch_time_model(), calibration_workload(args.num_requests, seed=args.seed), args.time_scale, system)
    summary = result.summary()
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        result.profile.to_csv(out / "profile.csv", index=False)
        result.requests.to_csv(out / "requests.csv", index=False)
        (out / "e2e.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(to_json(summary))
    else:
        print(f"{'coefficient':<14}{'truth':>12}{'fitted':>12}{'error':>9}")
        for k in COEFFICIENTS:
            print(f"{k:<14}{summary['truth'][k]:>12.4g}{summary['fitted'][k]:>12.4g}{summary['rel_error'][k]:>+9.2%}")
        print(f"{summary['profile_rows']} steps from {summary['requests']} requests ({summary['errors']} errors)")
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m fluidserve.serve.e2e", description="end-to-end calibration loop")
    add_arguments(p)
    sys.exit(main(p.parse_args()))
