"""Heterogeneous fleets: the LP (``fluidserve.policy``) picks the GPU mix, clocks and class routing; the simulator verifies.

1. One LP pool per GPU type, with the settings (tensor parallel, scheduler) of that type's best
   screened replica type and all its clocks; one LP class per traffic class (the LP needs the
   classes' length laws, so every class must be synthetic), with TTFT / TPOT targets taken from
   the class's tightest thresholds (an E2E threshold bounds TPOT by threshold / max decode
   tokens). The LP minimises $/h (``objective: cost`` or ``gpus``) or power (``energy``) over
   integer GPU counts, under its fluid steady-state and safety constraints.
2. Each LP sub-pool (GPU type x clock x SLO group) with replicas becomes a *group*: its replicas
   behind the plan's router, serving the share x[k, s] / lambda_k of each class k that the LP sends
   there (split deterministically, smooth weighted round robin over each class's arrivals).
3. Groups are independent given the split, so each is verified alone, with bisection on its
   replica count from the LP's. A class meets a percentile threshold on the union of groups when
   it meets it on every group's share (the share of requests under the threshold is an average),
   so the mix meets the SLO when every group does; the mix's statistics are measured on the union.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fluidserve.plan import slo
from fluidserve.plan.verify import group_record, min_replicas, simulate_group


def _lp_classes(plan):
    from fluidserve.policy.lp_config import ClassSpec

    out = []
    for c in plan.traffic.classes:
        th = c.slo.thresholds
        ttft = min((t for m, _, t in th if m == "ttft"), default=None)
        tpot = min((t for m, _, t in th if m == "tpot"), default=None)
        e2e = min((t for m, _, t in th if m == "e2e"), default=None)
        if e2e is not None:
            bound = e2e / c.decode_tokens[1]
            tpot = bound if tpot is None else min(tpot, bound)
            ttft = e2e if ttft is None else min(ttft, e2e)
        out.append(ClassSpec(name=c.name, rate=c.rate, prefill_tokens=tuple(c.prefill_tokens),
                             decode_tokens=tuple(c.decode_tokens), ttft_s=ttft or 3600.0, tpot_s=tpot or 3600.0))
    return out


def _pool_types(plan, types, by_type) -> dict[str, list]:
    """Per GPU type: the replica types (one per clock) of its best-ranked screened settings."""
    best: dict[str, tuple] = {}
    for v in by_type.values():
        rt = v["type"]
        rec = v["first_pass"] or v["closest"]
        score = (0 if v["first_pass"] else 1, rec.get("cost_per_hour", math.inf), -rt.clock_mhz)
        if rt.gpu_type not in best or score < best[rt.gpu_type][0]:
            best[rt.gpu_type] = (score, rt)
    out = {}
    for g, (_, rt) in best.items():
        same = [t for t in types if t.gpu_type == g and t.tensor_parallel == rt.tensor_parallel
                and t.max_num_batched_tokens == rt.max_num_batched_tokens and t.max_num_seqs == rt.max_num_seqs
                and t.chunked_prefill == rt.chunked_prefill and t.enable_prefix_caching == rt.enable_prefix_caching
                and t.scheduler == rt.scheduler]
        out[g] = sorted(same, key=lambda t: t.clock_mhz)
    return out


def solve_mix(plan, types, by_type):
    """The LP solution and, per GPU type, its replica types by clock."""
    from fluidserve.policy.lp import solve
    from fluidserve.policy.lp_config import LpConfig, SafetySpec
    from fluidserve.policy.problem import PoolModel, build_problem
    from fluidserve.plan.space import frequency_model, model_spec, replica_batch_time

    base = Path(plan.base_dir) if plan.base_dir else None
    model = model_spec(plan)
    pools_t = _pool_types(plan, types, by_type)
    gspec = {g.type: g for g in plan.candidates.gpus}
    pools = []
    for g, rts in pools_t.items():
        top = rts[-1]
        fm = frequency_model(gspec[g])
        pools.append(PoolModel(
            name=g, count=top.max_replicas, cost_per_hour=top.cost_per_hour,
            clocks_mhz=tuple(t.clock_mhz for t in rts),
            batch_time=replica_batch_time(gspec[g], model, top.tensor_parallel, base), freq=fm, M_total=top.M_total, B=top.max_num_batched_tokens,
            max_num_seqs=top.max_num_seqs, block_size=16, chunked_prefill=top.chunked_prefill,
        ))
    cfg = LpConfig.model_construct(name=plan.name, seed=plan.seed, objective="cost", integer=True, pools=[],
                                   classes=_lp_classes(plan), safety=SafetySpec(), policy=plan.policy)
    pb = build_problem(cfg, pools)
    sol = solve(pb, "energy" if plan.objective == "energy" else "cost", integer=True)
    return sol, pools_t


def split_classes(traffic, sol) -> list[tuple[int, np.ndarray]]:
    """(sub-pool, request mask) of every sub-pool with traffic: each class split by the LP's rates."""
    pb = sol.problem
    assign = np.full(len(traffic.workload), -1, dtype=np.int64)
    for k in range(len(pb.class_names)):
        arcs = np.flatnonzero((pb.a_class == k) & (sol.x > 1e-9))
        if not len(arcs):
            continue
        w = sol.x[arcs] / sol.x[arcs].sum()
        idx = np.flatnonzero(traffic.class_index == k)
        current = np.zeros(len(arcs))
        for i in idx:  # smooth weighted round robin
            current += w
            j = int(np.argmax(current))
            current[j] -= 1.0
            assign[i] = int(pb.a_sub[arcs[j]])
    return [(int(s), assign == s) for s in np.unique(assign[assign >= 0])]


