"""The LP's data: sub-pools (pool x clock x SLO group) and arcs (class -> sub-pool), as numbers.

A *sub-pool* ``s = (pool j, clock f, SLO group g)`` is a set of replicas of pool j locked at clock
f that serve only classes of one SLO group (classes with equal TTFT and TPOT SLOs), so that all
its constraints are linear. From the fluid steady state (:mod:`fluidserve.policy.steady`) with
headroom ``h`` on the SLOs, class k may use sub-pool s only if its SLOs bound the utilization
above zero:

    TPOT:  tau = d0(f) / (1 - rho) <= h * tpot_k                 =>  rho <= 1 - d0(f) / (h tpot_k)
    TTFT:  ttft_steps * tau + d1_prefill(f) * E[P_k] <= h ttft_k =>  rho <= 1 - ttft_steps d0(f) / (h ttft_k - d1_prefill(f) E[P_k])

A request's TPOT is the mean of its D - 1 inter-token steps, and steps that carry other requests'
prefills are longer. With per-replica rates r_k and prefill work X_k = d1_prefill(f) P_k, the
prefill work of a step has variance tau sum_k r_k E[X_k^2] (compound Poisson), so a request's
TPOT has standard deviation sigma = sqrt(tau sum_k r_k E[X_k^2] / (D - 1)). The TPOT bound above
uses ``m = tpot_mean_share`` of the budget for the mean (tau <= m h tpot_k) and keeps
``z sigma <= (1 - m) h tpot_k`` for a request with D at the (1 - Phi(z)) quantile of its class,
which with tau <= tau_cap is linear in the rates:

    sum_k r_k E[X_k^2] <= (D_q - 1) ((1 - m) h tpot / z)^2 / tau_cap        ("tbt" rows)

The sub-pool's utilization cap ``rho_cap`` is the smallest of these over its eligible classes and
``safety.rho_max``; ``tau_cap = d0 / (1 - rho_cap)`` bounds the step time, and with it the
(Little's-law) KV tokens, running sequences and tokens per step, which become linear in the rates.

Per class, the expectations of the batch-time, energy and KV models are linear in the models'
coefficients, so they are computed once per class and combined with each sub-pool's
coefficients as matrix products (fast for thousands of sub-pools).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.energy import StepEnergyModel
from fluidserve.policy.frequency import FrequencyModel
from fluidserve.policy.lp_config import LpConfig
from fluidserve.policy.steady import LengthLaw, kv_token_steps

_EPS_RHO = 1e-3  # a sub-pool whose utilization cap is below this carries no traffic


@dataclass
class Problem:
    """Numbers of the LP (arrays indexed by pool j, class k, sub-pool s, arc a).

    Units: rates req/s, times s, power W, energy J, memory tokens.
    """

    pool_names: list[str]
    pool_count: np.ndarray
    pool_cost_per_hour: np.ndarray
    pool_idle_w: np.ndarray
    pool_max_clock: np.ndarray
    class_names: list[str]
    rate: np.ndarray
    mean_prefill: np.ndarray
    mean_decode: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    group_of_class: np.ndarray
    groups: list[tuple[float, float]]
    # sub-pools
    s_pool: np.ndarray
    s_clock: np.ndarray
    s_group: np.ndarray
    s_d0: np.ndarray
    s_rho_cap: np.ndarray
    s_cap_reason: list[str]
    s_tau_cap: np.ndarray
    s_busy_base_w: np.ndarray  # E0 / d0: power of a busy replica with no per-token work [W]
    s_kv_cap: np.ndarray  # kv_fraction * M_total [tokens]
    s_tok_cap: np.ndarray  # budget_fraction * B [tokens per step]
    s_seq_cap: np.ndarray  # seq_fraction * max_num_seqs
    s_tbt_cap: np.ndarray  # bound on sum_k r_k E[X_k^2] per replica [s^2/s]; inf: none
    # arcs
    a_class: np.ndarray
    a_sub: np.ndarray
    a_work: np.ndarray  # E[work_per_request] at the sub-pool's clock [s]
    a_energy_net: np.ndarray  # E[energy per request] - E0/d0 * work [J]
    a_kv: np.ndarray  # E[KV token-steps per request]
    a_tokens: np.ndarray  # E[P + D]
    a_decode: np.ndarray  # E[D]
    a_x2: np.ndarray  # E[(d1_prefill(f) P)^2] [s^2]
    ineligible: dict[int, list[str]] = field(default_factory=dict)  # class -> reasons per pool/clock
    ttft_steps: float = 2.5
    headroom: float = 0.8

    @property
    def num_subpools(self) -> int:
        return len(self.s_pool)

    @property
    def num_arcs(self) -> int:
        return len(self.a_class)

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of the whole demand."""
        return float(self.rate @ self.mean_decode)


