"""Fit batch-time coefficients to a step profile: least squares with confidence intervals.

The four-coefficient model (``fluidserve.batch_time``) regresses step time on
``[1, prefill_tokens, decode_tokens, kv_tokens]``; the seed's two-parameter model on
``[1, prefill_tokens + decode_tokens]``. Choices, and why:

* **Relative weighting** (default ``weighting="relative"``): rows are weighted by 1 / step time,
  so the fit minimises the sum of squared *relative* errors. MAPE is the target metric, and step times
  span two orders of magnitude (7 ms decode to 120 ms prefill): unweighted least squares would
  fit the long steps and leave large relative errors on the short ones. It is also the efficient
  estimator when timing noise is proportional to the step time. The weights are 1 / measured
  time for a first fit, then 1 / fitted time for three more (feasible GLS): weighting by the
  noisy measurement itself favours rows whose noise is negative and biases every coefficient
  low by about the squared relative noise, which is larger than the CI on big profiles.
  ``weighting="none"`` gives ordinary least squares.
* **Non-negative coefficients**: a negative cost per token is unphysical and the simulator
  rejects it. The unconstrained weighted fit is tried first; if a coefficient comes out negative
  the fit is redone with ``scipy.optimize.lsq_linear`` bounds ``>= 0`` and the coefficients
  held at 0 are reported in ``FitResult.clipped``. The free coefficients' intervals are those of
  the fit without the clipped columns (what the bounded solution is); a clipped coefficient's
  interval is the unconstrained one cut at 0.
* **95% confidence intervals** from the covariance ``s^2 (X'WX)^-1`` with Student-t quantiles at
  ``rows - coefficients`` degrees of freedom.
* **Identifiability**: a coefficient whose column adds no rank (no prefill rows: the prefill
  column is all zero; one context per batch size: kv is proportional to decode) cannot be fitted.
  It is reported in ``FitResult.unidentified`` (null in JSON) and held at a given ``fill`` value
  (e.g. the roofline prediction; its contribution is subtracted before fitting) or at 0.

Metrics: MAPE and max error are fractions of the measured time; R^2 is on seconds, unweighted.

Command: ``python -m fluidserve calibrate fit PROFILE.csv [--json] [--out preset.yaml]``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json

PROFILE_COLUMNS = ("phase", "batch_size", "prefill_tokens", "decode_tokens", "kv_tokens", "time_ms")
NUMERIC_COLUMNS = PROFILE_COLUMNS[1:]
FOUR = ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s")
TWO = ("d0_s", "d1_s")
FIVE = FOUR + ("d3_prefill_attn_s",)
FORMS = {"four": FOUR, "two": TWO, "five": FIVE}
PHASES = ("all", "decode", "prefill", "mixed")
WEIGHTINGS = ("relative", "none")


# -- input -------------------------------------------------------------------------------------


def read_profile(path: str | Path) -> pd.DataFrame:
    """Read and validate a step-profile CSV (see :func:`validate_profile`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"profile file not found: {path}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
    return validate_profile(df, str(path))


def validate_profile(df: pd.DataFrame, source: str = "profile") -> pd.DataFrame:
    """Check a profile table and return a copy with numeric columns and ``time_s`` added.

    Needs the columns ``phase, batch_size, prefill_tokens, decode_tokens, kv_tokens, time_ms``;
    token counts must be numbers >= 0 and ``time_ms`` a number > 0. Errors name the column, or
    the row (1-based data row; the file line is one more for the header) and its value.
    """
    missing = [c for c in PROFILE_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)} (a profile needs {', '.join(PROFILE_COLUMNS)})"
        )
    if len(df) == 0:
        raise InputError(f"{source}: the profile has no rows")
    out = df.copy()
    for col in NUMERIC_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{source}: row {i + 1} (line {i + 2}): {col} {df[col].iloc[i]!r} is not a number")
        low = values <= 0 if col == "time_ms" else values < 0
        if low.any():
            i = int(np.argmax(low))
            need = "> 0" if col == "time_ms" else ">= 0"
            raise InputError(f"{source}: row {i + 1} (line {i + 2}): {col} must be {need}, got {df[col].iloc[i]!r}")
        out[col] = values
    out["phase"] = out["phase"].astype(str).str.strip().str.lower()
    bad_phase = ~out["phase"].isin(PHASES[1:])
    if bad_phase.any():
        i = int(np.argmax(bad_phase.to_numpy()))
        raise InputError(
            f"{source}: row {i + 1} (line {i + 2}): phase {df['phase'].iloc[i]!r} is not one of {', '.join(PHASES[1:])}"
        )
    out["time_s"] = out["time_ms"] * 1e-3
    return out


