"""Per-request delays from a fluid trajectory in the step clock: means and percentiles (eq. sc10).

The fluid solution gives, at macro-step boundaries, the time t(s) after s engine steps, the
cumulative arrivals Lambda and the cumulative fresh admissions A. FCFS makes the admission step
of a request arriving at t_a the step at which A reaches Lambda(t_a) (not before its arrival):
that is the fluid queueing delay (eq. sc10). On top comes the step-level fluctuation that the
limit averages out but a request at scale n = 1 sees (eq. sc11): it arrives inside a step
(length-biased: a step holding more prompt tokens is longer and catches more arrivals) and
waits its residual; its own prefill step holds its prompt and the prompts that arrived with
it (compound Poisson over the fluid's local arrival rate and the workload's prompt lengths);
under vLLM V0 the first token needs one more step. The law is evaluated by sampling with a
fixed seed; its spread falls as 1/sqrt(n) under the fluid scaling. After the first token the
transport is exact in s: the last token comes D - 1 steps later (V0: at the end of step
s_a + D; V1: s_a + D - 1). Applied to every admissible request of the workload (its own
arrival time, P and D), this gives the class-resolved sojourn of each request over the length
distribution; percentiles and means are taken over the requests.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("waiting", "ttft", "tpot", "e2e")


def _increasing(x: np.ndarray) -> np.ndarray:
    """x made strictly increasing by a negligible ramp (for np.interp on flat stretches)."""
    x = np.maximum.accumulate(np.asarray(x, float))
    return x + 1e-12 * (1.0 + np.abs(x[-1])) * np.arange(len(x)) / max(len(x), 1)


def request_delays(t_b: np.ndarray, s_b: np.ndarray, arrived_b: np.ndarray, admitted_b: np.ndarray,
                   arrival_s: np.ndarray, prefill_tokens: np.ndarray, decode_tokens: np.ndarray,
                   d0_s: float, d1_prefill_s: float, first_token_in_prefill: bool, seed: int = 0,
                   fluctuations: bool = True) -> pd.DataFrame:
    """Per-request waiting, TTFT, TPOT and E2E [s] (eqs. sc10-sc11).

    Args:
        t_b, s_b: time [s] and engine steps done at the macro-step boundaries (from 0).
        arrived_b, admitted_b: cumulative arrivals and fresh admissions there [requests].
        arrival_s, prefill_tokens, decode_tokens: the requests (one replica's share).
        d0_s, d1_prefill_s: step-time coefficients (the prefill part of a step's duration).
        seed: seed of the evaluation of the step-fluctuation law (eq. sc11).
        fluctuations: False gives the fluid limit itself (n -> inf): every step lasts the local
            fluid step time and the residual is uniform over it (the crosscheck's reference).
    """
    n = len(arrival_s)
    rng = np.random.default_rng(seed)
    tb = _increasing(t_b)
    sb = _increasing(s_b)
    lam_at = np.interp(arrival_s, tb, arrived_b)
    s_arr = np.interp(arrival_s, tb, sb)
    s_q = np.maximum(np.interp(lam_at, _increasing(admitted_b), sb), s_arr)
    queue = _t_extrap(s_q, sb, tb) - arrival_s  # fluid queueing delay (FCFS backlog ahead)
    # local step time and arrival rate at each arrival (slopes of the fluid curves)
    k = np.clip(np.searchsorted(tb, arrival_s, side="right") - 1, 0, max(len(tb) - 2, 0))
    dt = np.maximum(np.diff(tb), 1e-12)
    tau = np.where(np.diff(sb) > 1e-9, dt / np.maximum(np.diff(sb), 1e-12), d0_s)[k]
    lam = (np.diff(arrived_b) / dt)[k]
    P = np.asarray(prefill_tokens, float)
    D = np.asarray(decode_tokens, float)
    P_mean = float(P.mean()) if n else 0.0
    # eq. sc11: a step's duration is b + d1p * Y, Y the prompts admitted in it: compound Poisson
    # over the arrivals of the previous step (mean count lam * tau, prompts from the workload)
    m = lam * tau
    b = np.maximum(tau - d1_prefill_s * m * P_mean, d0_s)

    def compound(mean_count):
        cnt = rng.poisson(np.maximum(mean_count, 0.0))
        draws = rng.choice(P, size=int(cnt.sum())) if cnt.sum() and n else np.zeros(0)
        idx = np.repeat(np.arange(n), cnt)
        return np.bincount(idx, draws, minlength=n)

    # the step an arrival falls into is length-biased: with prob b / E[tau] an ordinary step,
    # else one holding an extra size-biased prompt
    biased = rng.random(n) >= b / np.maximum(b + d1_prefill_s * m * P_mean, 1e-300)
    size_biased = rng.choice(P, size=n, p=P / P.sum()) if n else np.zeros(0)
    tau_in = b + d1_prefill_s * (compound(m) + biased * size_biased) if fluctuations else tau
    wait = queue + rng.random(n) * tau_in  # residual of the step in progress
    tau_prefill = b + d1_prefill_s * (P + compound(lam * tau_in)) if fluctuations else tau  # own prefill step
    s_a = np.interp(arrival_s + wait, tb, sb)

    def t_of(s):
        return _t_extrap(s, sb, tb)

    if first_token_in_prefill:
        ttft = wait + tau_prefill
        rest = t_of(s_a + np.maximum(D, 1.0)) - t_of(s_a + 1.0)
    else:
        tau_first = b + d1_prefill_s * compound(lam * tau_prefill) if fluctuations else tau  # decode iteration 0
        ttft = wait + tau_prefill + tau_first
        rest = t_of(s_a + 1.0 + D) - t_of(s_a + 2.0)
    e2e = ttft + rest
    tpot = np.where(D > 1, (e2e - ttft) / np.maximum(D - 1.0, 1.0), np.nan)
    return pd.DataFrame({"arrival_s": arrival_s, "waiting": wait, "ttft": ttft, "tpot": tpot, "e2e": e2e})


def _t_extrap(s, sb, tb):
    """t(s) interpolated; beyond the last boundary extended with the last step time."""
    t = np.interp(s, sb, tb)
    if len(sb) > 1:
        last_tau = (tb[-1] - tb[-2]) / max(sb[-1] - sb[-2], 1e-12)
        t = np.where(s > sb[-1], tb[-1] + (s - sb[-1]) * last_tau, t)
    return t


def percentiles(delays: pd.DataFrame, q=(50, 90, 99)) -> dict:
    """{metric: {"p50": .., "p90": .., "p99": .., "mean": ..}} over the requests [s]."""
    out = {}
    for m in METRICS:
        x = delays[m].to_numpy(dtype=float)
        x = x[np.isfinite(x)]
        out[m] = {f"p{int(p) if float(p).is_integer() else p}": (float(np.percentile(x, p)) if len(x) else float("nan"))
                  for p in q}
        out[m]["mean"] = float(x.mean()) if len(x) else float("nan")
    return out
