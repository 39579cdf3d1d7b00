"""Fit the step-energy model to a profile's NVML energy: least squares with confidence intervals.

Regresses ``energy_j`` (energy per step from the GPU's energy counter, see the profiler) on
``[time_s, prefill_tokens, decode_tokens, kv_tokens]`` (:mod:`fluidserve.energy`):

* the measured step time is the regressor of ``p_base_w`` (it is measured far more precisely
  than the energy: CUDA events vs a 100 ms-scale counter), so the energy fit does not inherit
  the step-time fit's errors; :func:`energy_mape_with_time_model` reports the error when the
  step time comes from the fitted BatchTimeModel instead, as the simulator and the LP use it;
* relative weighting (rows weighted by 1 / fitted energy, feasible GLS as in
  :mod:`fluidserve.calibration.fit`): MAPE is the target and energies span 2.2 J to 85 J;
* 95% confidence intervals from ``s^2 (X'WX)^-1`` with Student-t quantiles; a coefficient whose
  column adds no rank (e.g. no prefill rows) is not identified and held at 0 (reported).

Used by ``python -m fluidserve calibrate fit PROFILE.csv`` whenever the profile has an
``energy_j`` column: the preset then holds an ``energy`` section beside the step time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fluidserve.batch_time import BatchTimeModel
from fluidserve.energy import FIELDS, StepEnergyModel
from fluidserve.errors import InputError


@dataclass(frozen=True)
class EnergyFitResult:
    """A fitted StepEnergyModel with statistics (coefficients in W and J per token)."""

    coef: dict[str, float]
    ci: dict[str, tuple[float, float] | None]
    stderr: dict[str, float | None]
    cov: np.ndarray = field(repr=False)
    unidentified: tuple[str, ...]
    mape: float
    max_error: float
    rows: int
    dof: int
    idle_w: float | None
    data: pd.DataFrame = field(repr=False)

    @property
    def model(self) -> StepEnergyModel:
        return StepEnergyModel(**self.coef, idle_w=self.idle_w)

    def sample_models(self, n: int, rng: np.random.Generator) -> list[StepEnergyModel]:
        """Models drawn from the fit's normal approximation (for uncertainty bands)."""
        mean = np.array([self.coef[k] for k in FIELDS])
        draws = rng.multivariate_normal(mean, self.cov, size=n)
        out = []
        for d in draws:
            d[0] = max(d[0], 1e-6)
            out.append(StepEnergyModel(*map(float, d), idle_w=self.idle_w))
        return out

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.coef)
        out.update(
            idle_w=self.idle_w, mape=self.mape, max_error=self.max_error, rows=self.rows, dof=self.dof,
            ci={k: (list(v) if v is not None else None) for k, v in self.ci.items()},
            stderr=dict(self.stderr), unidentified=list(self.unidentified),
            cov=self.cov.tolist(),
        )
        return out


def has_energy(df: pd.DataFrame) -> bool:
    return "energy_j" in df.columns and pd.to_numeric(df["energy_j"], errors="coerce").notna().all()


def _columns(df: pd.DataFrame) -> np.ndarray:
    return np.column_stack([
        df["time_s"].to_numpy(dtype=np.float64),
        df["prefill_tokens"].to_numpy(dtype=np.float64),
        df["decode_tokens"].to_numpy(dtype=np.float64),
        df["kv_tokens"].to_numpy(dtype=np.float64),
    ])