def select_phase(df: pd.DataFrame, phase: str, source: str = "profile") -> pd.DataFrame:
    """Rows of one phase (``decode``, ``prefill``, ``mixed``) or all rows (``all``)."""
    if phase not in PHASES:
        raise InputError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    if phase == "all":
        return df
    sel = df[df["phase"] == phase]
    if sel.empty:
        present = ", ".join(sorted(df["phase"].unique()))
        raise InputError(f"{source}: no rows with phase '{phase}' (phases present: {present})")
    return sel


def prefill_attention_tokens(df: pd.DataFrame) -> np.ndarray:
    """Per row, the sum over its prompt chunks of ``c * (k + c)`` (the BatchTimeModel contract).

    Taken from a ``prefill_attention_tokens`` column when the profile has one; otherwise the
    profiler's shapes are assumed: the row's prompt tokens split evenly over its
    ``batch_size - decode_tokens`` prompts (at least one), none of them cached (``k = 0``).
    """
    if "prefill_attention_tokens" in df:
        return df["prefill_attention_tokens"].to_numpy(dtype=np.float64)
    p = df["prefill_tokens"].to_numpy(dtype=np.float64)
    d = df["decode_tokens"].to_numpy(dtype=np.float64)
    b = df["batch_size"].to_numpy(dtype=np.float64) if "batch_size" in df else d + 1.0
    prompts = np.where(p > 0, np.maximum(b - d, 1.0), 1.0)
    return p * p / prompts


def design_matrix(df: pd.DataFrame, form: str = "four") -> np.ndarray:
    """The regressors of ``form``: ``[1, prefill, decode, kv]`` (``four``), plus the prefill-attention
    pairs (``five``), or ``[1, prefill + decode]`` (``two``)."""
    ones = np.ones(len(df))
    p = df["prefill_tokens"].to_numpy(dtype=np.float64)
    d = df["decode_tokens"].to_numpy(dtype=np.float64)
    if form == "four":
        return np.column_stack([ones, p, d, df["kv_tokens"].to_numpy(dtype=np.float64)])
    if form == "five":
        return np.column_stack([ones, p, d, df["kv_tokens"].to_numpy(dtype=np.float64), prefill_attention_tokens(df)])
    if form == "two":
        return np.column_stack([ones, p + d])
    raise InputError(f"fit form must be 'four', 'five' or 'two', got {form!r}")


