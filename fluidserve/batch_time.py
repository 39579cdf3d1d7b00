"""The batch-time model: the one formula for how long an engine step takes.

    step_time_s = d0_s + d1_prefill_s * prefill_tokens + d1_decode_s * decode_tokens
                  + d2_kv_s * kv_tokens + d3_prefill_attn_s * prefill_attention_tokens
                  + moe_expert_s * E * (1 - (1 - k / E) ** (prefill_tokens + decode_tokens))

``prefill_tokens`` are prompt tokens processed in the step, ``decode_tokens`` the number
of sequences that decode one token, and ``kv_tokens`` the total context (KV-cache tokens)
read by the decoding sequences' attention, ``prefill_attention_tokens`` the sum over the step's
prompt chunks of ``c * (k + c)`` (``c`` chunk tokens, ``k`` tokens of the request already in KV):
the query x key pairs of prefill attention. The seed's two-parameter model
``d0 + d1 * batch_tokens`` is the special case d1_prefill = d1_decode = d1, d2 = 0.

Tensor parallelism needs no term of its own: its all-reduces move bytes in proportion to the
step's tokens (folded into ``d1_prefill_s`` / ``d1_decode_s``) plus a fixed latency per all-reduce
(folded into ``d0_s``); ``fluidserve.calibration.roofline`` derives both. A mixture-of-experts
model reads the weights of the experts the batch's tokens are routed to: with top-``k`` routing
over ``E`` experts (``moe_top_k``, ``moe_num_experts``) ``n`` tokens touch on average
``E * (1 - (1 - k/E)^n)`` distinct experts per layer, each costing ``moe_expert_s`` (its weights
in every MoE layer streamed once); ``d0_s`` then holds only the weights every step reads.
The new coefficients default to 0 (a dense model), so the formula stays linear in its
coefficients and works on numpy/JAX arrays.

The simulator, the fluid model and the LP all take step times from this object, so the
formula lives here and nowhere else. Calibration produces it (``fluidserve.calibration``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from fluidserve.errors import InputError


#: coefficients added after the four-term model; they default to 0 and are written only when set
EXTRA_FIELDS = ("d3_prefill_attn_s", "moe_expert_s", "moe_num_experts", "moe_top_k")


@dataclass(frozen=True)
class BatchTimeModel:
    """Step time coefficients, all in seconds (per step, per token, per KV token).

    Attributes:
        d0_s: fixed cost of one engine step (weights read, launch overheads) [s].
        d1_prefill_s: cost per prompt token processed in the step [s/token].
        d1_decode_s: cost per decoding sequence (one new token each) [s/token].
        d2_kv_s: cost per context token read by decode attention [s/token].
        d3_prefill_attn_s: cost per query x key pair of prefill attention [s/pair].
        moe_expert_s: cost of one distinct expert activated in a step, over all MoE layers [s].
        moe_num_experts: routed experts per MoE layer (0: dense model).
        moe_top_k: experts each token is routed to.
    """

    d0_s: float
    d1_prefill_s: float
    d1_decode_s: float
    d2_kv_s: float = 0.0
    d3_prefill_attn_s: float = 0.0
    moe_expert_s: float = 0.0
    moe_num_experts: int = 0
    moe_top_k: int = 0

    def __post_init__(self) -> None:
        if self.moe_expert_s and not (1 <= self.moe_top_k <= self.moe_num_experts):
            raise InputError(
                f"batch_time.moe_top_k must be in 1..moe_num_experts ({self.moe_num_experts}) when "
                f"moe_expert_s > 0, got {self.moe_top_k!r}"
            )
        for name in ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s", "d3_prefill_attn_s", "moe_expert_s"):
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

        ``prefill_attention_tokens``: sum over the step's prefill chunks of ``c * (k + c)`` (chunk
        ``c`` after ``k`` computed or cached tokens), as the simulator passes it.
        """
        t = (
            self.d0_s
            + self.d1_prefill_s * prefill_tokens
            + self.d1_decode_s * decode_tokens
            + self.d2_kv_s * kv_tokens
            + self.d3_prefill_attn_s * prefill_attention_tokens
        )
        if self.moe_num_experts:  # structure (an int), not a coefficient: no branch on traced values
            t = t + self.moe_expert_s * self.expected_experts(prefill_tokens + decode_tokens)
        return t

    def expected_experts(self, tokens):
        """Expected distinct experts per MoE layer that ``tokens`` tokens activate (uniform top-k routing).

        Each token picks ``k`` of ``E`` experts, so one expert is missed by a token with probability
        ``1 - k/E`` and by all ``n`` tokens with ``(1 - k/E)^n``: ``E * (1 - (1 - k/E)^n)``.
        0 for a dense model.
        """
        if not self.moe_num_experts:
            return 0.0 * tokens
        e = float(self.moe_num_experts)
        return e * (1.0 - (1.0 - self.moe_top_k / e) ** tokens)

    def work_per_request(self, prefill_tokens, decode_tokens):
        """Seconds of per-token work one request adds over its life (d0 excluded).

        A request with prompt P and D decode iterations costs d1_prefill*P once, d1_decode
        per decode iteration, and d2 times its context P + j at decode iteration j=0..D-1:
        ``d1_prefill*P + d1_decode*D + d2*(D*P + D*(D-1)/2) + d3*P^2`` (the prompt as one chunk).
        """
        p = prefill_tokens
        d = decode_tokens
        # the prompt's attention pairs as one chunk: c * (k + c) = P^2
        return (self.d1_prefill_s * p + self.d1_decode_s * d + self.d2_kv_s * (d * p + d * (d - 1) / 2.0)
                + self.d3_prefill_attn_s * p * p)

    def scaled(self, n: float) -> "BatchTimeModel":
        """The fluid-scaling family: per-token coefficients divided by ``n`` (d0 and the MoE term kept)."""
        return replace(
            self, d1_prefill_s=self.d1_prefill_s / n, d1_decode_s=self.d1_decode_s / n,
            d2_kv_s=self.d2_kv_s / n, d3_prefill_attn_s=self.d3_prefill_attn_s / n,
        )

    def to_dict(self) -> dict[str, float]:
        """The coefficients; the newer ones (prefill attention, MoE) only when they are set."""
        out = asdict(self)
        for key in EXTRA_FIELDS:
            if not out[key]:
                del out[key]
        return out

    @classmethod
    def from_yaml(cls, path: str | Path) -> "BatchTimeModel":
        """Load a preset written by ``fluidserve calibrate fit --out preset.yaml``.

        The file holds the four coefficients at top level or under a ``batch_time`` key.
        """
        from fluidserve.yamlio import read_yaml

        data = read_yaml(path, "batch-time preset")
        if isinstance(data, dict) and "batch_time" in data:
            data = data["batch_time"]
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a mapping with d0_s, d1_prefill_s, d1_decode_s, d2_kv_s")
        keys = ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s") + EXTRA_FIELDS
        missing = [k for k in keys[:3] if k not in data]
        if missing:
            raise InputError(f"{path}: missing batch-time field(s) {', '.join(missing)}")
        try:
            return cls(**{k: (int if k.startswith("moe_num") or k == "moe_top_k" else float)(data[k])
                          for k in keys if k in data})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: batch-time fields must be numbers ({exc})") from exc
