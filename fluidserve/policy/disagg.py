"""Prefill/decode disaggregation: a two-stage fluid tandem and the GPU split it implies.

Fluid tandem (steady state, rates in req/s, times in s), with n_p prefill and n_d decode GPUs of
one pool and classes k at total rates lambda_k:

* prefill stage, per instance: rho_p = sum_k (lambda_k / n_p) E[d1_prefill P_k],
  tau_p = d0 / (1 - rho_p) (a step is d0 plus the prompts it carries); a prompt waits the residual
  of the running step and then its own step: prefill delay = 1.5 tau_p + d1_prefill E[P_k];
* KV transfer: T_k = E[P_k] kv_bytes / link bandwidth on a FIFO link per prefill instance, plus the
  Pollaczek-Khinchine wait r E[T^2] / (2 (1 - r E[T])) with r = lambda / n_p;
* decode stage, per instance: rho_d = sum_k (lambda_k / n_d) E[work_per_request without prefill],
  tau_d = d0 / (1 - rho_d); the first token comes after the residual of the running step plus the
  step that runs iteration 0 (1.5 tau_d); TBT = tau_d; e2e = TTFT + (E[D] - 1) tau_d.

The split program (SCIP through pywraplp, integer n_p, n_d) minimizes the GPUs used subject to,
for a share ``sigma`` of the TTFT budget given to the prefill stage (tried over ``ttft_split``):
tau_p <= A and tau_d <= min(Bd, tpot_mean_share x headroom x TPOT) as linear bounds on rho, with
1.5 A + 1.5 Bd = min_k(headroom x TTFT_k - d1_prefill E[P_k] - T_k - wait); rho_p, rho_d <= rho_max;
decode KV (tau_d_cap x sum_k lambda_k E[KV token-steps]) within kv_fraction x M_total per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError, require
from fluidserve.policy.lp_config import LpConfig
from fluidserve.policy.problem import pool_models
from fluidserve.policy.steady import kv_token_steps


@dataclass(frozen=True)
class TandemState:
    """Fluid steady state of the tandem; per-class arrays follow the config's class order."""

    n_prefill: int
    n_decode: int
    rho_prefill: float
    rho_decode: float
    tau_prefill_s: float
    tau_decode_s: float
    transfer_s: np.ndarray
    link_wait_s: float
    ttft_s: np.ndarray
    tbt_s: float
    e2e_s: np.ndarray
    kv_tokens_per_decode_gpu: float
    power_w: float

    def to_dict(self, names: list[str]) -> dict:
        return {
            "n_prefill": self.n_prefill, "n_decode": self.n_decode, "rho_prefill": self.rho_prefill,
            "rho_decode": self.rho_decode, "tau_prefill_s": self.tau_prefill_s, "tau_decode_s": self.tau_decode_s,
            "link_wait_s": self.link_wait_s, "tbt_s": self.tbt_s,
            "kv_tokens_per_decode_gpu": self.kv_tokens_per_decode_gpu, "power_w": self.power_w,
            "transfer_s": dict(zip(names, self.transfer_s.tolist())),
            "ttft_s": dict(zip(names, self.ttft_s.tolist())), "e2e_s": dict(zip(names, self.e2e_s.tolist())),
        }


def _decode_model(bt: BatchTimeModel) -> BatchTimeModel:
    """The decode instance's per-request work: the batch-time model without prefill tokens."""
    return BatchTimeModel(bt.d0_s, 0.0, bt.d1_decode_s, bt.d2_kv_s)


def _prefill_model(bt: BatchTimeModel) -> BatchTimeModel:
    return BatchTimeModel(bt.d0_s, bt.d1_prefill_s, 0.0, 0.0)


def tandem_steady_state(
    cfg: LpConfig, n_prefill: int, n_decode: int, link_GBps: float, pool_name: str, scale: float = 1.0
) -> TandemState:
    """The tandem's steady state for a split (see the module docstring); inf where a stage is overloaded."""
    j = [p.name for p in cfg.pools].index(pool_name)
    pool = pool_models(cfg)[j]
    spec = cfg.pools[j]
    bt = pool.batch_time
    f = pool.clocks_mhz[-1]
    en = pool.energy_model(f)
    laws = [c.law for c in cfg.classes]
    lam = np.array([c.rate for c in cfg.classes]) * scale
    pmean = np.array([law.mean_prefill_tokens for law in laws])
    dmean = np.array([law.mean_decode_tokens for law in laws])
    p2 = np.array([law.expect(lambda p, d: p * p) for law in laws])
    kvb = spec.system.kv_bytes_per_token
    xfer_per_token = kvb / (link_GBps * 1e9)
    pre_w = np.array([law.expect(_prefill_model(bt).work_per_request) for law in laws])
    dec_w = np.array([law.expect(_decode_model(bt).work_per_request) for law in laws])
    rho_p = float(lam @ pre_w) / n_prefill
    rho_d = float(lam @ dec_w) / n_decode
    tau_p = bt.d0_s / (1 - rho_p) if rho_p < 1 else np.inf
    tau_d = bt.d0_s / (1 - rho_d) if rho_d < 1 else np.inf
    T = pmean * xfer_per_token
    r = lam / n_prefill
    rho_l = float(r @ T)
    wait = float(r @ (p2 * xfer_per_token ** 2)) / (2 * (1 - rho_l)) if rho_l < 1 else np.inf
    ttft = 1.5 * tau_p + bt.d1_prefill_s * pmean + T + wait + 1.5 * tau_d
    kv = np.array([law.expect(lambda p, d: kv_token_steps(p, d, pool.block_size)) for law in laws])
    e_pre = np.array([law.expect(_prefill_model(en).work_per_request) for law in laws])
    e_dec = np.array([law.expect(_decode_model(en).work_per_request) for law in laws])
    base = en.d0_s / bt.d0_s
    power = (
        n_prefill * (1 - min(rho_p, 1)) * base + float(lam @ e_pre)
        + n_decode * (1 - min(rho_d, 1)) * base + float(lam @ e_dec)
    )
    return TandemState(
        n_prefill=n_prefill, n_decode=n_decode, rho_prefill=rho_p, rho_decode=rho_d, tau_prefill_s=tau_p,
        tau_decode_s=tau_d, transfer_s=T, link_wait_s=wait, ttft_s=ttft, tbt_s=tau_d,
        e2e_s=ttft + (dmean - 1) * tau_d, kv_tokens_per_decode_gpu=float(lam @ kv) * tau_d / n_decode,
        power_w=power,
    )