# -- the fit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    """A fitted batch-time model with its statistics. Coefficients in seconds (per step / token).

    ``coef_s[name]`` is None for a coefficient the profile does not identify; ``filled`` then
    says which value :attr:`model` uses for it. ``data`` holds the fitted rows with
    ``predicted_s``, ``residual_s`` (measured - predicted) and ``rel_error`` (residual / measured).
    """

    form: str
    names: tuple[str, ...]
    coef_s: dict[str, float | None]
    ci_s: dict[str, tuple[float, float] | None]
    stderr_s: dict[str, float | None]
    unidentified: tuple[str, ...]
    clipped: tuple[str, ...]
    filled: dict[str, float]
    mape: float
    max_error: float
    r2: float
    rows: int
    dof: int
    weighting: str
    data: pd.DataFrame = field(repr=False)
    ci_hc3_s: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    lack_of_fit: dict[str, Any] | None = None

    @property
    def model(self) -> BatchTimeModel:
        """The fitted :class:`BatchTimeModel` (unidentified coefficients at their fill value, or 0)."""
        value = {n: (self.coef_s[n] if self.coef_s[n] is not None else self.filled.get(n, 0.0)) for n in self.names}
        if self.form == "two":
            return BatchTimeModel.two_parameter(value["d0_s"], value["d1_s"])
        return BatchTimeModel(**value)

    @property
    def residuals_s(self) -> np.ndarray:
        return self.data["residual_s"].to_numpy()

    def summary(self) -> dict[str, Any]:
        """JSON-ready: coefficients (null if unidentified), CIs, MAPE, max error, R^2, rows."""
        out: dict[str, Any] = {n: self.coef_s[n] for n in self.names}
        out.update(
            mape=self.mape, max_error=self.max_error, r2=self.r2, rows=self.rows, dof=self.dof,
            ci={n: (list(self.ci_s[n]) if self.ci_s[n] is not None else None) for n in self.names},
            stderr={n: self.stderr_s[n] for n in self.names},
            unidentified=list(self.unidentified), clipped=list(self.clipped), filled=dict(self.filled),
            weighting=self.weighting,
            ci_hc3={n: (list(v) if v is not None else None) for n, v in self.ci_hc3_s.items()},
            interval_methods={"ci": "classical s^2 (X'WX)^-1, Student t (assumes homoscedastic weighted errors)",
                              "ci_hc3": "HC3 heteroscedasticity-consistent sandwich (MacKinnon-White), Student t"},
            lack_of_fit=self.lack_of_fit,
        )
        return out


def _identified_columns(xs: np.ndarray) -> list[int]:
    """Columns that each raise the rank of the ones kept before them (in order)."""
    keep: list[int] = []
    for j in range(xs.shape[1]):
        if not np.any(xs[:, j]):
            continue
        trial = xs[:, keep + [j]]
        if np.linalg.matrix_rank(trial, tol=1e-9 * np.sqrt(len(xs))) == len(keep) + 1:
            keep.append(j)
    return keep


def _wls(xw: np.ndarray, yw: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Weighted-LS solution, its covariance (unscaled columns already), residual variance, dof."""
    coef, *_ = np.linalg.lstsq(xw, yw, rcond=None)
    resid = yw - xw @ coef
    dof = xw.shape[0] - xw.shape[1]
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(xw.T @ xw)
    return coef, cov, s2, dof


def _nonneg_wls(xu, target, w, keep, names, source):
    """Weighted LS on columns ``keep``, redone with bounds >= 0 if a coefficient is negative.

    Returns (coef, stderr, clipped names, unconstrained coef, unconstrained stderr, dof), the
    arrays over all columns (0 / nan outside ``keep`` and for clipped ones).
    """
    from scipy import optimize

    k_all = xu.shape[1]
    xw = xu * w[:, None]
    yw = target * w
    coef, se = np.zeros(k_all), np.full(k_all, np.nan)
    full_beta, full_se = np.zeros(k_all), np.full(k_all, np.nan)
    beta, cov, _, dof = _wls(xw[:, keep], yw)
    full_beta[keep], full_se[keep] = beta, np.sqrt(np.diag(cov))
    free, clipped = list(keep), []
    if np.any(beta < 0):
        res = optimize.lsq_linear(xw[:, keep], yw, bounds=(0.0, np.inf), method="bvls")
        free = [j for j, b in zip(keep, res.x) if b > 0]
        clipped = [names[j] for j, b in zip(keep, res.x) if b <= 0]
        if 0 not in free:
            raise InputError(
                f"{source}: the fitted fixed step cost d0_s is not positive; the profile cannot "
                "support a batch-time model (check its time_ms and token columns)"
            )
        beta, cov, _, dof = _wls(xw[:, free], yw)
    coef[free], se[free] = beta, np.sqrt(np.diag(cov))
    return coef, se, clipped, full_beta, full_se, dof