def plan_mix(plan, traffic, types, by_type, store, model, say) -> dict:
    """Solve the LP mix, verify every group by bisection, measure the union; see the module docstring."""
    synthetic = all(c.trace is None for c in plan.traffic.classes)
    if not synthetic:
        say("heterogeneous: skipped (the LP needs synthetic classes with length ranges)")
        return {"status": "skipped", "reason": "the LP needs synthetic traffic classes (length ranges)"}
    sol, pools_t = solve_mix(plan, types, by_type)
    if not sol.feasible:
        reason = sol.violations[0] if sol.violations else "LP infeasible"
        say(f"heterogeneous: LP {reason}")
        return {"status": "lp_infeasible", "reason": reason, "violations": sol.violations}
    pb = sol.problem
    groups, verified = [], []
    counts = {"simulations": 0, "simulations_resumed": 0}
    used: dict[str, int] = {}
    for s, mask in split_classes(traffic, sol):
        g = pb.pool_names[pb.s_pool[s]]
        clock = float(pb.s_clock[s])
        rt = next(t for t in pools_t[g] if abs(t.clock_mhz - clock) < 1e-6)
        sub = traffic.subset(mask)
        lp_n = max(1, int(round(sol.y[s])))
        fleet_prefix = f"mix/{s}/{rt.key}"
        cache: dict[int, dict] = {}

        def run(n: int, rt=rt, sub=sub, fleet_prefix=fleet_prefix, cache=cache) -> dict:
            fleet = f"{fleet_prefix}/x{n}"
            rec = store.get(fleet)
            if rec is None:
                sim = simulate_group(rt, n, sub, plan)
                rec = group_record(rt, n, sim, plan)
                rec["predicted"] = _predicted(model, rt, n, sub, plan)
                rec["fleet"] = fleet
                rec["classes"] = sorted({traffic.names[k] for k in np.unique(sub.class_index)})
                store.put(fleet, rec)
                counts["simulations"] += 1
            else:
                counts["simulations_resumed"] += 1
            cache[n] = rec
            verified.append(rec)
            return rec

        hi = rt.max_replicas
        n, tried = min_replicas(run, lp_n, hi)
        say(f"heterogeneous group {g} @{clock:g} MHz ({', '.join(sorted({traffic.names[k] for k in np.unique(sub.class_index)}))}): "
            f"LP {lp_n} replicas, simulated {tried} -> {n}")
        if n is None:
            return {"status": "group_fails", "reason": f"group {g} @{clock:g} MHz misses the SLO at {hi} replicas",
                    "verified": verified, "lp_cost_per_hour": sol.cost_per_hour, **counts}
        used[g] = used.get(g, 0) + n * rt.tensor_parallel
        groups.append({"rt": rt, "n": n, "mask": mask, "sub": sub, "record": cache[n],
                       "smaller": cache.get(n - 1), "lp_replicas": lp_n})
    over = [g for g, k in used.items() if k > next(x.count for x in plan.candidates.gpus if x.type == g)]
    if over:
        return {"status": "over_capacity", "reason": f"the verified mix needs more {over} GPUs than available",
                "verified": verified, **counts}
    rec = _union_record(plan, traffic, groups, model)
    counts["simulations"] += len(groups)  # the final groups once more, for the union's per-request statistics
    rec["lp_cost_per_hour"] = sol.cost_per_hour
    return {"status": "ok", "recommended": rec, "verified": verified, "lp_cost_per_hour": sol.cost_per_hour,
            "lp_solve_time_s": sol.solve_time_s, **counts}