@dataclass
class SplitSolution:
    status: str
    n_prefill: int
    n_decode: int
    ttft_share: float
    state: TandemState | None
    reason: str = ""

    def to_dict(self, names: list[str]) -> dict:
        return {
            "status": self.status, "n_prefill": self.n_prefill, "n_decode": self.n_decode,
            "ttft_share_prefill": self.ttft_share, "reason": self.reason,
            "predicted": None if self.state is None else self.state.to_dict(names),
        }


def choose_split(cfg: LpConfig) -> SplitSolution:
    """Fewest GPUs (n_p + n_d <= disagg.gpus) that meet the SLOs in the tandem; MIP per TTFT share."""
    if cfg.disagg is None:
        raise InputError("the lp config has no 'disagg' section")
    pywraplp = require("ortools.linear_solver.pywraplp", "lp")
    dg = cfg.disagg
    sf = cfg.safety
    j = [p.name for p in cfg.pools].index(dg.pool)
    pool = pool_models(cfg)[j]
    bt = pool.batch_time
    laws = [c.law for c in cfg.classes]
    lam = np.array([c.rate for c in cfg.classes])
    pmean = np.array([law.mean_prefill_tokens for law in laws])
    ttft = np.array([c.ttft_s for c in cfg.classes])
    tpot = np.array([c.tpot_s for c in cfg.classes])
    kv = np.array([law.expect(lambda p, d: kv_token_steps(p, d, pool.block_size)) for law in laws])
    load_p = float(lam @ np.array([law.expect(_prefill_model(bt).work_per_request) for law in laws]))
    load_d = float(lam @ np.array([law.expect(_decode_model(bt).work_per_request) for law in laws]))
    h = sf.slo_headroom
    best: SplitSolution | None = None
    reasons = []
    for share in dg.ttft_split:
        # transfer + link wait at the largest split that could be chosen (n_p = 1) is conservative
        st1 = tandem_steady_state(cfg, 1, 1, dg.link_GBps, dg.pool)
        fixed = bt.d1_prefill_s * pmean + st1.transfer_s + (st1.link_wait_s if np.isfinite(st1.link_wait_s) else 0.0)
        budget = float(np.min(h * ttft - fixed))
        if budget <= 0:
            reasons.append(f"TTFT SLO below prefill + KV transfer time at share {share:g}")
            continue
        A = share * budget / 1.5
        Bd = min((1 - share) * budget / 1.5, float(np.min(sf.tpot_mean_share * h * tpot)))
        cap_p = min(sf.rho_max, 1 - bt.d0_s / A)
        cap_d = min(sf.rho_max, 1 - bt.d0_s / Bd)
        if cap_p <= 0 or cap_d <= 0:
            reasons.append(
                f"share {share:g}: step-time bound below d0 ({'prefill' if cap_p <= 0 else 'decode'} stage)"
            )
            continue
        tau_d_cap = bt.d0_s / (1 - cap_d)
        sv = pywraplp.Solver.CreateSolver("SCIP")
        npf = sv.IntVar(1, dg.gpus, "n_prefill")
        ndc = sv.IntVar(1, dg.gpus, "n_decode")
        sv.Add(npf + ndc <= dg.gpus)
        sv.Add(load_p <= cap_p * npf)
        sv.Add(load_d <= cap_d * ndc)
        sv.Add(tau_d_cap * float(lam @ kv) <= sf.kv_fraction * pool.M_total * ndc)
        sv.Minimize(npf + ndc)
        status = sv.Solve()
        if status != pywraplp.Solver.OPTIMAL:
            reasons.append(f"share {share:g}: {dg.gpus} GPUs are too few")
            continue
        cand = SplitSolution("optimal", int(round(npf.solution_value())), int(round(ndc.solution_value())), share, None)
        cand.state = tandem_steady_state(cfg, cand.n_prefill, cand.n_decode, dg.link_GBps, dg.pool)
        key = (cand.n_prefill + cand.n_decode, float(np.max(cand.state.ttft_s / ttft)))
        if best is None or key < (best.n_prefill + best.n_decode, float(np.max(best.state.ttft_s / ttft))):
            best = cand
    if best is None:
        return SplitSolution("infeasible", 0, 0, float("nan"), None, "; ".join(reasons) or "no TTFT split works")
    return best