def fit_batch_time(
    profile_df: pd.DataFrame,
    form: str = "four",
    weighting: str = "relative",
    fill: Mapping[str, float] | BatchTimeModel | None = None,
    confidence: float = 0.95,
    source: str = "profile",
) -> FitResult:
    """Fit ``form`` ('four' or 'two') to a validated profile (:func:`validate_profile`).

    ``fill`` gives values for coefficients the profile cannot identify (a mapping or a
    BatchTimeModel, e.g. a roofline prediction). See the module docstring for the method.
    """
    from scipy import stats

    if form not in FORMS:
        raise InputError(f"fit form must be 'four' or 'two', got {form!r}")
    if weighting not in WEIGHTINGS:
        raise InputError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}")
    if "time_s" not in profile_df:
        profile_df = validate_profile(profile_df, source)
    names = FORMS[form]
    if isinstance(fill, BatchTimeModel):
        fill = fill.to_dict()
    fill = dict(fill or {})
    x = design_matrix(profile_df, form)
    y = profile_df["time_s"].to_numpy(dtype=np.float64)
    n, k_all = x.shape
    w = 1.0 / y if weighting == "relative" else np.ones(n)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    xs = x / scale * w[:, None]
    keep = _identified_columns(xs)  # on the weighted, column-scaled regressors
    unidentified = tuple(names[j] for j in range(k_all) if j not in keep)
    if names[0] in unidentified:  # pragma: no cover - the ones column is never dependent first
        raise InputError(f"{source}: the fixed step cost d0_s cannot be identified")
    k = len(keep)
    if n < k + 2:
        raise InputError(
            f"{source}: {n} rows are too few to fit {k} coefficient(s) with confidence intervals "
            f"(need at least {k + 2})"
        )
    filled = {nm: float(fill[nm]) for nm in unidentified if fill.get(nm) is not None}
    offset = np.zeros(n)
    for j, nm in enumerate(names):
        if nm in filled:
            offset += x[:, j] * filled[nm]
    target = y - offset
    xu = x / scale
    solution = _nonneg_wls(xu, target, w, keep, names, source)
    if weighting == "relative":
        # feasible GLS: weights from the fitted times, not the noisy measured ones (weights of
        # 1/measured favour rows with negative noise and bias every coefficient low by ~noise^2)
        for _ in range(3):
            pred_w = offset + xu @ solution[0]
            solution = _nonneg_wls(xu, target, 1.0 / pred_w, keep, names, source)
    coef_scaled, se_scaled, clipped, full_beta, full_se, dof = solution
    coef_s = coef_scaled / scale
    se = se_scaled / scale
    t = float(stats.t.ppf(0.5 + confidence / 2.0, dof))

    coefs: dict[str, float | None] = {}
    cis: dict[str, tuple[float, float] | None] = {}
    ses: dict[str, float | None] = {}
    for j, nm in enumerate(names):
        if nm in unidentified:
            coefs[nm], cis[nm], ses[nm] = None, None, None
        elif nm in clipped:
            b, e = full_beta[j] / scale[j], full_se[j] / scale[j]
            coefs[nm], cis[nm], ses[nm] = 0.0, (max(b - t * e, 0.0), max(b + t * e, 0.0)), float(e)
        else:
            c = float(coef_s[j])
            coefs[nm], cis[nm], ses[nm] = c, (c - t * se[j], c + t * se[j]), float(se[j])

    full = np.array([coefs[nm] if coefs[nm] is not None else filled.get(nm, 0.0) for nm in names])
    pred = x @ full
    w_final = 1.0 / np.maximum(pred, 1e-12) if weighting == "relative" else np.ones(n)
    free = [j for j in keep if names[j] not in clipped]
    hc3_se = _hc3_stderr(x[:, free] * w_final[:, None], (y - pred) * w_final)
    ci_hc3: dict[str, tuple[float, float] | None] = {nm: None for nm in names}
    for j, e in zip(free, hc3_se):
        c = coefs[names[j]]
        ci_hc3[names[j]] = (c - t * e, c + t * e)
    lof = lack_of_fit_test(profile_df, (y - pred) * w_final, len(free), y - pred)
    resid = y - pred
    rel = resid / y
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    data = profile_df[[c for c in ("phase", "batch_size", "prefill_tokens", "decode_tokens", "kv_tokens", "time_s")]].copy()
    data["predicted_s"] = pred
    data["residual_s"] = resid
    data["rel_error"] = rel
    return FitResult(
        form=form, names=names, coef_s=coefs, ci_s=cis, stderr_s=ses, unidentified=unidentified,
        clipped=tuple(clipped), filled=filled, mape=float(np.mean(np.abs(rel))),
        max_error=float(np.max(np.abs(rel))),
        r2=float(1.0 - np.sum(resid**2) / ss_tot) if ss_tot > 0 else float("nan"),
        rows=n, dof=int(dof), weighting=weighting, data=data, ci_hc3_s=ci_hc3, lack_of_fit=lof,
    )


