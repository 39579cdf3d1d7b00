"""GPU clock (DVFS) and power model: step time and step energy at SM clock ``f``.

Step time at clock ``f`` keeps the batch-time model's linear form; each coefficient splits into
a compute-bound share ``s`` that scales with ``f_max / f`` and a memory/host-bound rest that
does not::

    c(f) = c * (s * f_max / f + (1 - s))          for c in d0_s, d1_prefill_s, d1_decode_s, d2_kv_s

Roofline defaults (Llama-class dense models, bf16): ``d1_prefill`` and ``d1_decode`` are the
per-token GEMM FLOPs (compute-bound, s = 1); ``d2_kv`` is the attention's KV read (memory-bound,
s = 0); ``d0`` is mostly the per-step weight read and host/launch overhead (s = 0.1).

Power while the GPU runs a step is idle power plus a dynamic part that scales as
``(f / f_max) ** exponent`` and depends on what the step does: fully compute-bound time draws
``peak_w`` at ``f_max``, memory-bound time draws ``idle_w + memory_activity * (peak_w - idle_w)``.
With ``T_c`` / ``T_m`` the compute / memory parts of a step, a step of length ``dt`` costs::

    E_step = idle_w * dt + dP(f) * (T_c(f) + memory_activity * T_m),   dP(f) = (peak_w - idle_w) (f/f_max)^exponent

which is again linear in (prefill, decode, kv) tokens: :meth:`FrequencyModel.energy_model`
returns those energy coefficients as a :class:`~fluidserve.batch_time.BatchTimeModel` whose
"seconds" are joules (so the step formula still lives in one place). An idle replica draws
``idle_w``.

Sources of the parameters (nothing here changes clocks):

* TDP and maximum SM clock: NVIDIA datasheets (H100 SXM5 and H200 SXM 700 W / 1980 MHz, A100 SXM4
  400 W / 1410 MHz, L40S 350 W / 2520 MHz).
* ``exponent``, ``memory_activity`` and the compute share of ``d0_s`` per GPU family: fitted to
  the published frequency sweeps in ``fluidserve/data/dvfs_published.csv`` by
  :mod:`fluidserve.policy.dvfs_fit`; :meth:`FrequencyModel.preset` applies the fit of the GPU's
  family. Hopper (H100, H200): exponent 0.47, memory_activity 0.22, d0 compute share 0.018
  (reproduces H100 LLaMA generation at 1035 vs 1770 MHz: -11.6% energy, +1.3% time, and H200
  decode drawing 137-300 W). Ampere (A100; L40S uses it as a stand-in, no published Ada sweep
  was found): fitted the same way to the A100 point. The roofline shares of the per-token
  coefficients stay: ``d1_prefill``/``d1_decode`` are GEMM FLOPs (s = 1), ``d2_kv`` KV reads (s = 0).
  ``DEFAULT_*`` below are the values a FrequencyModel built without a preset uses (kept for
  hand-written power models; not used by the presets).
* ``idle_w``: H100/H200 our measurement (72.3 W / 77.5 W with no work,
  ``calibration/data/*_power_overhead.json``); A100 60 W and L40S 35 W assumed (not measured).

With a measured :class:`~fluidserve.energy.StepEnergyModel` (the H100/H200 presets), the energy
at the default clock is the measurement and this model only scales it for a clock change
(:meth:`FrequencyModel.energy_model`).

Measured tables override the formulas: ``power_table`` rows (clock_mhz, compute_w, memory_w)
give busy power of compute- and memory-bound work at locked clocks (linear interpolation
between rows), ``batch_time_table`` maps a clock to a fitted BatchTimeModel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from fluidserve.energy import StepEnergyModel

COEFFICIENTS = ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s")
ROOFLINE_COMPUTE_SHARE: dict[str, float] = {"d0_s": 0.1, "d1_prefill_s": 1.0, "d1_decode_s": 1.0, "d2_kv_s": 0.0}

# name -> (f_max_mhz, idle_w, peak_w): see the module docstring for sources
GPU_POWER_PRESETS: dict[str, tuple[float, float, float]] = {
    "H100-SXM": (1980.0, 72.3, 700.0),
    "H200": (1980.0, 77.5, 700.0),
    "A100-SXM": (1410.0, 60.0, 400.0),
    "L40S": (2520.0, 35.0, 350.0),
}
DEFAULT_MEMORY_ACTIVITY = 0.35
DEFAULT_EXPONENT = 1.5


@dataclass(frozen=True)
class FrequencyModel:
    """Clock scaling of step time and the power model of one GPU type.

    Attributes:
        f_max_mhz: highest SM clock [MHz]; the batch-time model passed in is measured there.
        idle_w: power with no step running [W].
        peak_w: busy power of fully compute-bound work at ``f_max_mhz`` [W].
        memory_activity: dynamic power of memory-bound time relative to compute-bound time (0..1).
        exponent: dynamic power scales as ``(f / f_max) ** exponent``.
        compute_share: per batch-time coefficient, the share that scales with ``f_max / f``.
        power_table: optional measured rows ``(clock_mhz, compute_w, memory_w)``.
        batch_time_table: optional measured batch-time models per clock [MHz].
    """

    f_max_mhz: float
    idle_w: float
    peak_w: float
    memory_activity: float = DEFAULT_MEMORY_ACTIVITY
    exponent: float = DEFAULT_EXPONENT
    compute_share: Mapping[str, float] = field(default_factory=lambda: dict(ROOFLINE_COMPUTE_SHARE))
    power_table: tuple[tuple[float, float, float], ...] | None = None
    batch_time_table: Mapping[float, BatchTimeModel] | None = None

    def __post_init__(self) -> None:
        if not self.f_max_mhz > 0:
            raise InputError(f"power.f_max_mhz must be > 0, got {self.f_max_mhz!r}")
        if not 0 <= self.idle_w <= self.peak_w:
            raise InputError(f"power: need 0 <= idle_w ({self.idle_w}) <= peak_w ({self.peak_w})")
        if not 0 <= self.memory_activity <= 1:
            raise InputError(f"power.memory_activity must be in [0, 1], got {self.memory_activity!r}")
        if not self.exponent > 0:
            raise InputError(f"power.exponent must be > 0, got {self.exponent!r}")
        unknown = set(self.compute_share) - set(COEFFICIENTS)
        if unknown:
            raise InputError(f"power.compute_share: unknown coefficient(s) {sorted(unknown)}; use {COEFFICIENTS}")
        share = dict(ROOFLINE_COMPUTE_SHARE)
        share.update(self.compute_share)
        for k, v in share.items():
            if not 0 <= v <= 1:
                raise InputError(f"power.compute_share.{k} must be in [0, 1], got {v!r}")
        object.__setattr__(self, "compute_share", share)
        if self.power_table is not None:
            rows = tuple(sorted(tuple(float(x) for x in r) for r in self.power_table))
            for f, cw, mw in rows:
                if not (f > 0 and 0 <= self.idle_w <= mw <= cw):
                    raise InputError(
                        f"power.power_table row at {f} MHz: need idle_w <= memory_w ({mw}) <= compute_w ({cw})"
                    )
            object.__setattr__(self, "power_table", rows)

    @classmethod
    def preset(cls, gpu: str, **overrides) -> "FrequencyModel":
        """Datasheet values of a GPU in :data:`GPU_POWER_PRESETS`, its family's fitted DVFS parameters, then overrides."""
        if gpu not in GPU_POWER_PRESETS:
            raise InputError(f"unknown GPU power preset '{gpu}'; choose one of {', '.join(GPU_POWER_PRESETS)}")
        from fluidserve.policy.dvfs_fit import GPU_FAMILY, fit_family

        f_max, idle, peak = GPU_POWER_PRESETS[gpu]
        kw = {"f_max_mhz": f_max, "idle_w": idle, "peak_w": peak}
        if gpu in GPU_FAMILY:  # the family's DVFS parameters fitted to published sweeps
            kw.update(fit_family(GPU_FAMILY[gpu]).frequency_overrides())
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kw)

    # ----------------------------------------------------------------- time
    def _check_clock(self, f_mhz: float) -> float:
        f = float(f_mhz)
        if not 0 < f <= self.f_max_mhz * (1 + 1e-9):
            raise InputError(f"clock {f_mhz} MHz is outside (0, f_max={self.f_max_mhz}] MHz")
        return f

    def batch_time(self, bt: BatchTimeModel, f_mhz: float) -> BatchTimeModel:
        """Step-time coefficients at clock ``f_mhz`` (``bt`` is measured at ``f_max_mhz``)."""
        f = self._check_clock(f_mhz)
        if self.batch_time_table and f in self.batch_time_table:
            return self.batch_time_table[f]
        slow = self.f_max_mhz / f
        return BatchTimeModel(
            **{k: getattr(bt, k) * (self.compute_share[k] * slow + 1.0 - self.compute_share[k]) for k in COEFFICIENTS}
        )

    def _parts(self, bt: BatchTimeModel, f_mhz: float) -> tuple[dict[str, float], dict[str, float]]:
        """Compute-bound and memory-bound parts of each coefficient at clock f [s]."""
        scaled = self.batch_time(bt, f_mhz)
        comp, mem = {}, {}
        slow = self.f_max_mhz / float(f_mhz)
        for k in COEFFICIENTS:
            c, s = getattr(bt, k), self.compute_share[k]
            base = c * (s * slow + 1.0 - s)
            # a measured table gives the total; keep the model's compute/memory proportions
            ratio = getattr(scaled, k) / base if base > 0 else 1.0
            comp[k] = c * s * slow * ratio
            mem[k] = c * (1.0 - s) * ratio
        return comp, mem

    # ---------------------------------------------------------------- power
    def busy_power_w(self, f_mhz: float) -> tuple[float, float]:
        """(compute-bound, memory-bound) busy power at clock ``f_mhz`` [W]."""
        f = self._check_clock(f_mhz)
        if self.power_table:
            fs = [r[0] for r in self.power_table]
            if not fs[0] - 1e-9 <= f <= fs[-1] + 1e-9:
                raise InputError(f"clock {f} MHz is outside the measured power_table range [{fs[0]}, {fs[-1]}] MHz")
            return (
                float(np.interp(f, fs, [r[1] for r in self.power_table])),
                float(np.interp(f, fs, [r[2] for r in self.power_table])),
            )
        dyn = (self.peak_w - self.idle_w) * (f / self.f_max_mhz) ** self.exponent
        return self.idle_w + dyn, self.idle_w + self.memory_activity * dyn

    def energy_model(self, bt: BatchTimeModel, f_mhz: float, step_energy: "StepEnergyModel | None" = None) -> BatchTimeModel:
        """Energy of a step at clock ``f_mhz`` as a linear model in the step's tokens.

        Returned as a BatchTimeModel whose coefficients are joules (J per step, J per prefill
        token, J per decoding sequence, J per KV token read): ``.step_time(...)`` is the step's
        energy [J] and ``.work_per_request(P, D)`` the per-token energy of a request [J].

        With a measured ``step_energy`` (:class:`fluidserve.energy.StepEnergyModel`, measured at
        the default clock ``f_max_mhz``) the measured coefficients are used and the power model
        above supplies only the clock response: each coefficient is multiplied by the formula's
        ratio ``E_k(f) / E_k(f_max)`` (1 at ``f_max_mhz``, so the default clock is pure measurement).
        """
        comp, mem = self._parts(bt, f_mhz)
        pc, pm = self.busy_power_w(f_mhz)
        formula = {k: pc * comp[k] + pm * mem[k] for k in COEFFICIENTS}
        if step_energy is None:
            return BatchTimeModel(**formula)
        measured = step_energy.token_model(bt)
        comp0, mem0 = self._parts(bt, self.f_max_mhz)
        pc0, pm0 = self.busy_power_w(self.f_max_mhz)
        out = {}
        for k in COEFFICIENTS:
            ref = pc0 * comp0[k] + pm0 * mem0[k]
            out[k] = getattr(measured, k) * (formula[k] / ref if ref > 0 else 1.0)
        return BatchTimeModel(**out)

    def idle_power_w(self, step_energy: "StepEnergyModel | None" = None) -> float:
        """Power of a replica with no step running [W]: measured if ``step_energy`` has it."""
        if step_energy is not None and step_energy.idle_w is not None:
            return float(step_energy.idle_w)
        return self.idle_w

    def step_power_w(self, bt: BatchTimeModel, f_mhz: float, prefill_tokens, decode_tokens, kv_tokens,
                     step_energy: "StepEnergyModel | None" = None) -> float:
        """Mean power during one step [W] (energy / duration)."""
        e = self.energy_model(bt, f_mhz, step_energy).step_time(prefill_tokens, decode_tokens, kv_tokens)
        return e / self.batch_time(bt, f_mhz).step_time(prefill_tokens, decode_tokens, kv_tokens)
