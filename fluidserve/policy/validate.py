"""Replay an LP policy in the discrete simulator and compare it with baselines.

Every GPU of every pool is one :class:`~fluidserve.sim.engine.ReplicaEngine` whose step time is
the pool's batch-time model at the replica's clock. A router sends each request to a replica:

* ``lp``: class k goes to sub-pool s with the LP's fractions x[k, s] / lambda_k (``validation.lp_split``:
  ``random`` splitting keeps every sub-pool's arrivals Poisson, as the LP's fluid model assumes;
  ``smooth_round_robin`` is deterministic and smoother), then to the least-loaded (or next, round
  robin) replica of s;
  the LP's idle replicas receive nothing;
* ``round_robin`` / ``least_loaded``: over all replicas, every GPU at its highest clock;
* ``best_single_clock``: least loaded over all replicas, every pool at its i-th highest clock,
  for each i; the lowest simulated energy per token among those that meet the SLOs.

Energy per replica integrates the step energy of :meth:`PoolModel.energy_model` over its steps
(the pool's measured :class:`~fluidserve.energy.StepEnergyModel` at the default clock where it has
one, scaled by the DVFS response only for a lower clock; swap time at idle power) plus idle power
(measured where available) over the time it does not step, in the
measurement window [warmup_fraction x last arrival, last arrival]. Energy per output token is that
energy over the decode iterations (output tokens) executed in the window. SLO attainment is the
share of requests arriving in the window whose TTFT and TPOT are within their class's SLOs
(rejected requests count as misses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fluidserve.config import BatchTimeConfig, Config, SimConfig
from fluidserve.errors import InputError
from fluidserve.policy.lp import LpSolution
from fluidserve.policy.lp_config import LpConfig
from fluidserve.policy.problem import PoolModel, pool_models
from fluidserve.policy.steady import mean_ttft_s, steady_state
from fluidserve.sim.routers import dispatch, make_router, route
from fluidserve.sim.simulator import collect, make_engine
from fluidserve.workload.arrivals import poisson_arrivals
from fluidserve.workload.base import Workload


def class_workload(cfg: LpConfig, num_requests: int, seed: int, scale: float = 1.0) -> Workload:
    """Poisson arrivals of all classes (superposed), lengths per class; ``priority`` = class index."""
    rates = np.array([c.rate for c in cfg.classes]) * scale
    rng = np.random.default_rng(seed)
    arrivals = poisson_arrivals(num_requests, float(rates.sum()), rng)
    cls = rng.choice(len(rates), size=num_requests, p=rates / rates.sum())
    prefill = np.empty(num_requests, dtype=np.int64)
    decode = np.empty(num_requests, dtype=np.int64)
    for k, c in enumerate(cfg.classes):
        m = cls == k
        prefill[m], decode[m] = c.law.sample(int(m.sum()), rng)
    return Workload(arrivals, prefill, decode, cls, name=f"{cfg.name}-classes")


@dataclass(frozen=True)
class Replica:
    """One GPU: its pool, locked clock [MHz], the LP sub-pool it serves (-1: none) and whether idle."""

    pool: int
    clock_mhz: float
    subpool: int = -1
    idle: bool = False


@dataclass
class PolicyOutcome:
    """What one simulated policy achieved (energies in J, power in W, times in s)."""

    name: str
    energy_per_token_j: float
    power_w: float
    slo_attainment: float
    class_attainment: dict[str, float]
    slos_met: bool
    mean_ttft_s: dict[str, float]
    mean_tpot_s: dict[str, float]
    tokens: int
    window_s: float
    completed: int
    rejected: int
    clocks: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


def lp_layout(sol: LpSolution) -> list[Replica]:
    """Replicas of the LP policy: whole GPUs per sub-pool, the rest idle.

    Integer solutions are used as they are. A relaxation is rounded per pool: every sub-pool with
    traffic gets max(1, round(y)) GPUs; if that exceeds the pool, the sub-pools rounded up the most
    give one back (never below 1); the remaining GPUs are idle.
    """
    pb = sol.problem
    out: list[Replica] = []
    for j in range(len(pb.pool_names)):
        subs = np.flatnonzero((pb.s_pool == j) & (sol.y > 1e-9))
        n = int(pb.pool_count[j])
        cnt = np.maximum(1, np.round(sol.y[subs])).astype(int)
        while cnt.sum() > n:
            over = np.where(cnt > 1, cnt - sol.y[subs], -np.inf)
            if not np.isfinite(over.max()):
                raise InputError(
                    f"pool '{pb.pool_names[j]}': the LP relaxation uses {len(subs)} clock/SLO sub-pools on {n} GPUs; "
                    "solve with integer GPU counts (integer: true) to replay it"
                )
            cnt[int(np.argmax(over))] -= 1
        for s, c in zip(subs, cnt):
            out += [Replica(j, float(pb.s_clock[s]), int(s))] * int(c)
        out += [Replica(j, float(pb.pool_max_clock[j]), -1, idle=True)] * int(n - cnt.sum())
    return out


def uniform_layout(pools: list[PoolModel], clock_index_from_top: int = 0) -> list[Replica]:
    """All GPUs of each pool at its i-th highest clock (clamped to the lowest)."""
    out = []
    for j, p in enumerate(pools):
        clocks = sorted(p.clocks_mhz)
        f = clocks[max(0, len(clocks) - 1 - clock_index_from_top)]
        out += [Replica(j, float(f))] * p.count
    return out


def _pool_config(cfg: LpConfig, j: int) -> Config:
    p = cfg.pools[j]
    bt = BatchTimeConfig(**p.batch_time_model(Path(cfg.base_dir) if cfg.base_dir else None).to_dict())  # preset resolved
    return Config(
        name=f"{cfg.name}-{p.name}", seed=cfg.seed, system=p.system, batch_time=bt, policy=cfg.policy,
        sim=SimConfig(record_events=False, snapshot_every=1),
    )


def simulate_policy(
    cfg: LpConfig,
    layout: list[Replica],
    workload: Workload,
    router: str,
    sol: LpSolution | None = None,
    within: str = "least_loaded",
    pools: list[PoolModel] | None = None,
):
    """Run the workload on ``layout`` with ``router`` in {'lp', 'round_robin', 'least_loaded'}.

    Returns the engines (for energy accounting) and the collected SimResult.
    """
    pools = pool_models(cfg) if pools is None else pools
    pcfgs = [_pool_config(cfg, j) for j in range(len(pools))]
    engines = []
    for r, rep in enumerate(layout):
        p = pools[rep.pool]
        bt = p.freq.batch_time(p.batch_time, rep.clock_mhz)
        engines.append(make_engine(pcfgs[rep.pool], replica=r, batch_time=bt))
    n = len(workload)
    arr = workload.arrival_time_s.tolist()
    P = workload.prefill_tokens.tolist()
    D = workload.decode_tokens.tolist()
    cls = workload.priority.tolist()

    if router in ("round_robin", "least_loaded"):
        dispatch(make_router(router), engines, arr, lambda i, r: engines[r].submit(i, arr[i], P[i], D[i], 0))
    elif router == "lp":
        if sol is None:
            raise ValueError("router 'lp' needs the LP solution")
        pb = sol.problem
        members: dict[int, list[int]] = {}
        for r, rep in enumerate(layout):
            if rep.subpool >= 0:
                members.setdefault(rep.subpool, []).append(r)
        K = len(pb.class_names)
        # per class: sub-pools with replicas and their weights
        targets, weights = [], []
        for k in range(K):
            arcs = np.flatnonzero((pb.a_class == k) & (sol.x > 1e-9))
            subs = [int(pb.a_sub[a]) for a in arcs if int(pb.a_sub[a]) in members]
            w = np.array([sol.x[a] for a in arcs if int(pb.a_sub[a]) in members], dtype=float)
            if not subs:
                raise RuntimeError(f"LP policy leaves class '{pb.class_names[k]}' without a replica")
            targets.append(subs)
            weights.append(w / w.sum())
        current = [np.zeros(len(t)) for t in targets]
        inner = make_router(within)
        split = cfg.validation.lp_split
        rng = np.random.default_rng(cfg.seed + 17)
        for i in range(n):
            k = cls[i]
            if split == "random":  # Poisson thinning: each sub-pool sees Poisson arrivals (the LP's model)
                t = int(rng.choice(len(weights[k]), p=weights[k])) if len(weights[k]) > 1 else 0
            else:  # smooth weighted round robin: deterministic, smoother arrivals than Poisson
                cur = current[k]
                cur += weights[k]
                t = int(np.argmax(cur))
                cur[t] -= 1.0
            s = targets[k][t]
            best = route(inner, engines, arr[i], members[s])
            engines[best].submit(i, arr[i], P[i], D[i], 0)
    else:
        raise ValueError(f"unknown router {router!r}")
    for e in engines:
        e.run()
    return engines, collect(engines, workload)


def replica_energy(eng, pool: PoolModel, clock_mhz: float, t0: float, t1: float) -> tuple[float, int, float]:
    """(energy J, output tokens, busy s) of one engine over steps starting in [t0, t1)."""
    idle_w = pool.idle_w
    frame = eng.snapshot_frame()
    if frame.empty:
        return idle_w * (t1 - t0), 0, 0.0
    cols = ["time", "prefill_tokens", "decode_tokens", "kv_tokens", "batch_duration"]
    t, pre, dec, kv, dt = frame[cols].to_numpy(dtype=np.float64).T
    m = (t >= t0) & (t < t1)
    bt = pool.freq.batch_time(pool.batch_time, clock_mhz)
    en = pool.energy_model(clock_mhz)
    step_e = en.step_time(pre[m], dec[m], kv[m])
    swap_s = dt[m] - bt.step_time(pre[m], dec[m], kv[m])
    busy = float(dt[m].sum())
    energy = float(step_e.sum() + idle_w * swap_s.sum() + idle_w * max(0.0, (t1 - t0) - busy))
    return energy, int(dec[m].sum()), busy


def measure(
    name: str,
    cfg: LpConfig,
    layout: list[Replica],
    engines,
    result,
    workload: Workload,
    pools: list[PoolModel],
) -> PolicyOutcome:
    """Energy per token and SLO attainment of a finished simulation (see the module docstring)."""
    t1 = float(workload.arrival_time_s[-1])
    t0 = cfg.validation.warmup_fraction * t1
    energy, tokens = 0.0, 0
    for eng, rep in zip(engines, layout):
        e, tok, _ = replica_energy(eng, pools[rep.pool], rep.clock_mhz, t0, t1)
        energy += e
        tokens += tok
    req = result.requests
    in_win = (req["arrival_time"] >= t0) & (req["arrival_time"] <= t1)
    req = req[in_win]
    k_of = workload.priority[req["req_id"].to_numpy()]
    ttft_slo = np.array([c.ttft_s for c in cfg.classes])[k_of]
    tpot_slo = np.array([c.tpot_s for c in cfg.classes])[k_of]
    ttft = req["ttft"].to_numpy(dtype=float)
    tpot = req["tpot"].to_numpy(dtype=float)
    ok = (ttft <= ttft_slo) & (np.isnan(tpot) | (tpot <= tpot_slo)) & req["completion_time"].notna().to_numpy()
    rej = result.rejected
    rej_k = (
        workload.priority[rej["req_id"].to_numpy(dtype=int)][
            ((rej["arrival_time"] >= t0) & (rej["arrival_time"] <= t1)).to_numpy()
        ]
        if len(rej)
        else np.zeros(0, dtype=int)
    )
    per_class, mean_ttft, mean_tpot = {}, {}, {}
    for k, c in enumerate(cfg.classes):
        m = k_of == k
        total = int(m.sum()) + int((rej_k == k).sum())
        per_class[c.name] = float(ok[m].sum() / total) if total else float("nan")
        mean_ttft[c.name] = float(np.nanmean(ttft[m])) if m.any() else float("nan")
        mean_tpot[c.name] = float(np.nanmean(tpot[m])) if m.any() and np.isfinite(tpot[m]).any() else float("nan")
    total = len(ok) + len(rej_k)
    att = float(ok.sum() / total) if total else float("nan")
    target = cfg.validation.slo_target
    clocks: dict[str, list] = {}
    for rep in layout:
        clocks.setdefault(pools[rep.pool].name, []).append("idle" if rep.idle else rep.clock_mhz)
    return PolicyOutcome(
        name=name,
        energy_per_token_j=energy / tokens if tokens else float("nan"),
        power_w=energy / (t1 - t0),
        slo_attainment=att,
        class_attainment=per_class,
        slos_met=bool(all(v >= target for v in per_class.values() if not math.isnan(v))),
        mean_ttft_s=mean_ttft,
        mean_tpot_s=mean_tpot,
        tokens=tokens,
        window_s=t1 - t0,
        completed=int(result.requests["completion_time"].notna().sum()),
        rejected=len(result.rejected),
        clocks=clocks,
    )


def lp_predictions(sol: LpSolution, cfg: LpConfig, pools: list[PoolModel] | None = None) -> dict:
    """Fluid predictions of the LP policy: power, energy/token, mean TTFT/TPOT per class."""
    pools = pool_models(cfg) if pools is None else pools
    pb = sol.problem
    laws = [c.law for c in cfg.classes]
    K = len(laws)
    ttft_num = np.zeros(K)
    tpot_num = np.zeros(K)
    rows = []
    power = float(pb.pool_idle_w @ sol.idle)
    for s in np.flatnonzero(sol.y > 1e-9):
        j = int(pb.s_pool[s])
        pool, f, y = pools[j], float(pb.s_clock[s]), float(sol.y[s])
        arcs = np.flatnonzero(pb.a_sub == s)
        rates = np.zeros(K)
        rates[pb.a_class[arcs]] = sol.x[arcs] / y
        bt = pool.freq.batch_time(pool.batch_time, f)
        en = pool.energy_model(f)
        ss = steady_state(bt, rates, laws, pool.block_size)
        e_req = np.array([law.expect(en.work_per_request) for law in laws])
        p_rep = (1.0 - ss.rho) * en.d0_s / bt.d0_s + float(rates @ e_req)
        power += y * p_rep
        ttft_k = mean_ttft_s(bt, rates, laws, ss)
        ttft_num += rates * y * ttft_k
        tpot_num += rates * y * ss.tau_s
        rows.append({
            "pool": pool.name, "clock_mhz": f, "slo_group": list(pb.groups[pb.s_group[s]]), "replicas": y,
            "rho": ss.rho, "tau_s": ss.tau_s, "running": ss.running, "kv_tokens": ss.kv_tokens,
            "power_per_replica_w": p_rep, "cap": float(pb.s_rho_cap[s]), "cap_reason": pb.s_cap_reason[s],
        })
    served = pb.rate * sol.alpha
    tokens = float(served @ pb.mean_decode)
    return {
        "power_w": power,
        "tokens_per_s": tokens,
        "energy_per_token_j": power / tokens,
        "mean_ttft_s": {pb.class_names[k]: float(ttft_num[k] / served[k]) for k in range(K)},
        "mean_tpot_s": {pb.class_names[k]: float(tpot_num[k] / served[k]) for k in range(K)},
        "subpools": rows,
    }


def validate(cfg: LpConfig, sol: LpSolution, num_requests: int | None = None, progress=None) -> dict:
    """Simulate the LP policy and the configured baselines on one common workload.

    Returns a dict with ``lp`` and ``baselines`` (PolicyOutcome dicts), the LP predictions and
    the headline numbers (energy saving vs max-clock round robin, LP-vs-sim errors).
    """
    pools = pool_models(cfg)
    n = num_requests or cfg.validation.num_requests
    wl = class_workload(cfg, n, cfg.seed)
    within = cfg.validation.within_pool_router

    replays: dict[str, tuple[list[Replica], list]] = {}  # kept for the uncertainty band

    def run(name, layout, router):
        if progress:
            progress(name)
        engines, res = simulate_policy(cfg, layout, wl, router, sol=sol, within=within, pools=pools)
        replays[name] = (layout, engines)
        return measure(name, cfg, layout, engines, res, wl, pools)

    lp_out = run("lp", lp_layout(sol), "lp")
    baselines: dict[str, PolicyOutcome] = {}
    maxclock_rr = run("round_robin", uniform_layout(pools, 0), "round_robin")
    if "round_robin" in cfg.validation.baselines:
        baselines["round_robin"] = maxclock_rr
    if "least_loaded" in cfg.validation.baselines:
        baselines["least_loaded"] = run("least_loaded", uniform_layout(pools, 0), "least_loaded")
    single: dict[int, PolicyOutcome] = {}
    if "best_single_clock" in cfg.validation.baselines:
        depth = max(len(p.clocks_mhz) for p in pools)
        for i in range(depth):
            single[i] = run(f"single_clock_{i}", uniform_layout(pools, i), "least_loaded")
        ok = [o for o in single.values() if o.slos_met]
        best = min(ok or list(single.values())[:1], key=lambda o: o.energy_per_token_j)
        replays["best_single_clock"] = replays[best.name]
        best.name = "best_single_clock"
        baselines["best_single_clock"] = best
    pred = lp_predictions(sol, cfg, pools)
    base_e = maxclock_rr.energy_per_token_j
    lat_err = {}
    for c in cfg.classes:
        lat_err[c.name] = {
            "tpot": pred["mean_tpot_s"][c.name] / lp_out.mean_tpot_s[c.name] - 1.0,
            "ttft": pred["mean_ttft_s"][c.name] / lp_out.mean_ttft_s[c.name] - 1.0,
        }
    band = uncertainty_band(cfg, sol, replays, wl, pools, progress) if cfg.validation.band_samples else None
    return {
        "band": band,
        "energy_per_token_j": lp_out.energy_per_token_j,
        "baseline_energy_per_token_j": base_e,
        "energy_saving": 1.0 - lp_out.energy_per_token_j / base_e,
        "slo_attainment": lp_out.slo_attainment,
        "slos_met": lp_out.slos_met,
        "saving_vs_best_single_clock": (
            1.0 - lp_out.energy_per_token_j / baselines["best_single_clock"].energy_per_token_j
            if "best_single_clock" in baselines else None
        ),
        "lp_predicted_energy_per_token_j": pred["energy_per_token_j"],
        "lp_vs_sim_energy_error": pred["energy_per_token_j"] / lp_out.energy_per_token_j - 1.0,
        "lp_vs_sim_power_error": pred["power_w"] / lp_out.power_w - 1.0,
        "lp_vs_sim_latency_error": lat_err,
        "num_requests": n,
        "lp": lp_out.to_dict(),
        "baselines": {k: v.to_dict() for k, v in baselines.items()},
        "single_clock_runs": {str(i): o.to_dict() for i, o in single.items()},
        "prediction": pred,
    }


def _energy_per_token(cfg: LpConfig, replay, pools: list[PoolModel], t0: float, t1: float) -> float:
    layout, engines = replay
    e = tok = 0.0
    for eng, rep in zip(engines, layout):
        ej, tk, _ = replica_energy(eng, pools[rep.pool], rep.clock_mhz, t0, t1)
        e += ej
        tok += tk
    return e / tok if tok else float("nan")


def uncertainty_band(cfg: LpConfig, sol: LpSolution, replays: dict, wl: Workload, pools: list[PoolModel],
                     progress=None) -> dict:
    """2.5-97.5% bands of the headline numbers from the fitted parameters (see policy.band)."""
    from fluidserve.policy.band import energy_variants, percentile_band, time_variants

    t1 = float(wl.arrival_time_s[-1])
    t0 = cfg.validation.warmup_fraction * t1
    n = cfg.validation.band_samples
    saving, vs_best, err = [], [], []
    for variant in energy_variants(cfg, pools, n, cfg.seed):
        e_lp = _energy_per_token(cfg, replays["lp"], variant, t0, t1)
        saving.append(1.0 - e_lp / _energy_per_token(cfg, replays["round_robin"], variant, t0, t1))
        if "best_single_clock" in replays:
            vs_best.append(1.0 - e_lp / _energy_per_token(cfg, replays["best_single_clock"], variant, t0, t1))
        err.append(lp_predictions(sol, cfg, variant)["energy_per_token_j"] / e_lp - 1.0)
    att = {}
    for end, variant in time_variants(cfg, pools).items():
        if progress:
            progress(f"lp ({end} step times)")
        layout = lp_layout(sol)
        engines, res = simulate_policy(cfg, layout, wl, "lp", sol=sol, within=cfg.validation.within_pool_router,
                                       pools=variant)
        att[end] = measure(f"lp_{end}", cfg, layout, engines, res, wl, variant).slo_attainment
    return {
        "energy_saving": percentile_band(saving),
        "saving_vs_best_single_clock": percentile_band(vs_best) if vs_best else None,
        "lp_vs_sim_energy_error": percentile_band(err),
        "slo_attainment": sorted([att["pessimistic"], att["optimistic"]]),
        "samples": n,
        "varied": "energy: step-energy fit covariance and DVFS power parameters (exponent, memory_activity) per GPU "
                  "family; slo_attainment: step-time coefficients at their 95% CI ends and the d0 compute share "
                  "at its interval ends (replays of the same LP solution)",
    }