def _predicted(model, rt, n, sub, plan) -> dict:
    pred = model.predict(rt, n, sub, plan)
    v = slo.verdict(plan, pred["per_class"])
    return {"per_class": pred["per_class"], "energy_per_token_j": pred["energy_per_token_j"],
            "meets_slo": v["meets_slo"], "binding": v["binding"]}


def _union_record(plan, traffic, groups, model) -> dict:
    """The mix as one record: measured on the union of the groups' requests (re-simulated at the final counts)."""
    from fluidserve.plan.verify import request_metrics

    n = len(traffic.workload)
    ttft, tpot, e2e = np.full(n, np.inf), np.full(n, np.nan), np.full(n, np.inf)
    energy_j = tokens = 0.0
    cost = gpus = 0
    members = []
    for gr in groups:
        rt, k, mask, sub = gr["rt"], gr["n"], gr["mask"], gr["sub"]
        m = request_metrics(rt, k, sub, plan)
        idx = np.flatnonzero(mask)
        ttft[idx], tpot[idx], e2e[idx] = m["ttft"], m["tpot"], m["e2e"]
        energy_j += m["energy_j"]
        tokens += m["output_tokens"]
        cost += k * rt.cost_per_hour
        gpus += k * rt.tensor_parallel
        r = gr["record"]
        members.append({**rt.settings(), "key": rt.key, "replicas": k, "gpus": k * rt.tensor_parallel,
                        "cost_per_hour": k * rt.cost_per_hour, "lp_replicas": gr["lp_replicas"],
                        "classes": r.get("classes"), "meets_slo": r["meets_slo"],
                        "next_smaller_meets_slo": None if gr["smaller"] is None else gr["smaller"]["meets_slo"]})
    per_class = {}
    qs = slo.class_percentiles(plan)
    for kc, c in enumerate(plan.traffic.classes):
        sel = (traffic.class_index == kc) & traffic.measured
        per_class[c.name] = slo.sample_stats(ttft[sel], tpot[sel], e2e[sel], qs[kc], c.slo.thresholds)
    v = slo.verdict(plan, per_class)
    key = " + ".join(f"{g['replicas']}x{g['key']}" for g in members)
    return {
        "key": f"mix: {key}", "gpu_type": "+".join(sorted({g['gpu_type'] for g in members})),
        "tensor_parallel": sorted({g["tensor_parallel"] for g in members}), "replicas": sum(g["replicas"] for g in members),
        "gpus": gpus, "cost_per_hour": cost, "energy_per_token_j": energy_j / tokens if tokens else math.nan,
        "meets_slo": v["meets_slo"], "binding": v["binding"], "per_class": per_class, "groups": members,
        "next_smaller": [{"group": g["key"], "replicas": g["replicas"] - 1, "meets_slo": g["next_smaller_meets_slo"]}
                         for g in members if g["replicas"] > 1],
    }
