"""Uncertainty bands of the LP replay's headline numbers from the fitted parameters' uncertainty.

The simulated policies are not re-planned: the LP's solution and every replay's steps stay as
they are; only what the fits leave uncertain is varied.

* **Energy** (``energy_saving``, ``saving_vs_best_single_clock``, ``lp_vs_sim_energy_error``): the
  replays' steps are re-priced ``n`` times, each with (a) every measured step-energy model drawn
  from its fit's normal approximation (the covariance stored in the preset by
  ``calibrate fit``; pools that transfer a measured model to another GPU use the same draw), and
  (b) each GPU family's DVFS power parameters (``exponent``, ``memory_activity``) taken from one
  refit with the published values drawn within their ranges (:meth:`FamilyFit.samples`). The d0
  compute share (a time parameter) is kept, so every step keeps its simulated duration. The band
  is the 2.5-97.5% range of the results.
* **SLO attainment**: the LP layout is simulated again with every calibrated pool's step-time
  coefficients at the low and at the high end of their 95% intervals (``ci95`` in the preset)
  and the d0 compute share at the ends of its interval: an optimistic and a pessimistic run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.energy import FIELDS, StepEnergyModel
from fluidserve.policy.dvfs_fit import GPU_FAMILY, PARAMS, fit_family
from fluidserve.policy.lp_config import LpConfig
from fluidserve.policy.problem import PoolModel
from fluidserve.yamlio import read_yaml

COEFS = ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s")


def _preset(spec_preset: str | None, base_dir: str | None) -> tuple[Path | None, dict]:
    if spec_preset is None:
        return None, {}
    path = Path(spec_preset)
    if not path.is_absolute() and base_dir is not None and not path.exists():
        path = Path(base_dir) / path
    return path, read_yaml(path, "preset")


def _energy_draws(cfg: LpConfig, pools: list[PoolModel], n: int, rng) -> list[list[StepEnergyModel | None]]:
    """Per pool, ``n`` step-energy models drawn from the preset fit's covariance (or the model itself)."""
    draws_by_file: dict[Path, np.ndarray] = {}
    out = []
    for spec, pool in zip(cfg.pools, pools):
        if pool.step_energy is None or spec.energy is None or spec.energy.preset is None:
            out.append([pool.step_energy] * n)
            continue
        path, data = _preset(spec.energy.preset, cfg.base_dir)
        sec = data.get("energy", {})
        cov = np.asarray(sec.get("metadata", {}).get("cov", np.zeros((4, 4))), dtype=float)
        if path not in draws_by_file:
            mean = np.array([float(sec.get(k, 0.0)) for k in FIELDS])
            draws_by_file[path] = rng.multivariate_normal(mean, cov, size=n)
        src = StepEnergyModel.from_yaml(path)
        models = []
        for d in draws_by_file[path]:
            m = StepEnergyModel(max(float(d[0]), 1e-6), *map(float, d[1:]), idle_w=src.idle_w)
            if spec.energy.power_scale is not None:
                m = m.transferred(BatchTimeModel.from_yaml(path), pool.batch_time, spec.energy.power_scale)
            kw = {k: getattr(spec.energy, k) for k in (*FIELDS, "idle_w") if getattr(spec.energy, k) is not None}
            models.append(dataclasses.replace(m, **kw) if kw else m)
        out.append(models)
    return out


def _family_draws(cfg: LpConfig, n: int) -> dict[str, np.ndarray]:
    fams = {GPU_FAMILY[p.power.gpu] for p in cfg.pools if p.power.gpu in GPU_FAMILY}
    out = {}
    for fam in sorted(fams):
        s = fit_family(fam).samples()
        out[fam] = s[np.arange(n) % len(s)]
    return out


def energy_variants(cfg: LpConfig, pools: list[PoolModel], n: int = 40, seed: int = 0) -> list[list[PoolModel]]:
    """``n`` variants of the pools with re-drawn energy and DVFS power parameters (see module doc)."""
    rng = np.random.default_rng(seed)
    energy = _energy_draws(cfg, pools, n, rng)
    fam = _family_draws(cfg, n)
    variants = []
    for i in range(n):
        row = []
        for j, (spec, pool) in enumerate(zip(cfg.pools, pools)):
            freq = pool.freq
            f = GPU_FAMILY.get(spec.power.gpu or "")
            if f is not None and spec.power.exponent is None and spec.power.memory_activity is None:
                a, m = fam[f][i][PARAMS.index("exponent")], fam[f][i][PARAMS.index("memory_activity")]
                freq = dataclasses.replace(freq, exponent=float(a), memory_activity=float(m))
            row.append(dataclasses.replace(pool, freq=freq, step_energy=energy[j][i]))
        variants.append(row)
    return variants


def time_variants(cfg: LpConfig, pools: list[PoolModel]) -> dict[str, list[PoolModel]]:
    """Optimistic / pessimistic pools: step-time coefficients at the ends of their 95% intervals."""
    out = {}
    for end, idx in (("optimistic", 0), ("pessimistic", 1)):
        row = []
        for spec, pool in zip(cfg.pools, pools):
            _, data = _preset(spec.batch_time.preset, cfg.base_dir)
            ci = (data.get("metadata") or {}).get("ci95") or {}
            bt = pool.batch_time
            if ci:
                vals = {k: max(float(ci[k][idx]), 0.0) if ci.get(k) else getattr(bt, k) for k in COEFS}
                vals["d0_s"] = max(vals["d0_s"], 1e-6)
                bt = BatchTimeModel(**vals)
            freq = pool.freq
            f = GPU_FAMILY.get(spec.power.gpu or "")
            if f is not None and not (spec.power.compute_share or {}).get("d0_s"):
                lo, hi = fit_family(f).interval()["d0_compute_share"]
                share = dict(freq.compute_share)
                share["d0_s"] = lo if idx == 0 else hi
                freq = dataclasses.replace(freq, compute_share=share)
            row.append(dataclasses.replace(pool, batch_time=bt, freq=freq))
        out[end] = row
    return out


def percentile_band(values) -> list[float]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return [float("nan"), float("nan")]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
