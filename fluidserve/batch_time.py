"""The batch-time model: the one formula for how long an engine step takes.

    step_time_s = d0_s + d1_prefill_s * prefill_tokens + d1_decode_s * decode_tokens
                  + d2_kv_s * kv_tokens

``prefill_tokens`` are prompt tokens processed in the step, ``decode_tokens`` the number
of sequences that decode one token, and ``kv_tokens`` the total context (KV-cache tokens)
read by the decoding sequences' attention. The seed's two-parameter model
``d0 + d1 * batch_tokens`` is the special case d1_prefill = d1_decode = d1, d2 = 0.

The simulator, the fluid model and the LP all take step times from this object, so the
formula lives here and nowhere else. Calibration produces it (``fluidserve.calibration``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fluidserve.errors import InputError


@dataclass(frozen=True)
class BatchTimeModel:
    """Step time coefficients, all in seconds (per step, per token, per KV token).

    Attributes:
        d0_s: fixed cost of one engine step (weights read, launch overheads) [s].
        d1_prefill_s: cost per prompt token processed in the step [s/token].
        d1_decode_s: cost per decoding sequence (one new token each) [s/token].
        d2_kv_s: cost per context token read by decode attention [s/token].
    """

    d0_s: float
    d1_prefill_s: float
    d1_decode_s: float
    d2_kv_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise InputError(f"batch_time.{name} must be a finite number >= 0, got {value!r}")
        if self.d0_s <= 0:
            raise InputError(f"batch_time.d0_s must be > 0 (a step always costs time), got {self.d0_s!r}")

    @classmethod
    def two_parameter(cls, d0_s: float, d1_s: float) -> "BatchTimeModel":
        """The seed's model ``d0 + d1 * batch_tokens`` (no KV term)."""
        return cls(d0_s=d0_s, d1_prefill_s=d1_s, d1_decode_s=d1_s, d2_kv_s=0.0)

    def step_time(self, prefill_tokens, decode_tokens, kv_tokens=0.0, prefill_attention_tokens=0.0):
        """Step duration in seconds. Works on scalars and numpy/JAX arrays alike.

        ``prefill_attention_tokens`` (sum over prefill chunks of ``c * (k + c)``, chunk ``c`` after
        ``k`` computed tokens) is passed by the simulator; this model has no coefficient for it.
        """
        return (
            self.d0_s
            + self.d1_prefill_s * prefill_tokens
            + self.d1_decode_s * decode_tokens
            + self.d2_kv_s * kv_tokens
        )

    def work_per_request(self, prefill_tokens, decode_tokens):
        """Seconds of per-token work one request adds over its life (d0 excluded).

        A request with prompt P and D decode iterations costs d1_prefill*P once, d1_decode
        per decode iteration, and d2 times its context P + j at decode iteration j=0..D-1:
        ``d1_prefill*P + d1_decode*D + d2*(D*P + D*(D-1)/2)``.
        """
        p = prefill_tokens
        d = decode_tokens
        return self.d1_prefill_s * p + self.d1_decode_s * d + self.d2_kv_s * (d * p + d * (d - 1) / 2.0)

    def scaled(self, n: float) -> "BatchTimeModel":
        """The fluid-scaling family: per-token coefficients divided by ``n`` (d0 kept)."""
        return BatchTimeModel(self.d0_s, self.d1_prefill_s / n, self.d1_decode_s / n, self.d2_kv_s / n)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "BatchTimeModel":
        """Load a preset written by ``fluidserve calibrate fit --out preset.yaml``.

        The file holds the four coefficients at top level or under a ``batch_time`` key.
        """
        import yaml

        path = Path(path)
        if not path.is_file():
            raise InputError(f"batch-time preset file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML ({exc})") from exc
        if isinstance(data, dict) and "batch_time" in data:
            data = data["batch_time"]
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a mapping with d0_s, d1_prefill_s, d1_decode_s, d2_kv_s")
        keys = ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s")
        missing = [k for k in keys[:3] if k not in data]
        if missing:
            raise InputError(f"{path}: missing batch-time field(s) {', '.join(missing)}")
        try:
            return cls(**{k: float(data[k]) for k in keys if k in data})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: batch-time fields must be numbers ({exc})") from exc