def _hc3_stderr(xw: np.ndarray, resid_w: np.ndarray) -> np.ndarray:
    """HC3 standard errors of weighted least squares (MacKinnon & White 1985).

    ``cov = (X'X)^-1 X' diag(e_i^2 / (1 - h_ii)^2) X (X'X)^-1`` on the weighted design: valid
    when the errors' variance differs from row to row (as step-time errors that are lack of fit
    do), unlike ``s^2 (X'X)^-1``.
    """
    bread = np.linalg.inv(xw.T @ xw)
    h = np.einsum("ij,jk,ik->i", xw, bread, xw)
    u = resid_w / np.clip(1.0 - h, 1e-12, None)
    meat = (xw * (u**2)[:, None]).T @ xw
    return np.sqrt(np.clip(np.diag(bread @ meat @ bread), 0.0, None))


def lack_of_fit_test(df: pd.DataFrame, resid_w: np.ndarray, k: int,
                     resid_s: np.ndarray | None = None) -> dict[str, Any] | None:
    """Lack of fit: are the residuals larger than the timing noise?

    With the profiler's per-row repetition statistics (``reps``, ``time_ms_p10``, ``time_ms_p90``)
    the noise of each row's mean time is known: ``sd = (p90 - p10) / 2.563`` (normal quantiles),
    ``se = sd / sqrt(reps)``, and ``chi2 = sum((residual / se)^2)`` on ``n - k`` degrees of
    freedom tests whether the residuals are noise (method ``replicate_spread``; ``ratio`` =
    chi2 / dof, ~1 for a model that fits to within noise). Otherwise, with replicated batch shapes
    (rows with equal prefill, decode, kv tokens), the classical F test below (method ``replicates``).

    Splits the weighted residual sum of squares into pure error (the scatter of replicates around
    their own mean) and lack of fit (the group means around the model):
    ``F = (SS_lof / (m - k)) / (SS_pe / (n - m))`` with ``m`` distinct shapes. A small p-value means
    the model's errors are not timing noise, and its classical intervals are too narrow.
    None when the profile has no replicates.
    """
    from scipy import stats

    if resid_s is not None and {"reps", "time_ms_p10", "time_ms_p90"} <= set(df.columns):
        reps = df["reps"].to_numpy(dtype=np.float64)
        sd_s = (df["time_ms_p90"].to_numpy(dtype=np.float64) - df["time_ms_p10"].to_numpy(dtype=np.float64)) / 2.563e3
        se_s = sd_s / np.sqrt(np.maximum(reps, 1.0))
        ok = se_s > 0
        dof = int(ok.sum()) - k
        if dof > 0:
            chi2 = float(np.sum((resid_s[ok] / se_s[ok]) ** 2))
            return {"method": "replicate_spread", "chi2": chi2, "dof": dof, "ratio": chi2 / dof,
                    "p_value": float(stats.chi2.sf(chi2, dof)),
                    "median_abs_residual_over_noise": float(np.median(np.abs(resid_s[ok] / se_s[ok])))}
    keys = df[["prefill_tokens", "decode_tokens", "kv_tokens"]].astype(np.int64).astype(str).agg("/".join, axis=1)
    groups = pd.Series(resid_w).groupby(keys.to_numpy())
    n, m = len(resid_w), groups.ngroups
    ss_pe = float(groups.apply(lambda g: float(((g - g.mean()) ** 2).sum())).sum())
    ss_res = float(np.sum(resid_w**2))
    ss_lof = ss_res - ss_pe
    dof_pe, dof_lof = n - m, m - k
    if dof_pe <= 0 or dof_lof <= 0 or ss_pe <= 0:
        return None
    f = (ss_lof / dof_lof) / (ss_pe / dof_pe)
    return {"method": "replicates", "F": float(f), "p_value": float(stats.f.sf(f, dof_lof, dof_pe)), "shapes": int(m),
            "dof_lack_of_fit": int(dof_lof), "dof_pure_error": int(dof_pe),
            "lack_of_fit_share": float(ss_lof / ss_res) if ss_res > 0 else 0.0}


