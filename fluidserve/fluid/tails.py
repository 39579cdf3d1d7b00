"""Per-request delays from a fluid trajectory in the step clock: means and percentiles (eq. sc10).

The fluid solution gives, at macro-step boundaries, the time t(s) after s engine steps, the
cumulative arrivals Lambda and the cumulative fresh admissions A. FCFS makes the admission step
of a request arriving at t_a the step at which A reaches Lambda(t_a) (not before its arrival):
that is the fluid queueing delay (eq. sc10). On top comes the step-level fluctuation that the
limit averages out but a request at scale n = 1 sees (eq. sc11): it arrives inside a step
(at a uniform fraction of it) and waits its residual; a step lasts its fluid decode part b
plus d1_prefill times the prompt tokens admitted in it, which are the prompts of the requests
that arrived during the step before (counted on the workload's own arrival times, so bursts
and heavy prompts are seen as they are); its own prefill step holds its prompt and the prompts
of its peers (those that arrived in the same step); under vLLM V0 the first token needs one
more step. Under the fluid scaling the spread of these sums falls as 1/sqrt(n). After the first token the
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
                   fluctuations: bool = True, chunk_budget_tokens: np.ndarray | None = None,
                   budget_tokens: np.ndarray | None = None) -> pd.DataFrame:
    """Per-request waiting, TTFT, TPOT and E2E [s] (eqs. sc10-sc11).

    Args:
        t_b, s_b: time [s] and engine steps done at the macro-step boundaries (from 0).
        arrived_b, admitted_b: cumulative arrivals and fresh admissions there [requests].
        arrival_s, prefill_tokens, decode_tokens: the requests (one replica's share).
        d0_s, d1_prefill_s: step-time coefficients (the prefill part of a step's duration).
        seed: seed of the evaluation of the step-fluctuation law (eq. sc11).
        fluctuations: False gives the fluid limit itself (n -> inf): every step lasts the local
            fluid step time and the residual is uniform over it (the crosscheck's reference).
        chunk_budget_tokens: with chunked prefill, the token budget left to prefill at each
            boundary (B minus the decoding requests) [tokens]: a prompt longer than that (with its
            peers) is prefilled over several steps that each spend it (None: one prefill step).
        budget_tokens: without chunking, the same budget left per boundary (for eq. sc12).
    """
    n = len(arrival_s)
    rng = np.random.default_rng(seed)
    tb = _increasing(t_b)
    sb = _increasing(s_b)
    lam_at = np.interp(arrival_s, tb, arrived_b)
    s_arr = np.interp(arrival_s, tb, sb)
    # a request is scheduled at the step after the one it arrives in (eq. sc8): the admissions
    # through step s + 1 are those that arrived by step s, so FCFS reads the curve one step ahead
    ahead = np.interp(sb + 1.0, sb, np.asarray(admitted_b, float))
    s_q = np.maximum(np.interp(lam_at, _increasing(ahead), sb), s_arr)
    queue = _t_extrap(s_q, sb, tb) - arrival_s  # fluid queueing delay (FCFS backlog ahead)
    # local step time and arrival rate at each arrival (slopes of the fluid curves)
    k = np.clip(np.searchsorted(tb, arrival_s, side="right") - 1, 0, max(len(tb) - 2, 0))
    dt = np.maximum(np.diff(tb), 1e-12)
    tau = np.where(np.diff(sb) > 1e-9, dt / np.maximum(np.diff(sb), 1e-12), d0_s)[k]
    lam = (np.diff(arrived_b) / dt)[k]
    P = np.asarray(prefill_tokens, float)
    D = np.asarray(decode_tokens, float)
    u = rng.random(n)  # where in the step in progress the request arrives (fraction elapsed)
    if fluctuations:
        # eq. sc11: a step lasts b + d1p * (prompt tokens admitted in it), the prompts of the
        # requests that arrived during the previous step: counted on the actual arrivals
        order = np.argsort(arrival_s, kind="stable")
        t_sorted = np.asarray(arrival_s, float)[order]
        cum_p = np.concatenate([[0.0], np.cumsum(P[order])])

        def prompts(lo, hi):
            return cum_p[np.searchsorted(t_sorted, hi, side="left")] - cum_p[np.searchsorted(t_sorted, lo, side="left")]

        P_mean = float(P.mean()) if n else 0.0
        b = np.maximum(tau - d1_prefill_s * lam * tau * P_mean, d0_s)
        tau_in = tau
        for _ in range(2):  # the step in progress, from the arrivals of the step before it
            start = arrival_s - u * tau_in
            tau_in = b + d1_prefill_s * prompts(start - tau_in, start)
        start = arrival_s - u * tau_in
        end = start + tau_in
        wait = queue + (end - arrival_s)
        peers = prompts(start, end + 1e-12)  # its prompt and its peers'
        tau_prefill = b + d1_prefill_s * peers  # its own prefill step
        if chunk_budget_tokens is not None:  # chunked prefill: several steps that spend the budget
            left = np.maximum(np.interp(arrival_s, tb, chunk_budget_tokens), 1.0)
            chunks = peers / left
            tau_prefill = np.where(chunks > 1.0, chunks * (b + d1_prefill_s * left), tau_prefill)
        tau_first = b + d1_prefill_s * prompts(end, end + tau_prefill)  # V0: decode iteration 0
        # eq. sc12: the prefill token queue on the actual arrivals (Lindley's recursion), served at
        # the budget left by the decoding requests, full steps of b + d1p * budget seconds: a
        # long prompt delays the prompts behind it (head-of-line, FCFS) beyond one step
        left = np.maximum(np.interp(arrival_s, tb, chunk_budget_tokens), 1.0) if chunk_budget_tokens is not None \
            else np.maximum(np.interp(arrival_s, tb, budget_tokens), 1.0) if budget_tokens is not None else None
        if left is not None:
            rate = left / (b + d1_prefill_s * left)  # prompt tokens per second at full budget
            r_s, P_s = rate[order], P[order]
            X = np.concatenate([[0.0], P_s[:-1] - r_s[1:] * np.diff(t_sorted)])
            S = np.cumsum(X)
            ahead = np.empty(n)
            ahead[order] = S - np.minimum(0.0, np.minimum.accumulate(S))  # tokens ahead at arrival
            wait = np.maximum(wait, queue + ahead / rate)
            done_prefill = queue + (ahead + P) / rate
            tau_prefill = np.maximum(tau_prefill, done_prefill - wait)
    else:
        wait = queue + (1.0 - u) * tau
        tau_prefill = tau_first = tau
    s_a = np.interp(arrival_s + wait, tb, sb)

    def t_of(s):
        return _t_extrap(s, sb, tb)

    if first_token_in_prefill:
        ttft = wait + tau_prefill
        rest = t_of(s_a + np.maximum(D, 1.0)) - t_of(s_a + 1.0)
    else:
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
