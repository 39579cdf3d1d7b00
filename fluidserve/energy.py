"""The step-energy model: the one formula for how much energy an engine step takes.

    step_energy_j = p_base_w * step_time_s + e_prefill_j * prefill_tokens
                    + e_decode_j * decode_tokens + e_kv_j * kv_tokens

It has the structure of :class:`~fluidserve.batch_time.BatchTimeModel` (same token arguments,
linear) plus the step's duration: ``p_base_w`` is the power drawn throughout a step whatever it
carries (board idle power, weight streaming, launch overheads), the ``e_*`` the extra energy per
token on top of that base power over the time the token adds. It is fitted to NVML energy of a
step profile (``fluidserve.calibration.energy_fit``) measured at the GPU's default clocks, where
the GPU may lower its own clock at the power limit: the fit describes the GPU as it runs, power
capping included. ``idle_w`` is the draw of the board when no step runs (measured separately,
e.g. ``bench/power_overhead.py``).

With a step time model ``bt`` the energy is again linear in the tokens:
:meth:`StepEnergyModel.token_model` returns those coefficients as a BatchTimeModel whose
"seconds" are joules (J per step, per prefill token, per decoding sequence, per KV token), so
expectations over requests (``work_per_request``) are taken by the same code as step times.
Clock changes (DVFS) are applied on top by :class:`fluidserve.policy.frequency.FrequencyModel`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError

FIELDS = ("p_base_w", "e_prefill_j", "e_decode_j", "e_kv_j")


@dataclass(frozen=True)
class StepEnergyModel:
    """Energy of an engine step at the GPU's default clocks.

    Attributes:
        p_base_w: power over the whole step, whatever it carries [W].
        e_prefill_j: extra energy per prompt token computed in the step [J/token].
        e_decode_j: extra energy per decoding sequence (one new token each) [J/token].
        e_kv_j: extra energy per context token read by decode attention [J/token].
        idle_w: power of the board when no step runs [W] (None: not measured).

    The ``e_*`` may be negative (a token that lengthens the step at less than ``p_base_w``);
    :meth:`token_model` checks that every per-step and per-token energy is >= 0.
    """

    p_base_w: float
    e_prefill_j: float
    e_decode_j: float
    e_kv_j: float = 0.0
    idle_w: float | None = None

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if not np.isfinite(value):
                raise InputError(f"energy.{name} must be a finite number, got {value!r}")
        if self.p_base_w <= 0:
            raise InputError(f"energy.p_base_w must be > 0 (a running GPU draws power), got {self.p_base_w!r}")
        if self.idle_w is not None and not (np.isfinite(self.idle_w) and self.idle_w >= 0):
            raise InputError(f"energy.idle_w must be a number >= 0, got {self.idle_w!r}")

    def step_energy(self, step_time_s, prefill_tokens, decode_tokens, kv_tokens=0.0):
        """Energy of steps [J] given their durations [s]; scalars or numpy arrays."""
        return (
            self.p_base_w * step_time_s
            + self.e_prefill_j * prefill_tokens
            + self.e_decode_j * decode_tokens
            + self.e_kv_j * kv_tokens
        )

    def token_model(self, bt: BatchTimeModel) -> BatchTimeModel:
        """Energy of a step whose duration is ``bt.step_time`` as linear coefficients [J].

        ``.step_time(prefill, decode, kv)`` of the result is the step's energy [J].
        """
        coef = {
            "d0_s": self.p_base_w * bt.d0_s,
            "d1_prefill_s": self.p_base_w * bt.d1_prefill_s + self.e_prefill_j,
            "d1_decode_s": self.p_base_w * bt.d1_decode_s + self.e_decode_j,
            "d2_kv_s": self.p_base_w * bt.d2_kv_s + self.e_kv_j,
        }
        bad = [k for k, v in coef.items() if v < 0]
        if bad:
            raise InputError(
                f"energy model with this batch-time model gives negative energy for {', '.join(bad)} "
                f"({', '.join(f'{k}={coef[k]:.3g} J' for k in bad)}); fit both on the same profile"
            )
        return BatchTimeModel(**coef)

    def transferred(self, measured_on: BatchTimeModel, target: BatchTimeModel, power_scale: float,
                    idle_w: float | None = None) -> "StepEnergyModel":
        """An assumed model for another GPU: this one's powers times ``power_scale``, its times.

        ``p_base_w`` scales by ``power_scale``; each per-token energy is an extra power over the
        token's time (``e / c`` with ``c`` the matching coefficient of ``measured_on``), so it becomes
        ``e / c * power_scale * c_target``. E.g. ``power_scale`` = TDP ratio of the two boards.
        """
        if not power_scale > 0:
            raise InputError(f"energy.power_scale must be > 0, got {power_scale!r}")
        pairs = (("e_prefill_j", "d1_prefill_s"), ("e_decode_j", "d1_decode_s"), ("e_kv_j", "d2_kv_s"))
        kw = {"p_base_w": self.p_base_w * power_scale}
        for e, c in pairs:
            src = getattr(measured_on, c)
            kw[e] = getattr(self, e) / src * power_scale * getattr(target, c) if src > 0 else 0.0
        return StepEnergyModel(**kw, idle_w=idle_w)

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_mapping(cls, data, source: str = "energy") -> "StepEnergyModel":
        if not isinstance(data, dict):
            raise InputError(f"{source}: expected a mapping with {', '.join(FIELDS)}")
        missing = [k for k in FIELDS[:3] if k not in data]
        if missing:
            raise InputError(f"{source}: missing step-energy field(s) {', '.join(missing)}")
        try:
            kw = {k: float(data[k]) for k in (*FIELDS, "idle_w") if data.get(k) is not None}
        except (TypeError, ValueError) as exc:
            raise InputError(f"{source}: step-energy fields must be numbers ({exc})") from None
        return cls(**kw)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StepEnergyModel":
        """Load the ``energy`` section of a preset written by ``calibrate fit --out``."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"step-energy preset file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict) or not isinstance(data.get("energy"), dict):
            raise InputError(f"{path}: no 'energy' section (refit with 'fluidserve calibrate fit' on a profile "
                             "with an energy_j column)")
        return cls.from_mapping(data["energy"], f"{path}: energy")