class BatchTimeFit:
    """scikit-learn-style wrapper: ``BatchTimeFit(form='four').fit(profile_df).predict(df)``.

    Learned attributes: ``result_`` (:class:`FitResult`), ``model_`` (BatchTimeModel),
    ``coef_`` and ``ci_`` (dicts, seconds), ``mape_``.
    """

    def __init__(self, form: str = "four", weighting: str = "relative", fill=None, confidence: float = 0.95):
        self.form = form
        self.weighting = weighting
        self.fill = fill
        self.confidence = confidence

    def fit(self, profile_df: pd.DataFrame) -> "BatchTimeFit":
        self.result_ = fit_batch_time(profile_df, self.form, self.weighting, self.fill, self.confidence)
        self.model_ = self.result_.model
        self.coef_ = self.result_.coef_s
        self.ci_ = self.result_.ci_s
        self.mape_ = self.result_.mape
        return self

    def predict(self, profile_df: pd.DataFrame) -> np.ndarray:
        """Predicted step times [s] of the profile's rows."""
        m = self.model_
        return np.asarray(
            m.step_time(
                profile_df["prefill_tokens"].to_numpy(dtype=np.float64),
                profile_df["decode_tokens"].to_numpy(dtype=np.float64),
                profile_df["kv_tokens"].to_numpy(dtype=np.float64),
            ),
            dtype=np.float64,
        )


# -- outputs -----------------------------------------------------------------------------------


def plot_residuals(results: Sequence[FitResult]):
    """Relative residual (%) of each fit vs measured step time and vs KV tokens, by phase.

    Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(10, 3.4 * len(results)), squeeze=False)
    for row, res in zip(axes, results):
        d = res.data
        label = "four-coefficient" if res.form == "four" else "two-parameter"
        for phase in dict.fromkeys(d["phase"]):
            sel = d["phase"] == phase
            row[0].scatter(d["time_s"][sel] * 1e3, 100 * d["rel_error"][sel], s=14, label=phase)
            row[1].scatter(d["kv_tokens"][sel], 100 * d["rel_error"][sel], s=14, label=phase)
        for ax in row:
            ax.axhline(0, color="k", lw=0.8)
            ax.grid(True, alpha=0.3)
            ax.set_ylabel("(measured - fit) / measured (%)")
        row[0].set_xscale("log")
        row[0].set_xlabel("measured step time (ms)")
        row[1].set_xlabel("KV tokens read in the step")
        row[0].set_title(f"{label} model: MAPE {100 * res.mape:.2f}%, max {100 * res.max_error:.2f}%")
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def fit_report(four: FitResult, two: FitResult, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The ``calibrate fit --json`` object: four-coefficient fit at top level, ``two_param`` beside."""
    out = four.summary()
    for nm in FOUR:  # filled values are reported, marked in "filled"
        if out[nm] is None and nm in four.filled:
            out[nm] = four.filled[nm]
    out["two_param"] = {
        "d0_s": two.coef_s["d0_s"], "d1_s": two.coef_s["d1_s"], "mape": two.mape, "max_error": two.max_error,
        "r2": two.r2, "ci": {n: (list(two.ci_s[n]) if two.ci_s[n] else None) for n in TWO},
    }
    out["notes"] = list(notes)
    return out


