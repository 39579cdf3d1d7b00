"""DVFS response fitted to published frequency sweeps (``fluidserve/data/dvfs_published.csv``).

Nothing in this repository changes GPU clocks, so the clock response of step time and power
comes from published measurements. Each row of the data file is one published number with its
citation, GPU, model, phase, clock, reference clock and a range (``low``..``high``: the stated
range, or the rounding of the printed figure). Quantities:

* ``time_ratio`` / ``energy_ratio``: latency / energy at ``clock_mhz`` over the same at
  ``ref_clock_mhz`` of a generation (decode-dominated) workload;
* ``decode_power_w``: mean board power of decode at the default clock;
* ``max_energy_saving`` and ``system_energy_saving``: recorded for reference (``fit = 0``):
  an "up to" figure without its clock, and service-level savings that mix clock, instance
  count and parallelism.

The model (:class:`~fluidserve.policy.frequency.FrequencyModel`) is evaluated on a decode step
dominated by its fixed cost ``d0_s`` (weights read + launch overheads; at the published
workloads' batch sizes the per-token terms are small), so each row is a function of three
parameters per GPU family: ``exponent`` (dynamic power ~ (f / f_max)^exponent),
``memory_activity`` (dynamic power of memory-bound time relative to compute-bound time) and the
compute-bound share of ``d0_s``. :func:`fit_family` solves the weighted least squares (residuals in
units of each row's half range) and :meth:`FamilyFit.interval` repeats it with every published
value drawn uniformly from its range, giving 95% intervals. A family without a decode-power row
borrows the other families' rows of that kind as a share of TDP (reported in ``borrowed``).

Idle power as a share of TDP (needed because the published numbers are ratios): Hopper from our
own H100 measurement (72.3 W idle of 700 W, ``calibration/data/h100_power_overhead.json``),
Ampere the A100 preset's 60 W of 400 W (assumed, not measured).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError
from fluidserve.policy.frequency import FrequencyModel

DATA_FILE = Path(__file__).resolve().parents[1] / "data" / "dvfs_published.csv"
FITTED_QUANTITIES = ("time_ratio", "energy_ratio", "decode_power_w")
#: family -> idle power as a share of TDP (see the module docstring)
IDLE_SHARE: dict[str, float] = {"hopper": 72.3 / 700.0, "ampere": 60.0 / 400.0}
#: GPU power preset name -> family
GPU_FAMILY: dict[str, str] = {"H100-SXM": "hopper", "H200": "hopper", "A100-SXM": "ampere", "L40S": "ampere"}
PARAMS = ("exponent", "memory_activity", "d0_compute_share")
_STEP = BatchTimeModel(1.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class PublishedPoint:
    """One published number (see the data file's columns)."""

    source_id: str
    citation: str
    url: str
    gpu: str
    gpu_family: str
    f_max_mhz: float
    model: str
    phase: str
    clock_mhz: float | None
    ref_clock_mhz: float | None
    quantity: str
    value: float
    low: float
    high: float
    fit: bool
    quote: str

    @property
    def half_range(self) -> float:
        return max((self.high - self.low) / 2.0, 1e-4 * abs(self.value), 1e-9)


def read_points(path: str | Path = DATA_FILE) -> list[PublishedPoint]:
    """The data file's rows; errors name the file, row and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"DVFS data file not found: {path}")
    out = []
    with path.open(newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=1):
            try:
                num = {k: (float(row[k]) if row[k] not in ("", None) else None)
                       for k in ("f_max_mhz", "clock_mhz", "ref_clock_mhz", "value", "low", "high")}
                for k in ("f_max_mhz", "value", "low", "high"):
                    if num[k] is None:
                        raise ValueError(f"{k} is empty")
                out.append(PublishedPoint(
                    source_id=row["source_id"], citation=row["citation"], url=row["url"], gpu=row["gpu"],
                    gpu_family=row["gpu_family"], model=row["model"], phase=row["phase"],
                    quantity=row["quantity"], fit=row["fit"].strip() == "1", quote=row["quote"], **num,
                ))
            except (KeyError, ValueError) as exc:
                raise InputError(f"{path}: row {i} (line {i + 1}): {exc}") from None
    return out


def family_model(family: str, params, f_max_mhz: float, peak_w: float = 1000.0) -> FrequencyModel:
    """The FrequencyModel of ``family`` with ``params`` = (exponent, memory_activity, d0 share)."""
    a, m, s0 = (float(x) for x in params)
    return FrequencyModel(f_max_mhz=f_max_mhz, idle_w=IDLE_SHARE[family] * peak_w, peak_w=peak_w,
                          memory_activity=m, exponent=a, compute_share={"d0_s": s0})


def predict(point: PublishedPoint, family: str, params) -> float:
    """The model's value of a published quantity (decode-power rows: as a share of TDP x TDP)."""
    if point.quantity == "decode_power_w":
        peak = 700.0
        fm = family_model(family, params, point.f_max_mhz, peak)
        return fm.step_power_w(_STEP, point.f_max_mhz, 0, 0, 0)
    fm = family_model(family, params, point.f_max_mhz)
    f, ref = point.clock_mhz, point.ref_clock_mhz
    if point.quantity == "time_ratio":
        return fm.batch_time(_STEP, f).d0_s / fm.batch_time(_STEP, ref).d0_s
    if point.quantity == "energy_ratio":
        return fm.energy_model(_STEP, f).d0_s / fm.energy_model(_STEP, ref).d0_s
    raise InputError(f"quantity {point.quantity!r} has no model prediction")


@dataclass(frozen=True)
class FamilyFit:
    """Fitted DVFS parameters of one GPU family, with 95% intervals from the published ranges."""

    family: str
    params: dict[str, float]
    points: tuple[PublishedPoint, ...] = ()
    borrowed: tuple[str, ...] = ()
    residuals: dict[str, float] = field(default_factory=dict)

    def frequency_overrides(self) -> dict[str, object]:
        """Keyword overrides for :meth:`FrequencyModel.preset`."""
        return {"exponent": self.params["exponent"], "memory_activity": self.params["memory_activity"],
                "compute_share": {"d0_s": self.params["d0_compute_share"]}}

    def samples(self, n: int = 60) -> np.ndarray:
        """Parameter sets refitted with every published value drawn uniformly from its range.

        Rows: (exponent, memory_activity, d0_compute_share); deterministic (seeded).
        """
        return _interval_samples(self.family, n, tuple(self.params[k] for k in PARAMS))

    def interval(self, n: int = 60) -> dict[str, tuple[float, float]]:
        """95% intervals of the parameters from :meth:`samples`."""
        lo, hi = np.percentile(self.samples(n), [2.5, 97.5], axis=0)
        return {k: (float(a), float(b)) for k, a, b in zip(PARAMS, lo, hi)}


def _family_points(family: str, points: list[PublishedPoint]) -> tuple[list[PublishedPoint], tuple[str, ...]]:
    own = [p for p in points if p.fit and p.gpu_family == family and p.quantity in FITTED_QUANTITIES]
    borrowed: tuple[str, ...] = ()
    if not any(p.quantity == "decode_power_w" for p in own):
        extra = [p for p in points if p.fit and p.quantity == "decode_power_w" and p.gpu_family != family]
        own += extra
        borrowed = tuple(p.source_id for p in extra)
    if not own:
        raise InputError(f"no published DVFS numbers for GPU family '{family}' in {DATA_FILE.name}")
    return own, borrowed


def _solve(family: str, pts: list[PublishedPoint], values: np.ndarray, starts=(0.5, 1.5, 3.0)) -> np.ndarray:
    from scipy import optimize

    half = np.array([p.half_range for p in pts])

    def resid(x):
        return np.array([predict(p, family, x) for p in pts]) - values

    best = None
    for a0 in starts:
        r = optimize.least_squares(lambda x: resid(x) / half, x0=[a0, 0.3, 0.1] if np.isscalar(a0) else a0,
                                   bounds=([0.05, 0.0, 0.0], [4.0, 1.0, 1.0]), xtol=1e-12, ftol=1e-12)
        if best is None or r.cost < best.cost:
            best = r
    return best.x


def fit_family(family: str, path: str | Path = DATA_FILE) -> FamilyFit:
    """Least-squares DVFS parameters of ``family`` at the published central values."""
    return _fit_cached(family, str(path))


@lru_cache(maxsize=None)
def _fit_cached(family: str, path: str) -> FamilyFit:
    if family not in IDLE_SHARE:
        raise InputError(f"unknown GPU family '{family}'; fitted families: {', '.join(IDLE_SHARE)}")
    pts, borrowed = _family_points(family, read_points(path))
    x = _solve(family, pts, np.array([p.value for p in pts]))
    return FamilyFit(
        family=family, params=dict(zip(PARAMS, map(float, x))), points=tuple(pts), borrowed=borrowed,
        residuals={f"{p.source_id}:{p.quantity}": float(predict(p, family, x) - p.value) for p in pts},
    )


@lru_cache(maxsize=None)
def _interval_samples(family: str, n: int, start: tuple[float, ...], seed: int = 0) -> np.ndarray:
    pts, _ = _family_points(family, read_points(DATA_FILE))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        values = np.array([rng.uniform(p.low, p.high) for p in pts])
        out.append(_solve(family, pts, values, starts=(np.array(start),)))
    return np.array(out)


def fitted_frequency_model(gpu: str, **overrides) -> FrequencyModel:
    """:meth:`FrequencyModel.preset` of ``gpu`` (which applies its family's fitted parameters)."""
    return FrequencyModel.preset(gpu, **overrides)


def capped_point_check(profile_path: str | Path, gpu: str, clock_floor_mhz: float = 1960.0) -> list[dict]:
    """Our own test of the clock response: decode points where the GPU lowered its own clock.

    Fits the step time and step energy on the decode points that ran at full clock
    (``sm_clock_mhz >= clock_floor_mhz``), predicts each lower-clock decode point at full clock,
    then applies the fitted DVFS response (:func:`fitted_frequency_model`) and reports, per point:
    the measured clock and power, the clock at which the model's power equals the measured power
    (``predicted_clock_mhz``), and the measured vs predicted (at the measured clock) step time and
    energy. Nothing here is fitted to those points.
    """
    from scipy import optimize

    from fluidserve.calibration.energy_fit import fit_step_energy
    from fluidserve.calibration.fit import fit_batch_time, read_profile

    df = read_profile(profile_path)
    dec = df[df["phase"] == "decode"]
    full = dec[dec["sm_clock_mhz"] >= clock_floor_mhz]
    low = dec[dec["sm_clock_mhz"] < clock_floor_mhz]
    bt = fit_batch_time(full, fill={"d1_prefill_s": 0.0}).model
    em = fit_step_energy(full).model
    fm = fitted_frequency_model(gpu)
    out = []
    for r in low.itertuples(index=False):
        args = (r.prefill_tokens, r.decode_tokens, r.kv_tokens)

        def power(f):
            return fm.step_power_w(bt, f, *args, step_energy=em)

        p_full = power(fm.f_max_mhz)
        measured_w = float(r.avg_power_w)
        f_lo = 0.3 * fm.f_max_mhz
        if p_full <= measured_w:
            f_pred = fm.f_max_mhz  # the model sees no reason to throttle
        elif power(f_lo) > measured_w:
            f_pred = None  # the model's power stays above the measured power down to 30% clock
        else:
            f_pred = float(optimize.brentq(lambda f: power(f) - measured_w, f_lo, fm.f_max_mhz))
        f_meas = float(r.sm_clock_mhz)
        out.append({
            "batch_size": int(r.batch_size), "kv_tokens": int(r.kv_tokens),
            "measured_clock_mhz": f_meas, "predicted_clock_mhz": f_pred, "measured_power_w": measured_w,
            "predicted_power_at_full_clock_w": p_full,
            "measured_time_s": float(r.time_s),
            "predicted_time_s": float(fm.batch_time(bt, f_meas).step_time(*args)),
            "measured_energy_j": float(r.energy_j),
            "predicted_energy_j": float(fm.energy_model(bt, f_meas, em).step_time(*args)),
        })
    return out
