"""Synthetic scenarios ``normal`` / ``heavy`` / ``bursty`` (from the seed project).

Requests are of two classes, with lengths drawn uniformly from integer ranges (inclusive):

=========  ==============  ============  ============  ==============  ===============
scenario   default rate    short share   short P / D   long P / D      arrivals
=========  ==============  ============  ============  ==============  ===============
normal     1.0 req/s       80 %          10-60/10-40   150-200/80-100  as configured
heavy      2.0 req/s       60 %          10-60/10-40   300-500/150-250 as configured
bursty     1.0 req/s       80 %          10-60/10-40   150-200/80-100  on/off MMPP if poisson
=========  ==============  ============  ============  ==============  ===============

* ``heavy`` doubles the rate and moves mass to longer requests: 40 % long requests whose prompts
  (300-500) and outputs (150-250) are 2-2.5x the normal long class. A mean request has 181
  prompt and 95 output tokens (normal: 63 and 38), so at twice the rate ``heavy`` offers about
  5-6x the per-token load of ``normal``, more where the KV term d2 matters.
* ``bursty`` keeps the normal lengths. With ``arrival_process: poisson`` (the default) its
  arrivals are the *burst pattern* :func:`burst_mmpp`: dense periods at 4x the mean rate that
  hold on average 200 requests, separated by quiet periods at 0.4x the mean rate that hold on
  average 100 requests (stationary share of time in a burst: 1/6; long-run rate = the mean
  rate). The pattern is defined in requests, so it keeps its shape at any rate. ``gamma`` and
  ``mmpp`` are honoured as given.
* ``arrival_process: mmpp`` without a ``workload.mmpp`` section uses the same burst pattern at
  the mean rate; with one, the section's rates and sojourns define the process and
  ``arrival_rate`` is not used.

Class labels: short requests get priority 0, long ones priority 1 (``queue_policy: priority``
serves lower values first). ``arrival_rate`` overrides the scenario default.

``shared_prefix`` (``num_groups``, ``system_prompt_len``, ``question_len``): each prompt is one of
``num_groups`` system prompts (uniform) of ``system_prompt_len`` tokens followed by a private
question of ``question_len`` tokens (uniform, inclusive); output lengths and labels stay the
scenario's. Requests carry ``prefix_group`` and ``prefix_length = system_prompt_len``.

Lengths and arrivals come from two independent streams spawned from the seed, so changing the
arrival process or rate leaves the request lengths unchanged (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluidserve.config import MMPPConfig
from fluidserve.errors import InputError
from fluidserve.workload.arrivals import gamma_arrivals, mmpp_arrivals, poisson_arrivals
from fluidserve.workload.base import Workload


@dataclass(frozen=True)
class RequestClass:
    """Uniform integer ranges (inclusive) of prompt and output tokens; ``priority`` is the label."""

    prefill_tokens: tuple[int, int]
    decode_tokens: tuple[int, int]
    priority: int

    @property
    def mean_prefill_tokens(self) -> float:
        return sum(self.prefill_tokens) / 2.0

    @property
    def mean_decode_tokens(self) -> float:
        return sum(self.decode_tokens) / 2.0


@dataclass(frozen=True)
class Scenario:
    """A mix of a short and a long class plus a default arrival rate (req/s)."""

    name: str
    default_rate: float
    short_fraction: float
    short: RequestClass
    long: RequestClass
    bursty: bool = False

    @property
    def mean_prefill_tokens(self) -> float:
        f = self.short_fraction
        return f * self.short.mean_prefill_tokens + (1 - f) * self.long.mean_prefill_tokens

    @property
    def mean_decode_tokens(self) -> float:
        f = self.short_fraction
        return f * self.short.mean_decode_tokens + (1 - f) * self.long.mean_decode_tokens


SHORT = RequestClass(prefill_tokens=(10, 60), decode_tokens=(10, 40), priority=0)
LONG = RequestClass(prefill_tokens=(150, 200), decode_tokens=(80, 100), priority=1)
HEAVY_LONG = RequestClass(prefill_tokens=(300, 500), decode_tokens=(150, 250), priority=1)

SCENARIOS: dict[str, Scenario] = {
    "normal": Scenario("normal", 1.0, 0.8, SHORT, LONG),
    "heavy": Scenario("heavy", 2.0, 0.6, SHORT, HEAVY_LONG),
    "bursty": Scenario("bursty", 1.0, 0.8, SHORT, LONG, bursty=True),
}

# The burst pattern, relative to the mean rate r: bursts at BURST_HIGH*r, quiet at BURST_LOW*r,
# sojourn means chosen so a burst holds BURST_REQUESTS requests on average and the time-average
# rate is r (share of time in a burst p solves p*HIGH + (1-p)*LOW = 1).
BURST_HIGH = 4.0
BURST_LOW = 0.4
BURST_REQUESTS = 200.0


def burst_mmpp(rate: float) -> MMPPConfig:
    """The default on/off burst pattern with long-run rate ``rate`` req/s (see module doc)."""
    if not np.isfinite(rate) or rate <= 0:
        raise InputError(f"arrival rate must be a finite number > 0, got {rate!r}")
    mean_high_s = BURST_REQUESTS / (BURST_HIGH * rate)
    p_high = (1.0 - BURST_LOW) / (BURST_HIGH - BURST_LOW)
    mean_low_s = mean_high_s * (1.0 - p_high) / p_high
    return MMPPConfig(
        rate_low=BURST_LOW * rate, rate_high=BURST_HIGH * rate, mean_low_s=mean_low_s, mean_high_s=mean_high_s
    )


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise InputError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}") from None


def sample_lengths(scenario: Scenario, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompt tokens, output tokens and class labels (0 short, 1 long) of ``n`` requests."""
    is_short = rng.random(n) < scenario.short_fraction
    prefill = np.empty(n, dtype=np.int64)
    decode = np.empty(n, dtype=np.int64)
    for cls, mask in ((scenario.short, is_short), (scenario.long, ~is_short)):
        k = int(mask.sum())
        prefill[mask] = rng.integers(cls.prefill_tokens[0], cls.prefill_tokens[1], endpoint=True, size=k)
        decode[mask] = rng.integers(cls.decode_tokens[0], cls.decode_tokens[1], endpoint=True, size=k)
    priority = np.where(is_short, scenario.short.priority, scenario.long.priority).astype(np.int64)
    return prefill, decode, priority