def format_report(four: FitResult, two: FitResult, notes: Sequence[str] = ()) -> str:
    """A readable table of both fits."""
    lines = [f"{'coefficient':<14}{'value':>12}{'95% CI':>28}   (rows {four.rows}, weighting {four.weighting})"]
    for res, title in ((four, "four-coefficient model"), (two, "two-parameter model d0 + d1*(prefill + decode)")):
        lines.append(f"-- {title}")
        for nm in res.names:
            c, ci = res.coef_s[nm], res.ci_s[nm]
            if c is None:
                value = f"{res.filled[nm]:.4e}" if nm in res.filled else "n/a"
                lines.append(f"{nm:<14}{value:>12}{'not identified' + (' (filled)' if nm in res.filled else ''):>28}")
                continue
            tag = " clipped" if nm in res.clipped else ""
            lines.append(f"{nm:<14}{c:>12.4e}{f'[{ci[0]:.3e}, {ci[1]:.3e}]':>28}{tag}")
        lines.append(f"{'MAPE':<14}{100 * res.mape:>11.2f}%   max error {100 * res.max_error:.2f}%   R^2 {res.r2:.5f}")
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)


def write_preset(path: str | Path, four: FitResult, two: FitResult | None = None, source: str = "",
                 phase: str = "all", extra: Mapping[str, Any] | None = None,
                 energy: Mapping[str, Any] | None = None) -> Path:
    """Write the four-coefficient fit as a preset YAML that ``BatchTimeModel.from_yaml`` reads.

    Raises InputError if a coefficient was neither identified nor filled (the preset would
    silently hold 0 for it).
    """
    import yaml

    missing = [n for n in four.unidentified if n not in four.filled]
    if missing:
        raise InputError(
            f"cannot write a preset: the profile does not identify {', '.join(missing)}; profile those "
            "steps, or give --gpu and --model to take the value from the roofline"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {k: float(v) for k, v in four.model.to_dict().items()}
    meta: dict[str, Any] = {
        "created_by": "fluidserve calibrate fit",
        "source": str(source),
        "phase": phase,
        "rows": four.rows,
        "weighting": four.weighting,
        "mape": four.mape,
        "max_error": four.max_error,
        "r2": four.r2,
        "ci95": {n: [float(a) for a in four.ci_s[n]] if four.ci_s[n] else None for n in FOUR},
        "unidentified": list(four.unidentified),
        "filled": dict(four.filled),
        "clipped": list(four.clipped),
    }
    if two is not None:
        meta["two_param"] = {"d0_s": two.coef_s["d0_s"], "d1_s": two.coef_s["d1_s"], "mape": two.mape,
                             "max_error": two.max_error}
    meta.update(extra or {})
    data["metadata"] = meta
    if energy is not None:  # the step-energy fit (fluidserve.calibration.energy_fit), beside the step time
        data["energy"] = dict(energy)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- command: python -m fluidserve calibrate fit -----------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("profile", help="step-profile CSV (phase, batch_size, prefill_tokens, decode_tokens, kv_tokens, time_ms)")
    parser.add_argument("--phase", choices=PHASES, default="all", help="fit only rows of this phase (default: all)")
    parser.add_argument("--weighting", choices=WEIGHTINGS, default="relative",
                        help="relative: minimise squared relative errors (default); none: ordinary LS")
    parser.add_argument("--gpu", help="GPU preset for roofline values of coefficients the profile does not identify "
                        "(default: the profile's gpu column if it names a preset)")
    parser.add_argument("--model", help="model preset, as --gpu (default: the profile's model column)")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel degree for the roofline fill")
    parser.add_argument("--out", help="write the fitted coefficients as a batch-time preset YAML")
    parser.add_argument("--output-dir", help="directory for the residual plot (fit_residuals.png/.pdf)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--idle-w", type=float, default=None,
                        help="measured board power with no step running, W (stored with the energy fit)")


def _profile_value(df: pd.DataFrame, col: str) -> str | None:
    if col in df and df[col].nunique(dropna=True) == 1:
        return str(df[col].dropna().iloc[0])
    return None


def roofline_fill(df: pd.DataFrame, gpu: str | None, model: str | None, tp: int,
                  explicit: bool) -> tuple[BatchTimeModel | None, str | None]:
    """Roofline coefficients for filling, and a note; from the flags or the profile's columns."""
    from fluidserve.calibration.roofline import predict_batch_time

    gpu = gpu or _profile_value(df, "gpu")
    model = model or _profile_value(df, "model")
    if gpu is None or model is None:
        return None, None
    try:
        return predict_batch_time(gpu, model, tp), f"roofline {gpu} / {model} / tp={tp}"
    except InputError:
        if explicit:
            raise
        return None, None


@cli_errors
def main(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a directory; give the preset file, e.g. {Path(args.out) / 'preset.yaml'}")
    df = select_phase(read_profile(args.profile), args.phase, args.profile)
    need_fill = not (df["prefill_tokens"] > 0).any() or not (df["decode_tokens"] > 0).any()
    fill, fill_note = (None, None)
    if need_fill or args.gpu or args.model:
        fill, fill_note = roofline_fill(df, args.gpu, args.model, args.tp, explicit=bool(args.gpu or args.model))
    four = fit_batch_time(df, "four", args.weighting, fill, source=args.profile)
    two = fit_batch_time(df, "two", args.weighting, source=args.profile)
    five = None
    if (df["prefill_tokens"] > 0).any() and len(df) >= 8:
        five = fit_batch_time(df, "five", args.weighting, fill, source=args.profile)
    notes = []
    for nm in four.unidentified:
        why = {
            "d1_prefill_s": "the profile has no prefill tokens",
            "d1_decode_s": "the profile has no decode tokens",
            "d2_kv_s": "kv_tokens does not vary independently of the other columns",
        }.get(nm, "its column adds no information")
        if nm in four.filled:
            notes.append(f"{nm} not identified ({why}); value from the {fill_note}")
        else:
            notes.append(f"{nm} not identified ({why}); reported as null (give --gpu and --model for a roofline value)")
    for nm in four.clipped:
        notes.append(f"{nm} came out negative unconstrained and is held at 0 (non-negative fit)")
    report = fit_report(four, two, notes)
    report.update(source=str(args.profile), phase=args.phase)
    from fluidserve.calibration.energy_fit import cli_section

    energy = cli_section(df, four.model, getattr(args, "idle_w", None), args.profile)
    if energy is not None:
        report["energy"] = energy["report"]
    if five is not None:
        report["with_prefill_attention"] = five.summary()
    if args.out:
        report["preset"] = str(write_preset(args.out, four, two, args.profile, args.phase,
                                            energy=None if energy is None else energy["preset"]))
    if args.output_dir:
        from fluidserve.calibration.roofline import save_figure

        paths = save_figure(plot_residuals([four, two]), Path(args.output_dir) / "fit_residuals")
        report["plots"] = [str(p) for p in paths]
    if args.json:
        print(to_json(report))
        return 0
    print(f"fit of {args.profile} (phase {args.phase})")
    print(format_report(four, two, notes))
    for res, title in ((four, "four-coefficient"), (five, "with prefill attention")):
        if res is None:
            continue
        hc3 = ", ".join(f"{n} [{a:.3e}, {b:.3e}]" for n, v in res.ci_hc3_s.items() if v for a, b in [v])
        print(f"-- {title}: HC3 (heteroscedasticity-consistent) 95% CI: {hc3}")
        if res is five:
            print(f"   MAPE {100 * res.mape:.2f}%   d3_prefill_attn_s {res.coef_s['d3_prefill_attn_s']}")
        lof = res.lack_of_fit
        if lof and lof["method"] == "replicate_spread":
            print(f"   lack of fit: chi2/dof = {lof['ratio']:.3g} (residuals vs the rows' own timing noise from "
                  f"reps and p10/p90), p = {lof['p_value']:.2g}: residuals are "
                  + ("lack of fit, not noise; read the HC3 intervals" if lof["p_value"] < 0.01 else "within noise"))
        elif lof:
            print(f"   lack of fit: F = {lof['F']:.1f} on ({lof['dof_lack_of_fit']}, {lof['dof_pure_error']}) dof, "
                  f"p = {lof['p_value']:.2g}; {100 * lof['lack_of_fit_share']:.0f}% of the residual sum of squares "
                  "is lack of fit (not timing noise)")
        else:
            print("   lack of fit: no replicated batch shapes to test it")
    if energy is not None:
        print(energy["text"])
    if "preset" in report:
        print(f"preset: {report['preset']}")
    for p in report.get("plots", []):
        print(f"plot: {p}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m fluidserve.calibration.fit")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
