"""The fast screen: closed-form pruning, then predicted percentiles for every remaining candidate.

Two layers, each behind a small interface:

1. :func:`stability_bound` (closed forms, eqs. 17-19 of ``fluidserve.fluid.closed_forms``): a
   fleet of n replicas whose capacity-bound throughput n X_max is below the mean arrival rate
   cannot keep up, so every smaller n is pruned without evaluating it.
2. A *latency model* (:class:`LatencyModel`: ``predict(rtype, replicas, traffic, plan) -> dict``)
   predicts the per-class percentiles and attainment of :mod:`.slo` and the energy per token.
   Models are registered in :data:`LATENCY_MODELS` by name (``search.screen``); the fluid model's
   percentile function plugs in there as one more entry.

The shipped model, :class:`QuasiStaticTails` (``quasistatic_tails``), is a documented
approximation; its error against the simulator is printed beside every verified candidate:

* per rate bin b (``search.bin_s``) and replica (the load split evenly, as least_loaded and
  round_robin do on average): the capacity X_b = c*/(d0 + c* w) of the bin's mean request and the
  exact fluid queue (``fluidserve.fluid.quasistatic.fluid_queue``) give the deterministic wait
  V(t) = Q(t)/X_b of a request arriving at t, and the step time tau = d0/(1 - x w) at the
  admission rate x;
* queueing from fluctuations below capacity: Sakasegawa's M/G/n approximation of a pooled
  queue of n servers of rate X_b at utilization u = lambda_b/X_b: a request waits with probability
  u^(sqrt(2(n+1)) - 1), and then Exp-distributed with mean (c_a^2 + c_s^2) / (2 n X_b (1 - u)),
  with c_a^2 the squared CV of the inter-arrival gaps (rescaled by each bin's rate) and c_s^2 that
  of the per-request work;
* the prefill work of other requests in a step is compound Poisson: variance
  v = tau x E[(d1_prefill min(P, B))^2] per step (as ``fluidserve.policy.problem``);
* a request's TTFT = V + W + (o + k) tau + d1_prefill P + Normal(0, (o + k) v) (half a step,
  k prefill steps of at most B minus the decode tokens of a step, and under the ``vllm_v0``
  engine one decode step for the first token: o = 1.5, under ``vllm_v1`` o = 0.5, as vLLM
  samples it in the last prefill step; its own prefill work on top of the mean step); TPOT = tau + Normal(0, v / (D - 1)); E2E = TTFT + (D - 1)
  TPOT;
* synthetic traffic (constant rates) uses one bin over the whole window, so that Poisson noise of
  short bins is not counted twice (once as rate changes, once as fluctuations);
* percentiles of the class's mixture of these per-request laws (exponentially modified Gaussian
  CDFs, averaged, inverted by bisection; at most 3000 requests per class, every k-th); attainment = mean over requests of the product of the
  per-threshold probabilities (independence assumed); energy per token from the steady-state
  power (1 - rho - pi0) E0/d0 + x E[e] + pi0 idle_w, pi0 = exp(-running).

Requests the engine rejects (too long for the KV cache, or for the token budget without chunked
prefill) count as never served.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np
from scipy.special import log_ndtr, ndtr

from fluidserve.fluid.classes import admissible
from fluidserve.fluid.closed_forms import capacity_arrays, tau_star_arrays
from fluidserve.fluid.quasistatic import PREFILL_OFFSET_STEPS, bin_mix, fluid_queue
from fluidserve.plan import slo

_BISECTIONS = 24  # log-space bisection steps per quantile
_MAX_SCREEN_REQUESTS = 3000  # the screen evaluates every k-th request beyond this


class LatencyModel(Protocol):
    """What the screen needs of a model: per-class stats (see :mod:`.slo`) and energy per token."""

    name: str

    def predict(self, rtype, replicas: int, traffic, plan) -> dict:
        """``{"per_class": {class: stats}, "energy_per_token_j": float}``."""


def stability_bound(rtype, traffic, plan) -> dict:
    """Closed-form capacity of one replica over the whole workload, and the least stable replica count.

    Returns ``capacity_rps`` (X_max of the mean request), ``binding_limit`` and ``min_replicas``
    (ceil(mean arrival rate / X_max), at least 1).
    """
    from fluidserve.fluid.closed_forms import steady_state

    cfg = rtype.run_config(1, plan)
    w = traffic.workload
    s = cfg.system
    ok = admissible(w, s.total_blocks, s.block_size, s.B, s.chunked_prefill)
    if not ok.any():
        return {"capacity_rps": 0.0, "binding_limit": "request size", "min_replicas": math.inf}
    mix = bin_mix(w, cfg, max(w.arrival_time_s[-1], 1.0) + 1.0, pooled=True)
    st = steady_state(rtype.batch_time, 1.0, float(mix["P"][0]), float(mix["D"][0]), float(mix["K"][0]),
                      float(mix["Kb"][0]), s.M_total, s.B, s.max_num_seqs)
    rate = len(w) / max(w.duration_s, 1e-9)
    x = float(st["throughput_max"])
    return {"capacity_rps": x, "binding_limit": st["binding_limit"],
            "min_replicas": max(1, math.ceil(rate / x * (1 - 1e-9))) if x > 0 else math.inf}


def _exgauss_cdf(x, mu, sigma, p_wait, theta):
    """P(mu + E + N(0, sigma^2) <= x), E ~ Exp(theta) with probability p_wait, else 0 (arrays, broadcast)."""
    d = x - mu
    if not np.any(sigma > 0):  # no Gaussian part: an atom at mu plus an exponential tail
        with np.errstate(over="ignore"):
            tail = np.exp(-theta * np.maximum(d, 0.0))
        return np.where(d >= 0, 1.0 - p_wait * tail, 0.0)
    sigma = np.maximum(sigma, 1e-12)
    u = d / sigma
    base = ndtr(u)
    with np.errstate(over="ignore", invalid="ignore"):
        tail = np.exp(np.minimum(-theta * d + 0.5 * (theta * sigma) ** 2 + log_ndtr(u - theta * sigma), 0.0))
    tail = np.where(np.isfinite(tail), tail, 0.0)
    return np.clip(base - p_wait * tail, 0.0, 1.0)


def _quantiles(mu, sigma, p_wait, theta, qs, weight_rejected: float) -> list[float]:
    """Quantiles of the request mixture (plus a share ``weight_rejected`` never served: inf).

    Bisection in log(x) on the mixture CDF, all percentiles at once (relative precision 1e-6).
    """
    if not len(mu):
        return [math.inf] * len(qs)
    target = np.asarray(qs, float) / 100.0
    lo = np.full(len(qs), math.log(max(float(np.min(mu)) * 0.5, 1e-7)))
    hi_x = float(np.max(mu + 8 * sigma + np.where(p_wait > 0, 20.0 / theta, 0.0))) * 1.05 + 1e-6
    hi = np.full(len(qs), math.log(hi_x))
    served = 1.0 - weight_rejected
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        F = _exgauss_cdf(np.exp(mid)[:, None], mu, sigma, p_wait, theta).mean(axis=1) * served
        below = F < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return [math.inf if t > served + 1e-12 else float(math.exp(h)) for t, h in zip(target, hi)]


def _cv2(x: np.ndarray) -> float:
    x = np.asarray(x, float)
    m = x.mean() if len(x) else 0.0
    return float(x.var() / m**2) if m > 0 else 1.0


class QuasiStaticTails:
    """Quasi-static fluid queue + M/G/n waiting tail + prefill-interference TPOT spread (see module doc)."""

    name = "quasistatic_tails"

    def predict(self, rtype, replicas: int, traffic, plan) -> dict:
        n = int(replicas)
        bin_s = float(plan.search.bin_s)
        if all(c.trace is None for c in plan.traffic.classes):  # constant rates: one bin, no sampling noise
            bin_s = max(bin_s, float(traffic.workload.arrival_time_s[-1]) + 1e-6)
        cfg = rtype.run_config(n, plan)
        s = cfg.system
        bt = rtype.batch_time
        w = traffic.workload
        ok = admissible(w, s.total_blocks, s.block_size, s.B, s.chunked_prefill)
        if not ok.any():
            never = {c.name: _never_served(plan, k) for k, c in enumerate(plan.traffic.classes)}
            return {"per_class": never, "energy_per_token_j": math.nan}
        mix = bin_mix(w, cfg, bin_s)
        t = w.arrival_time_s[ok]
        P = w.prefill_tokens[ok].astype(float)
        D = w.decode_tokens[ok].astype(float)
        nb = len(mix["count"])
        b_req = np.minimum((t // bin_s).astype(np.int64), nb - 1)
        lam = mix["count"] / bin_s / n
        capa = capacity_arrays(bt, mix["P"], mix["D"], mix["K"], mix["Kb"], s.M_total, s.B, s.max_num_seqs)
        X = np.maximum(capa["throughput_max"], 1e-12)
        seg = fluid_queue(lam, X, bin_s)
        # each request's segment: fluid backlog at arrival, admission rate, step time
        i_seg = np.minimum(np.searchsorted(seg["t1"], t, side="right"), len(seg["t1"]) - 1)
        q = np.maximum(seg["q0"][i_seg] + seg["slope"][i_seg] * (t - seg["t0"][i_seg]), 0.0)
        x_seg = seg["x"]
        w_seg = np.maximum(capa["work_s"][seg["bin"]], 1e-30)
        rate_seg = np.minimum(x_seg, 0.999 / w_seg)
        tau_seg = tau_star_arrays(bt, rate_seg, mix["P"][seg["bin"]], mix["D"][seg["bin"]], mix["K"][seg["bin"]])
        tau = tau_seg[i_seg]
        x = x_seg[i_seg]
        Xb = X[b_req]
        V = q / Xb
        # fluctuation waiting, M/G/n (Sakasegawa)
        gaps = np.diff(t) * lam[b_req[1:]] * n
        ca2 = _cv2(gaps) if len(gaps) > 1 else 1.0
        cs2 = _cv2(bt.work_per_request(P, D))
        u = np.clip(lam[b_req] / Xb, 0.0, 0.999)
        p_wait = u ** (math.sqrt(2 * (n + 1)) - 1)
        theta = 2.0 * n * Xb * (1 - u) / max(ca2 + cs2, 1e-9)
        # service: chunked prefill steps, first decode step, TPOT spread from prefill interference
        decode_per_step = x * tau * mix["D"][b_req]
        b_avail = np.maximum(s.B - decode_per_step, 1.0)
        k = np.ceil(P / b_avail) if s.chunked_prefill else np.ones_like(P)
        # vLLM V1 samples the first token in the (last) prefill step; the V0 engine one step later
        first_offset = 0.5 if getattr(s, "scheduler", "vllm_v0") == "vllm_v1" else PREFILL_OFFSET_STEPS
        ttft_mu = V + (first_offset + k) * tau + bt.d1_prefill_s * P
        ex2 = float(np.mean((bt.d1_prefill_s * np.minimum(P, s.B)) ** 2))
        step_var = tau * x * ex2  # variance of one step's prefill work from other requests [s^2]
        tpot_sigma = np.sqrt(step_var / np.maximum(D - 1, 1.0))
        ttft_sigma = np.sqrt((first_offset + k) * step_var)
        tpot_mu = tau
        e2e_mu = ttft_mu + (D - 1) * tau
        e2e_sigma = np.sqrt(ttft_sigma**2 + ((D - 1) * tpot_sigma) ** 2)
        zeros = np.zeros_like(P)
        laws = {
            "ttft": (ttft_mu, ttft_sigma, p_wait, theta),
            "tpot": (tpot_mu, tpot_sigma, zeros, np.ones_like(P)),
            "e2e": (e2e_mu, e2e_sigma, p_wait, theta),
        }
        cls = traffic.class_index[ok]
        meas = traffic.measured[ok]
        cls_all = traffic.class_index
        qs = slo.class_percentiles(plan)
        per_class = {}
        for kc, c in enumerate(plan.traffic.classes):
            m_all = (cls_all == kc) & traffic.measured
            if not m_all.any():
                continue
            m = (cls == kc) & meas
            rejected = 1.0 - m.sum() / m_all.sum()
            idx = _every_kth(np.flatnonzero(m))
            st = {"requests": int(m_all.sum())}
            for metric, (mu, sig, pw, th) in laws.items():
                sel = idx if metric != "tpot" else idx[D[idx] > 1]
                vals = _quantiles(mu[sel], sig[sel], pw[sel], th[sel], qs[kc], rejected)
                for qq, v in zip(qs[kc], vals):
                    st[slo.stat_key(metric, qq)] = v
            prob = np.ones(len(idx))
            for metric, _, thr in c.slo.thresholds:
                mu, sig, pw, th = laws[metric]
                p_ok = _exgauss_cdf(thr, mu[idx], sig[idx], pw[idx], th[idx])
                if metric == "tpot":
                    p_ok = np.where(D[idx] > 1, p_ok, 1.0)
                prob *= p_ok
            st["attainment"] = float(prob.mean() * (1 - rejected)) if len(idx) else 0.0
            per_class[c.name] = st
        return {"per_class": per_class, "energy_per_token_j": _energy_per_token(rtype, seg, mix, capa, n, bin_s)}


def _every_kth(idx: np.ndarray) -> np.ndarray:
    if len(idx) <= _MAX_SCREEN_REQUESTS:
        return idx
    return idx[:: int(math.ceil(len(idx) / _MAX_SCREEN_REQUESTS))]


def _never_served(plan, k: int) -> dict:
    st = {slo.stat_key(m, q): math.inf for m in slo.METRICS for q in slo.class_percentiles(plan)[k]}
    st["attainment"] = 0.0
    return st


def _energy_per_token(rtype, seg, mix, capa, n: int, bin_s: float) -> float:
    """Steady-state energy per output token over the queue's segments [J/token]."""
    b = seg["bin"]
    dt = seg["t1"] - seg["t0"]
    x = seg["x"]
    wk = capa["work_s"][b]
    rho = np.minimum(x * wk, 0.999)
    tau = rtype.batch_time.d0_s / (1 - rho)
    running = x * tau * mix["D"][b]
    pi0 = np.exp(-running)
    e = rtype.energy
    e_req = e.work_per_request(mix["P"][b], mix["D"][b])
    power = np.maximum(1 - rho - pi0, 0.0) * e.d0_s / rtype.batch_time.d0_s + x * e_req + pi0 * rtype.idle_w
    tokens = float((x * mix["D"][b] * dt).sum())
    return float((power * dt).sum() / tokens) if tokens > 0 else math.nan


def _fluid_stepclock():
    from fluidserve.plan.fluid_screen import FluidStepClock

    return FluidStepClock()


#: Registered latency models (``search.screen``): name -> factory.
LATENCY_MODELS: dict[str, object] = {QuasiStaticTails.name: QuasiStaticTails, "fluid_stepclock": _fluid_stepclock}


def latency_model(name: str) -> LatencyModel:
    return LATENCY_MODELS[name]()
