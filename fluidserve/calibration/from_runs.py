"""``python -m fluidserve calibrate from-runs RUN... --gpu H100-SXM --out preset.yaml``.

Fits the hardware-level efficiencies of a serving preset (:mod:`fluidserve.validation.preset`) to
real runs by simulation in the loop: every evaluation derives each run's step-time model from the
efficiencies (``roofline.predict``), replays the run in the simulator
(:mod:`fluidserve.validation.replay`) and compares mean E2E, TTFT and TPOT per stage with the
measurement. SciPy's ``least_squares`` (trust-region reflective, bounds) minimises the sum of
squared log errors over all stages that were not overloaded, of all models given.

Uncertainty: the Gauss-Newton covariance ``s^2 (J^T J)^-1`` at the optimum, with
``s^2 = RSS / (n - p)`` and ``J`` the finite-difference Jacobian of the log errors; intervals are
+-1.96 standard errors (they describe how well the stages pin the values down, not model error:
the residuals are mostly lack of fit, not noise, so read them with the per-stage residuals).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fluidserve import specs
from fluidserve.calibration.roofline import Efficiency
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json
from fluidserve.validation.preset import ServingPreset
from fluidserve.validation.replay import build_requests, predict_run
from fluidserve.validation.runs import Run

#: fitted metrics (log errors of the stage means)
FIT_METRICS = ("tpot_mean", "ttft_mean", "e2e_mean")

#: parameter -> (lower, upper bound); efficiency fields or ``request_overhead_s``
BOUNDS = {
    "memory": (0.3, 1.0),
    "kv_memory": (0.1, 1.0),
    "compute": (0.1, 1.0),
    "interconnect": (0.05, 1.0),
    "decode_compute_exposed": (0.0, 1.0),
    "step_overhead_s": (0.0, 0.02),
    "layer_overhead_s": (0.0, 2e-4),
    "all_reduce_latency_s": (0.0, 2e-4),
    "tp_step_overhead_s": (0.0, 0.02),
    "request_overhead_s": (0.0, 0.05),
    "first_token_lag_steps": (0.0, 4.0),
}
#: fitted parameters that belong to the serving preset rather than to ``Efficiency``
SERVING_FIELDS = ("request_overhead_s", "first_token_lag_steps")
DEFAULT_FIT = ("memory", "compute", "step_overhead_s", "request_overhead_s", "first_token_lag_steps")
FIT_STAGE_S = 90.0


def _preset(gpu: str, base: ServingPreset, names: Sequence[str], x: np.ndarray) -> ServingPreset:
    values = dict(zip(names, (float(v) for v in x)))
    serving = {k: values.pop(k, getattr(base, k)) for k in SERVING_FIELDS}
    return ServingPreset(gpu=gpu, efficiency=replace(base.efficiency, **values), **serving)


def fit_efficiencies(runs: Sequence[Run], models: Sequence[specs.ModelSpec], gpu: str,
                     names: Sequence[str] = DEFAULT_FIT, base: ServingPreset | None = None,
                     seed: int = 0, progress: bool = True, max_stage_s: float | None = FIT_STAGE_S) -> dict[str, Any]:
    """Fit the efficiencies ``names`` to the non-overloaded stages of ``runs``; returns the result.

    ``max_stage_s``: replay at most this many seconds of each stage (constant-rate stages that are
    not overloaded are stationary after a few request lifetimes, so a shorter replay gives the
    same means at a fraction of the cost; None replays them whole).
    """
    from scipy.optimize import least_squares

    if base is None:
        from fluidserve.validation.preset import vllm_start_preset

        base = vllm_start_preset(gpu)
    unknown = [n for n in names if n not in BOUNDS]
    if unknown:
        raise InputError(f"cannot fit {', '.join(unknown)}; fittable: {', '.join(BOUNDS)}")
    used = [(r, m) for r, m in zip(runs, models) if any(not s.overloaded for s in r.stages)]
    if not used:
        raise InputError("every stage of the runs given was overloaded: nothing to fit")
    reqs = [build_requests(r, seed, max_stage_s) for r, _ in used]
    targets = [(i, s.index, k, s.measured[k]) for i, (r, _) in enumerate(used) for s in r.stages
               if not s.overloaded for k in FIT_METRICS if np.isfinite(s.measured[k]) and s.measured[k] > 0]
    if len(targets) <= len(names):
        raise InputError(f"{len(targets)} measured values cannot determine {len(names)} parameters")
    lo = np.array([BOUNDS[n][0] for n in names])
    hi = np.array([BOUNDS[n][1] for n in names])
    scale = hi - lo
    def start(n: str) -> float:
        if n in SERVING_FIELDS:
            return getattr(base, n)
        v = getattr(base.efficiency, n)
        return base.efficiency.memory if v is None else v

    x0 = np.array([start(n) for n in names])
    x0 = np.clip(x0, lo + 0.01 * scale, hi - 0.01 * scale)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="from-runs: simulations", unit="eval", leave=False, file=sys.stderr)
    evals = [0]

    def predictions(u: np.ndarray) -> list[list[dict]]:
        p = _preset(gpu, base, names, lo + (u - 1.0) * scale)
        out = []
        for (r, m), q in zip(used, reqs):
            out.append(predict_run(r, gpu, m, p.batch_time(m, r.tensor_parallel), p.request_overhead_s, seed, q,
                                   p.first_token_lag_steps))
        evals[0] += 1
        if bar is not None:
            bar.update(1)
        return out

    def residuals(u: np.ndarray) -> np.ndarray:
        preds = predictions(u)
        res = []
        for i, st, k, meas in targets:
            pred = preds[i][st][k]
            res.append(np.log(pred / meas) if np.isfinite(pred) and pred > 0 else 5.0)
        return np.asarray(res)

    # parameters as u in [1, 2] over their bounds: least_squares' relative finite-difference step
    # (diff_step * u) is then 1-2% of each range, large enough to see through the simulation's
    # event-order noise, for parameters that start near their lower bound too
    u0 = 1.0 + (x0 - lo) / scale
    sol = least_squares(residuals, u0, bounds=(1.0, 2.0), diff_step=0.01, x_scale=1.0, xtol=2e-3, ftol=3e-3,
                        max_nfev=8)
    if bar is not None:
        bar.close()
    x = lo + (sol.x - 1.0) * scale
    n, p = len(targets), len(names)
    rss = float(np.sum(sol.fun ** 2))
    J = sol.jac * (1.0 / scale)  # d residual / d parameter (physical units)
    s2 = rss / max(n - p, 1)
    try:
        cov = s2 * np.linalg.inv(J.T @ J)
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se = np.full(p, np.nan)
    preset = _preset(gpu, base, names, x)
    final = predictions(sol.x)
    residual_rows = []
    for (i, st, k, meas), r in zip(targets, sol.fun):
        run = used[i][0]
        residual_rows.append({"run": run.name, "stage": st, "metric": k, "measured": meas,
                              "predicted": float(final[i][st][k]), "log_error": float(r),
                              "percent_error": float((np.exp(r) - 1) * 100)})
    params = {nm: {"value": float(v), "std_error": float(e), "ci95": [float(v - 1.96 * e), float(v + 1.96 * e)],
                   "at_bound": bool(np.isclose(v, BOUNDS[nm][0]) or np.isclose(v, BOUNDS[nm][1]))}
              for nm, v, e in zip(names, x, se)}
    return {"preset": preset, "parameters": params, "residuals": residual_rows, "rms_log_error": float(np.sqrt(rss / n)),
            "n_values": n, "evaluations": evals[0], "status": sol.message, "runs": [r.name for r, _ in used],
            "models": sorted({m.name for _, m in used})}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fluidserve.validation.cli import add_run_arguments

    add_run_arguments(parser)
    parser.add_argument("--out", required=True, help="write the fitted serving preset YAML here")
    parser.add_argument("--fit", default=",".join(DEFAULT_FIT),
                        help=f"comma-separated parameters to fit (default {','.join(DEFAULT_FIT)}; "
                        f"fittable: {', '.join(BOUNDS)})")
    parser.add_argument("--start", help="serving preset YAML whose values start the fit and fix the others "
                        "(default: the roofline's default efficiencies, no per-layer launch gaps (CUDA graphs), "
                        "5 us all-reduces)")
    parser.add_argument("--output-dir", help="write from_runs.json (fit, residuals) here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


@cli_errors
def main(args: argparse.Namespace) -> int:
    from fluidserve.validation.cli import load_runs, run_model
    from fluidserve.validation.preset import read_preset, vllm_start_preset

    t0 = time.perf_counter()
    gpu = specs.gpu(args.gpu).name
    names = [n.strip() for n in args.fit.split(",") if n.strip()]
    runs = load_runs(args)
    models = [run_model(r, args) for r in runs]
    base = read_preset(args.start, gpu) if args.start else vllm_start_preset(gpu)
    res = fit_efficiencies(runs, models, gpu, names, base, args.seed)
    preset: ServingPreset = res["preset"]
    preset = replace(preset, provenance={
        "kind": "fitted by fluidserve calibrate from-runs (simulation in the loop, least squares on log errors "
                f"of {', '.join(FIT_METRICS)})",
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": res["runs"], "models": res["models"], "fitted": names,
        "parameters": res["parameters"], "rms_log_error": res["rms_log_error"],
    })
    path = preset.write(args.out)
    out = {k: v for k, v in res.items() if k != "preset"}
    out.update(preset=str(path), efficiency=asdict(preset.efficiency), request_overhead_s=preset.request_overhead_s,
               first_token_lag_steps=preset.first_token_lag_steps, wall_s=time.perf_counter() - t0)
    if args.output_dir:
        d = Path(args.output_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / "from_runs.json").write_text(to_json(out) + "\n")
    if args.json:
        print(to_json(out))
        return 0
    lines = [f"calibrate from-runs: {len(res['runs'])} run(s) ({', '.join(res['models'])}) on {gpu}, "
             f"{res['n_values']} stage means, {res['evaluations']} simulations, {out['wall_s']:.1f} s",
             "fitted (value +- 1.96 standard errors, Gauss-Newton):"]
    for nm, p in res["parameters"].items():
        flag = "  (at its bound)" if p["at_bound"] else ""
        lines.append(f"  {nm:<24} {p['value']:.4g} +- {1.96 * p['std_error']:.2g}{flag}")
    lines.append(f"rms log error {res['rms_log_error']:.3f}; per-stage residuals (predicted vs measured):")
    for r in res["residuals"]:
        lines.append(f"  {r['run'][:42]:<42} {r['stage']} {r['metric']:<10} {r['predicted']:.4g} vs "
                     f"{r['measured']:.4g}  {r['percent_error']:+.1f}%")
    lines.append(f"preset: {path}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m fluidserve.calibration.from_runs")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