@dataclass(frozen=True)
class PoolModel:
    """What the problem needs of one pool (built from a PoolSpec, or directly in benchmarks)."""

    name: str
    count: int
    cost_per_hour: float
    clocks_mhz: tuple[float, ...]
    batch_time: BatchTimeModel
    freq: FrequencyModel
    M_total: int
    B: int
    max_num_seqs: int
    block_size: int
    chunked_prefill: bool = False
    step_energy: StepEnergyModel | None = None  # measured at the default clock (None: power model only)

    def energy_model(self, f_mhz: float) -> BatchTimeModel:
        """Step energy at clock ``f_mhz`` as linear coefficients [J] (see FrequencyModel.energy_model)."""
        return self.freq.energy_model(self.batch_time, f_mhz, self.step_energy)

    @property
    def idle_w(self) -> float:
        """Power of a replica with no step running [W]."""
        return self.freq.idle_power_w(self.step_energy)


def pool_models(cfg: LpConfig) -> list[PoolModel]:
    base = Path(cfg.base_dir) if cfg.base_dir else None
    return [
        PoolModel(
            name=p.name, count=p.count, cost_per_hour=p.cost_per_hour, clocks_mhz=tuple(p.clocks_mhz),
            batch_time=p.batch_time_model(base), freq=p.frequency_model(base), M_total=p.system.M_total,
            B=p.system.B, max_num_seqs=p.system.max_num_seqs, block_size=p.system.block_size,
            chunked_prefill=p.system.chunked_prefill, step_energy=p.step_energy_model(base),
        )
        for p in cfg.pools
    ]


