"""Fluid steady state of one underloaded replica, and the per-class expectations it needs.

For Poisson-like traffic of classes k at rates lambda_k [req/s] on one replica with batch-time
model ``bt`` (theory: the fluid model's equilibrium in the underloaded regime)::

    rho   = sum_k lambda_k * E[work_per_request(P_k, D_k)]          (utilization, < 1)
    tau   = d0 / (1 - rho)                                         (mean step time = TPOT) [s]
    N     = sum_k lambda_k * E[D_k] * tau                          (running requests)
    KV    = sum_k lambda_k * tau * E[D_k P_k + D_k (D_k + 1) / 2]  (KV tokens held)

It holds because every step costs d0 plus the work it carries: over a long window of length T,
T = n_steps * d0 + rho * T. :func:`steady_state` is the single function the LP and the reports use;
once ``fluidserve.fluid.closed_forms.steady_state`` exists it can delegate there.

Request lengths of a class are independent uniform integer ranges (as in
:mod:`fluidserve.workload.synthetic`); expectations are exact (from the laws' moments).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError


@dataclass(frozen=True)
class LengthLaw:
    """Prompt and output lengths: independent uniform integers on inclusive ranges [tokens]."""

    prefill_tokens: tuple[int, int]
    decode_tokens: tuple[int, int]

    def __post_init__(self) -> None:
        for name in ("prefill_tokens", "decode_tokens"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise InputError(f"{name} range must satisfy 1 <= lo <= hi, got [{lo}, {hi}]")

    def expect(self, fn) -> float:
        """E[fn(P, D)], exact, for ``fn`` a polynomial of degree <= 2 in P and in D (vectorized).

        Every quantity of the batch-time, energy and KV models is such a polynomial.
        """
        return _expect_by_moments(fn, self)

    @property
    def mean_prefill_tokens(self) -> float:
        return sum(self.prefill_tokens) / 2.0

    @property
    def mean_decode_tokens(self) -> float:
        return sum(self.decode_tokens) / 2.0

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n (prompt, output) length pairs."""
        p = rng.integers(self.prefill_tokens[0], self.prefill_tokens[1], endpoint=True, size=n)
        d = rng.integers(self.decode_tokens[0], self.decode_tokens[1], endpoint=True, size=n)
        return p, d


def _uniform_int_moments(lo: int, hi: int) -> tuple[float, float]:
    n = hi - lo + 1
    mean = (lo + hi) / 2.0
    var = (n * n - 1) / 12.0
    return mean, var + mean * mean


def _expect_by_moments(fn, law: LengthLaw) -> float:
    """E[fn(P, D)] for fn a polynomial with degree <= 2 in P and in D, P and D independent.

    For a quadratic g and a variable with mean m and standard deviation s,
    E[g(X)] = g(m) + g'' s^2 / 2 = (g(m - s) + g(m + s)) / 2, so the tensor rule on the four points
    (m_P +- s_P, m_D +- s_D) with equal weights is exact (and numerically stable).
    """
    mp, p2 = _uniform_int_moments(*law.prefill_tokens)
    md, d2 = _uniform_int_moments(*law.decode_tokens)
    sp = np.sqrt(max(p2 - mp * mp, 0.0))
    sd = np.sqrt(max(d2 - md * md, 0.0))
    p = np.array([mp - sp, mp + sp])[:, None]
    d = np.array([md - sd, md + sd])[None, :]
    return float(np.mean(np.asarray(fn(p, d), dtype=np.float64) * np.ones((2, 2))))


def kv_token_steps(prefill_tokens, decode_tokens, block_size: int = 1):
    """KV tokens held, summed over a request's decode iterations [token-steps].

    After decode iteration j the request holds P + j + 1 tokens: sum_j (P + j + 1) =
    D P + D (D + 1) / 2, plus (block_size - 1) / 2 tokens of block rounding per iteration on average.
    """
    p, d = prefill_tokens, decode_tokens
    return d * p + d * (d + 1) / 2.0 + d * (block_size - 1) / 2.0