def sample_arrivals(
    n: int,
    rate: float,
    rng: np.random.Generator,
    arrival_process: str = "poisson",
    gamma_cv: float = 2.0,
    mmpp: MMPPConfig | None = None,
) -> np.ndarray:
    """Arrival times (s) of ``n`` requests from the named process (``mmpp`` defaults to bursts)."""
    if arrival_process == "poisson":
        return poisson_arrivals(n, rate, rng)
    if arrival_process == "gamma":
        return gamma_arrivals(n, rate, gamma_cv, rng)
    if arrival_process == "mmpp":
        m = mmpp if mmpp is not None else burst_mmpp(rate)
        return mmpp_arrivals(n, m.rate_low, m.rate_high, m.mean_low_s, m.mean_high_s, rng)
    raise InputError(f"unknown arrival_process {arrival_process!r}; choose one of: poisson, gamma, mmpp")


def synthetic_workload(
    scenario: str,
    n: int,
    seed: int | np.random.SeedSequence = 0,
    arrival_rate: float | None = None,
    arrival_process: str = "poisson",
    gamma_cv: float = 2.0,
    mmpp: MMPPConfig | None = None,
    shared_prefix=None,
) -> Workload:
    """``n`` requests of ``scenario``; ``arrival_rate`` (req/s) overrides the scenario default.

    ``bursty`` with ``poisson`` arrivals uses the MMPP burst pattern (module doc). The result
    is a deterministic function of the arguments.
    """
    sc = get_scenario(scenario)
    rate = sc.default_rate if arrival_rate is None else float(arrival_rate)
    process = "mmpp" if sc.bursty and arrival_process == "poisson" else arrival_process
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    arrival_ss, length_ss = ss.spawn(2)
    prefill, decode, priority = sample_lengths(sc, n, np.random.default_rng(length_ss))
    arrivals = sample_arrivals(n, rate, np.random.default_rng(arrival_ss), process, gamma_cv, mmpp)
    if shared_prefix is None:
        return Workload(arrivals, prefill, decode, priority, name=f"{scenario}-{process}")
    rng = np.random.default_rng(ss.spawn(3)[2])
    group = rng.integers(0, shared_prefix.num_groups, size=n)
    lo, hi = shared_prefix.question_len
    L = shared_prefix.system_prompt_len
    prefill = L + rng.integers(lo, hi, endpoint=True, size=n)
    return Workload(arrivals, prefill, decode, priority, name=f"{scenario}-{process}-shared",
                    prefix_group=group, prefix_length=np.full(n, L))