def class_features(laws: list[LengthLaw], block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: E[work] feature rows (d1_prefill, d1_decode, d2 parts) and E[KV token-steps].

    E[work_per_request] of any model is ``features @ (d1_prefill, d1_decode, d2)``; the rows are
    the model's own ``work_per_request`` evaluated with unit coefficients.
    """
    units = [BatchTimeModel(1.0, 1.0, 0.0, 0.0), BatchTimeModel(1.0, 0.0, 1.0, 0.0), BatchTimeModel(1.0, 0.0, 0.0, 1.0)]
    feats = np.array([[law.expect(u.work_per_request) for u in units] for law in laws])
    kv = np.array([law.expect(lambda p, d: kv_token_steps(p, d, block_size)) for law in laws])
    return feats, kv


def build_problem(cfg: LpConfig, pools: list[PoolModel] | None = None, max_clock_only: bool = False) -> Problem:
    """The LP's numbers for a config (``max_clock_only``: each pool at its highest clock only)."""
    pools = pool_models(cfg) if pools is None else pools
    safety = cfg.safety
    classes = cfg.classes
    K = len(classes)
    laws = [c.law for c in classes]
    rate = np.array([c.rate for c in classes], dtype=float)
    pmean = np.array([law.mean_prefill_tokens for law in laws])
    dmean = np.array([law.mean_decode_tokens for law in laws])
    pmax = np.array([c.prefill_tokens[1] for c in classes])
    lmax = np.array([c.prefill_tokens[1] + c.decode_tokens[1] for c in classes])
    ttft = np.array([c.ttft_s for c in classes], dtype=float)
    tpot = np.array([c.tpot_s for c in classes], dtype=float)
    groups = sorted({c.slo_key for c in classes})
    gidx = np.array([groups.index(c.slo_key) for c in classes])
    h = safety.slo_headroom
    steps = safety.ttft_steps
    share = safety.tpot_mean_share
    z = safety.tpot_z
    q_low = 0.5 * math.erfc(z / math.sqrt(2.0)) if z > 0 else 0.0  # 1 - Phi(z)
    d_q = np.array([c.decode_tokens[0] + q_low * (c.decode_tokens[1] - c.decode_tokens[0]) for c in classes])
    p2 = np.array([law.expect(lambda p, d: p * p) for law in laws])

    block_sizes = sorted({p.block_size for p in pools})
    feats_by_bs = {bs: class_features(laws, bs) for bs in block_sizes}

    s_rows: list[tuple] = []
    arcs: list[tuple[np.ndarray, int, np.ndarray, np.ndarray, np.ndarray]] = []
    ineligible: dict[int, list[str]] = {k: [] for k in range(K)}
    for j, pool in enumerate(pools):
        feats, kv = feats_by_bs[pool.block_size]
        fits = np.ones(K, dtype=bool)
        for k in range(K):
            if -(-int(lmax[k]) // pool.block_size) > pool.M_total // pool.block_size:
                fits[k] = False
                ineligible[k].append(f"pool '{pool.name}': a request of {lmax[k]} tokens exceeds M_total={pool.M_total}")
            elif not pool.chunked_prefill and pmax[k] > pool.B:
                fits[k] = False
                ineligible[k].append(f"pool '{pool.name}': prompts up to {pmax[k]} tokens exceed B={pool.B} (chunked prefill off)")
        clocks = pool.clocks_mhz[-1:] if max_clock_only else pool.clocks_mhz
        for f in clocks:
            bt = pool.freq.batch_time(pool.batch_time, f)
            en = pool.energy_model(f)
            coef = np.array([bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s])
            ecoef = np.array([en.d1_prefill_s, en.d1_decode_s, en.d2_kv_s])
            base_w = en.d0_s / bt.d0_s
            work = feats @ coef
            energy_net = feats @ ecoef - base_w * work
            b_tpot = 1.0 - bt.d0_s / (share * h * tpot)
            denom = h * ttft - bt.d1_prefill_s * pmean
            b_ttft = np.where(denom > 0, 1.0 - steps * bt.d0_s / np.where(denom > 0, denom, 1.0), -np.inf)
            bound = np.minimum(b_tpot, b_ttft)
            for k in range(K):
                if fits[k] and bound[k] <= _EPS_RHO:
                    which = "TPOT" if b_tpot[k] <= b_ttft[k] else "TTFT"
                    if which == "TPOT":
                        best = bt.d0_s / (share * h)
                        ineligible[k].append(
                            f"pool '{pool.name}' at {f:g} MHz: TPOT SLO {tpot[k]:g} s is below the zero-load step "
                            f"time {bt.d0_s:.4g} s / (headroom {h:g} x tpot_mean_share {share:g}) = {best:.4g} s"
                        )
                    else:
                        best = (steps * bt.d0_s + bt.d1_prefill_s * pmean[k]) / h
                        ineligible[k].append(
                            f"pool '{pool.name}' at {f:g} MHz: TTFT SLO {ttft[k]:g} s is below the zero-load TTFT "
                            f"{best:.4g} s (incl. headroom {h:g})"
                        )
            for g in range(len(groups)):
                members = np.flatnonzero((gidx == g) & fits & (bound > _EPS_RHO))
                if len(members) == 0:
                    continue
                kmin = members[np.argmin(bound[members])]
                cap = float(min(safety.rho_max, bound[kmin]))
                if cap == safety.rho_max:
                    reason = f"rho_max {safety.rho_max:g}"
                else:
                    kind = "TPOT" if b_tpot[kmin] <= b_ttft[kmin] else "TTFT"
                    reason = f"{kind} SLO of class '{classes[kmin].name}'"
                s = len(s_rows)
                tau_cap = bt.d0_s / (1.0 - cap)
                tbt = np.inf
                if z > 0 and share < 1:
                    n_steps = d_q[members] - 1.0
                    lim = np.where(n_steps >= 1, n_steps * ((1 - share) * h * tpot[members] / z) ** 2 / tau_cap, np.inf)
                    tbt = float(lim.min())
                s_rows.append((
                    j, f, g, bt.d0_s, cap, reason, tau_cap, base_w,
                    safety.kv_fraction * pool.M_total, safety.budget_fraction * pool.B,
                    safety.seq_fraction * pool.max_num_seqs, tbt,
                ))
                arcs.append((members, s, work[members], energy_net[members], kv[members],
                             bt.d1_prefill_s ** 2 * p2[members]))

    def col(i, dtype=float):
        return np.array([r[i] for r in s_rows], dtype=dtype)

    if arcs:
        a_class = np.concatenate([a[0] for a in arcs]).astype(np.int64)
        a_sub = np.concatenate([np.full(len(a[0]), a[1]) for a in arcs]).astype(np.int64)
        a_work = np.concatenate([a[2] for a in arcs])
        a_en = np.concatenate([a[3] for a in arcs])
        a_kv = np.concatenate([a[4] for a in arcs])
        a_x2 = np.concatenate([a[5] for a in arcs])
    else:
        a_class = a_sub = np.zeros(0, dtype=np.int64)
        a_work = a_en = a_kv = a_x2 = np.zeros(0)
    return Problem(
        pool_names=[p.name for p in pools],
        pool_count=np.array([p.count for p in pools], dtype=float),
        pool_cost_per_hour=np.array([p.cost_per_hour for p in pools], dtype=float),
        pool_idle_w=np.array([p.idle_w for p in pools], dtype=float),
        pool_max_clock=np.array([p.clocks_mhz[-1] for p in pools], dtype=float),
        class_names=[c.name for c in classes],
        rate=rate, mean_prefill=pmean, mean_decode=dmean, ttft_s=ttft, tpot_s=tpot,
        group_of_class=gidx, groups=groups,
        s_pool=col(0, np.int64), s_clock=col(1), s_group=col(2, np.int64), s_d0=col(3), s_rho_cap=col(4),
        s_cap_reason=[r[5] for r in s_rows], s_tau_cap=col(6), s_busy_base_w=col(7),
        s_kv_cap=col(8), s_tok_cap=col(9), s_seq_cap=col(10), s_tbt_cap=col(11),
        a_class=a_class, a_sub=a_sub, a_work=a_work, a_energy_net=a_en, a_kv=a_kv,
        a_tokens=(pmean + dmean)[a_class], a_decode=dmean[a_class], a_x2=a_x2,
        ineligible={k: v for k, v in ineligible.items() if v},
        ttft_steps=steps, headroom=h,
    )