@dataclass(frozen=True)
class SteadyState:
    """Fluid equilibrium of one replica. Times in s, masses in requests, memory in tokens."""

    rho: float
    tau_s: float
    running: float
    kv_tokens: float
    prefill_tokens_per_step: float

    @property
    def stable(self) -> bool:
        return self.rho < 1.0


def steady_state(
    bt: BatchTimeModel,
    rates: np.ndarray,
    laws: list[LengthLaw],
    block_size: int = 1,
) -> SteadyState:
    """Equilibrium of one replica fed class rates ``rates`` [req/s] (see the module docstring).

    ``rho >= 1`` gives ``tau_s = inf`` (the fluid queue grows without bound).
    """
    rates = np.asarray(rates, dtype=np.float64)
    if len(rates) != len(laws):
        raise InputError(f"steady_state: {len(rates)} rates for {len(laws)} classes")
    work = np.array([law.expect(bt.work_per_request) for law in laws])
    rho = float(rates @ work)
    tau = bt.d0_s / (1.0 - rho) if rho < 1.0 else float("inf")
    dmean = np.array([law.mean_decode_tokens for law in laws])
    pmean = np.array([law.mean_prefill_tokens for law in laws])
    kv = np.array([law.expect(lambda p, d: kv_token_steps(p, d, block_size)) for law in laws])
    return SteadyState(
        rho=rho,
        tau_s=tau,
        running=float(rates @ dmean) * tau,
        kv_tokens=float(rates @ kv) * tau,
        prefill_tokens_per_step=float(rates @ pmean) * tau,
    )


def mean_ttft_s(bt: BatchTimeModel, rates: np.ndarray, laws: list[LengthLaw], ss: SteadyState) -> np.ndarray:
    """Mean TTFT per class [s] on one replica with Poisson arrivals, waiting behind other prompts.

    A request arriving at a random time waits for the step in progress to end (residual ``R``),
    is prefilled in the next step together with every prompt that arrived during the step in
    progress, and gets its first token at the end of the step after that (its decode iteration 0,
    which carries the prompts that arrived during the prefill step)::

        TTFT_k  = R + T_pf_k + T_1
        R       = E[T^2] / (2 E[T]) = tau / 2 + S2 / (2 (1 - rho_p^2))
        T_pf_k  = tau (1 - rho_p) + d1_prefill E[P_k] + rho_p 2 R
        T_1     = tau (1 - rho_p) + rho_p T_pf_k

    ``X_j = d1_prefill P_j`` is a class-j prompt's prefill time, ``S2 = sum_j r_j E[X_j^2]`` and
    ``rho_p = sum_j r_j E[X_j]`` the prefill share of the time; ``tau (1 - rho_p)`` is the rest of
    a mean step. Step lengths vary with the prompts they carry: a step's prefill time given the
    previous step's length T has mean ``rho_p T`` and variance ``T S2`` (compound Poisson), so
    ``Var(T) = tau S2 / (1 - rho_p^2)``; an arrival lands in a length-biased step (mean length
    ``2 R``). Budget overflow (prompts waiting more than one step for the token budget) is not
    modelled. These are the ``vllm_v0`` scheduler's semantics (whole prompts, first token one step
    after the prefill step); checked against that engine in ``tests/policy/test_steady.py``.
    """
    rates = np.asarray(rates, dtype=np.float64)
    tau = ss.tau_s
    d1p = bt.d1_prefill_s
    x2 = np.array([law.expect(lambda p, d: (d1p * p) ** 2) for law in laws])
    pmean = np.array([law.mean_prefill_tokens for law in laws])
    rho_p = float(rates @ (d1p * pmean))
    resid = tau / 2.0 + float(rates @ x2) / (2.0 * (1.0 - rho_p**2))
    rest = tau * (1.0 - rho_p)
    t_pf = rest + d1p * pmean + rho_p * 2.0 * resid
    return resid + t_pf + rest + rho_p * t_pf