def fit_step_energy(profile_df: pd.DataFrame, idle_w: float | None = None, confidence: float = 0.95,
                    source: str = "profile") -> EnergyFitResult:
    """Fit :class:`StepEnergyModel` to a validated profile (``time_s`` column) with ``energy_j``."""
    from scipy import stats

    if not has_energy(profile_df):
        raise InputError(f"{source}: no numeric energy_j column; the profile was measured without NVML energy")
    y = pd.to_numeric(profile_df["energy_j"]).to_numpy(dtype=np.float64)
    if np.any(y <= 0):
        i = int(np.argmax(y <= 0))
        raise InputError(f"{source}: row {i + 1} (line {i + 2}): energy_j must be > 0, got {y[i]!r}")
    x = _columns(profile_df)
    n, k_all = x.shape
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    xu = x / scale
    keep: list[int] = []  # columns that each add rank to the ones kept before them
    for j in range(k_all):
        if np.any(x[:, j]) and np.linalg.matrix_rank(xu[:, keep + [j]]) == len(keep) + 1:
            keep.append(j)
    if 0 not in keep:
        raise InputError(f"{source}: time_s is all zero")
    if n < len(keep) + 2:
        raise InputError(f"{source}: {n} rows are too few to fit {len(keep)} energy coefficient(s)")
    w = 1.0 / y
    for _ in range(4):  # feasible GLS: weights from the fitted energies after the first pass
        xw = xu[:, keep] * w[:, None]
        beta, *_ = np.linalg.lstsq(xw, y * w, rcond=None)
        pred = xu[:, keep] @ beta
        if np.any(pred <= 0):
            break
        w = 1.0 / pred
    xw = xu[:, keep] * w[:, None]
    beta, *_ = np.linalg.lstsq(xw, y * w, rcond=None)
    resid_w = y * w - xw @ beta
    dof = n - len(keep)
    s2 = float(resid_w @ resid_w) / dof
    cov_s = s2 * np.linalg.inv(xw.T @ xw)
    t = float(stats.t.ppf(0.5 + confidence / 2.0, dof))
    coef = np.zeros(k_all)
    coef[keep] = beta / scale[keep]
    cov = np.zeros((k_all, k_all))
    ks = np.array(keep)
    cov[np.ix_(ks, ks)] = cov_s / np.outer(scale[ks], scale[ks])
    se = np.sqrt(np.diag(cov))
    names = FIELDS
    unidentified = tuple(names[j] for j in range(k_all) if j not in keep)
    pred = x @ coef
    rel = (y - pred) / y
    data = profile_df[["phase", "batch_size", "prefill_tokens", "decode_tokens", "kv_tokens", "time_s"]].copy()
    data["energy_j"] = y
    data["predicted_j"] = pred
    data["rel_error"] = rel
    return EnergyFitResult(
        coef={nm: float(coef[j]) for j, nm in enumerate(names)},
        ci={nm: (None if nm in unidentified else (float(coef[j] - t * se[j]), float(coef[j] + t * se[j])))
            for j, nm in enumerate(names)},
        stderr={nm: (None if nm in unidentified else float(se[j])) for j, nm in enumerate(names)},
        cov=cov, unidentified=unidentified, mape=float(np.mean(np.abs(rel))),
        max_error=float(np.max(np.abs(rel))), rows=n, dof=int(dof), idle_w=idle_w, data=data,
    )


def energy_mape_with_time_model(res: EnergyFitResult, bt: BatchTimeModel) -> tuple[float, float]:
    """(MAPE, max error) of the energy when the step time comes from ``bt`` (as in the simulator)."""
    d = res.data
    tau = bt.step_time(d["prefill_tokens"].to_numpy(float), d["decode_tokens"].to_numpy(float),
                       d["kv_tokens"].to_numpy(float))
    pred = res.model.step_energy(tau, d["prefill_tokens"].to_numpy(float), d["decode_tokens"].to_numpy(float),
                                 d["kv_tokens"].to_numpy(float))
    rel = np.abs(d["energy_j"].to_numpy() - pred) / d["energy_j"].to_numpy()
    return float(rel.mean()), float(rel.max())


def format_energy_report(res: EnergyFitResult, mape_time_model: float | None = None) -> str:
    unit = {"p_base_w": "W", "e_prefill_j": "J/token", "e_decode_j": "J/token", "e_kv_j": "J/token"}
    lines = ["-- step-energy model p_base_w*tau + e_prefill*prefill + e_decode*decode + e_kv*kv"]
    for nm in FIELDS:
        ci = res.ci[nm]
        if ci is None:
            lines.append(f"{nm:<14}{'0 (not identified)':>12}")
            continue
        lines.append(f"{nm:<14}{res.coef[nm]:>12.4e}{f'[{ci[0]:.3e}, {ci[1]:.3e}]':>28}   {unit[nm]}")
    extra = f"   with fitted step times: MAPE {100 * mape_time_model:.2f}%" if mape_time_model is not None else ""
    lines.append(f"{'MAPE':<14}{100 * res.mape:>11.2f}%   max error {100 * res.max_error:.2f}%{extra}")
    if res.idle_w is not None:
        lines.append(f"{'idle_w':<14}{res.idle_w:>12.1f}   W (no step running)")
    return "\n".join(lines)


def cli_section(df: pd.DataFrame, bt: BatchTimeModel, idle_w: float | None, source: str) -> dict[str, Any] | None:
    """The ``energy`` part of ``calibrate fit``: None when the profile has no energy_j column.

    Returns ``{"report": summary dict, "preset": mapping for the preset's energy section,
    "text": readable table}``.
    """
    if not has_energy(df):
        return None
    res = fit_step_energy(df, idle_w=idle_w, source=source)
    mape_tm, max_tm = energy_mape_with_time_model(res, bt)
    report = res.summary()
    report.update(mape_with_fitted_step_time=mape_tm, max_error_with_fitted_step_time=max_tm)
    preset: dict[str, Any] = {k: float(v) for k, v in res.model.to_dict().items()}
    preset["metadata"] = {
        "fit": "weighted LS of energy_j on [time_s, prefill, decode, kv] (fluidserve.calibration.energy_fit)",
        "rows": res.rows, "mape": res.mape, "max_error": res.max_error,
        "mape_with_fitted_step_time": mape_tm,
        "ci95": {k: (list(v) if v is not None else None) for k, v in res.ci.items()},
        "cov": res.cov.tolist(), "unidentified": list(res.unidentified),
    }
    return {"report": report, "preset": preset, "text": format_energy_report(res, mape_tm)}
