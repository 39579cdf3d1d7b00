"""The search: screen every candidate, verify the best few in the simulator, pick the answer.

1. For every replica type (:func:`.space.replica_types`), the closed-form stability bound prunes
   the replica counts that cannot keep up; the latency model (:mod:`.screen`) predicts the
   percentiles of the counts above it, up to the first that meets the SLO (or the GPUs available).
2. Types are ranked by the objective of their smallest predicted-passing fleet (cost $/h, GPUs,
   or predicted energy per token; ties by cost, then energy). Types the screen finds no passing
   fleet for follow, closest (smallest binding ratio) first.
3. The best ``search.verify_top`` types (and, for a heterogeneous search, the best of every GPU
   type) are verified: bisection on the replica count from the
   screen's guess (:func:`.verify.min_replicas`), each simulation stored as it finishes
   (:mod:`.store`). Types whose closed-form lower bound is already worse than the best verified
   fleet are skipped.
4. With two or more GPU types, the LP mix (:mod:`.hetero`) is verified too.
5. The recommendation is the verified passing fleet with the best objective; it never is a fleet
   the simulator rejects. Without one, the closest verified fleet and its binding constraint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from fluidserve.plan import slo
from fluidserve.plan.screen import latency_model, stability_bound
from fluidserve.plan.space import replica_types
from fluidserve.plan.verify import group_record, min_replicas, simulate_group


@dataclass
class PlanOutcome:
    """Everything the search found (records are plain dicts, see :mod:`.report`)."""

    screened: list[dict]
    verified: list[dict]
    recommended: dict | None
    runner_ups: list[dict]
    closest: dict | None
    skipped: list[str]
    timing: dict
    hetero: dict | None = None
    single_type_best: dict = field(default_factory=dict)


def objective_value(plan, rec: dict) -> float:
    v = {"cost": rec.get("cost_per_hour"), "gpus": rec.get("gpus"), "energy": rec.get("energy_per_token_j")}
    x = v[plan.objective]
    return math.inf if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def rank_key(plan, rec: dict) -> tuple:
    e = rec.get("energy_per_token_j")
    e = math.inf if e is None or (isinstance(e, float) and math.isnan(e)) else e
    return (objective_value(plan, rec), rec.get("cost_per_hour", math.inf), e, rec.get("gpus", 0), rec["key"])


def _ratio(rec: dict) -> float:
    b = rec.get("binding") or {}
    r = b.get("ratio")
    return math.inf if r is None else float(r)


def screen_type(model, rtype, traffic, plan, bar=None) -> tuple[list[dict], dict]:
    """Screened records of one type (from the stability bound up to the first pass) and the bound."""
    bound = stability_bound(rtype, traffic, plan)
    cap = rtype.max_replicas
    if plan.candidates.max_replicas is not None:
        cap = min(cap, plan.candidates.max_replicas)
    recs = []
    lo = bound["min_replicas"]
    for n in range(1, cap + 1):
        base = {"key": rtype.key, **rtype.settings(), "replicas": n, "gpus": n * rtype.tensor_parallel,
                "cost_per_hour": n * rtype.cost_per_hour, "stability_min_replicas": lo}
        if n < lo:
            recs.append({**base, "pruned": "closed form: unstable (mean rate above n X_max)", "meets_slo": False,
                         "binding": {"class": None, "constraint": f"stability ({bound['binding_limit']})",
                                     "value": None, "limit": None, "ratio": math.inf}})
            continue
        pred = model.predict(rtype, n, traffic, plan)
        v = slo.verdict(plan, pred["per_class"])
        recs.append({**base, "pruned": None, "energy_per_token_j": pred["energy_per_token_j"],
                     "per_class": pred["per_class"], "meets_slo": v["meets_slo"], "binding": v["binding"],
                     "screen_model": pred.get("model", model.name)})
        if bar is not None:
            bar.update(1)
        if v["meets_slo"]:
            break
    return recs, bound


def run_search(plan, traffic, store, progress: bool = True, log=None) -> PlanOutcome:
    """Screen, verify, choose (see the module docstring). ``log(msg)`` receives progress lines."""
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    types, skipped = replica_types(plan)
    model = latency_model(plan.search.screen)
    bar = _bar(progress, len(types), "screening")
    screened, by_type = [], {}
    for rt in types:
        recs, bound = screen_type(model, rt, traffic, plan)
        screened += recs
        passing = [r for r in recs if r["meets_slo"]]
        evaluated = [r for r in recs if not r["pruned"]]
        by_type[rt.key] = {"type": rt, "bound": bound, "first_pass": passing[0] if passing else None,
                           "closest": min(evaluated, key=_ratio) if evaluated else recs[-1]}
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    t_screen = time.perf_counter() - t0
    say(f"screened {len(types)} replica types, {sum(1 for r in screened if not r['pruned'])} fleets "
        f"({sum(1 for r in screened if r['pruned'])} pruned by the closed forms) in {t_screen:.2f} s")

    ranked = sorted((v for v in by_type.values() if v["first_pass"]), key=lambda v: rank_key(plan, v["first_pass"]))
    ranked += sorted((v for v in by_type.values() if not v["first_pass"]), key=lambda v: _ratio(v["closest"]))

    t1 = time.perf_counter()
    verified: dict[str, dict] = {}
    sims = {"run": 0, "resumed": 0}
    bar = _bar(progress, None, "verifying")

    def runner(rt):
        def run(n: int) -> dict:
            fleet = f"{rt.key}/x{n}"
            rec = store.get(fleet)
            if rec is None:
                if sims["run"] >= plan.search.max_simulations:
                    raise _Budget()
                sim = simulate_group(rt, n, traffic, plan)
                rec = group_record(rt, n, sim, plan)
                rec["predicted"] = _prediction(model, rt, n, traffic, plan)
                store.put(fleet, rec)
                sims["run"] += 1
            else:
                sims["resumed"] += 1
            verified[fleet] = rec
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{rt.key} x{n}: {'meets' if rec['meets_slo'] else 'misses'}")
            return rec
        return run

    best_per_type: list[dict] = []
    n_verified_types = 0
    # the best few types; with a heterogeneous search also the best type of every GPU type, so that
    # the mix is compared with a verified single-type plan of each
    top = ranked[: plan.search.verify_top]
    todo = list(top)
    if plan.search.heterogeneous and len(plan.candidates.gpus) > 1:
        for g in plan.candidates.gpus:
            first = next((v for v in ranked if v["type"].gpu_type == g.type), None)
            if first is not None and first not in todo:
                todo.append(first)
    for v in todo:
        rt = v["type"]
        best = min((r for r in best_per_type), key=lambda r: rank_key(plan, r), default=None)
        lower = _lower_bound(plan, rt, v["bound"])
        if v in top and best is not None and lower > objective_value(plan, best):
            continue  # no fleet of this type can beat the best verified one (the per-GPU-type extras always run)
        cap = rt.max_replicas if plan.candidates.max_replicas is None else min(rt.max_replicas,
                                                                             plan.candidates.max_replicas)
        start = v["first_pass"]["replicas"] if v["first_pass"] else cap
        try:
            n, tried = min_replicas(runner(rt), start, cap)
        except _Budget:
            say(f"search.max_simulations ({plan.search.max_simulations}) reached")
            break
        n_verified_types += 1
        if n is not None:
            best_per_type.append(verified[f"{rt.key}/x{n}"])
        say(f"verified {rt.key}: counts {tried} -> " + (f"{n} replicas" if n else "no passing count"))
    hetero = None
    if plan.search.heterogeneous and len(plan.candidates.gpus) > 1:
        from fluidserve.plan.hetero import plan_mix  # noqa: PLC0415

        hetero = plan_mix(plan, traffic, types, by_type, store, model, say)
        for rec in hetero.get("verified", []):
            verified[rec["fleet"]] = rec
        sims["run"] += hetero.get("simulations", 0)
        sims["resumed"] += hetero.get("simulations_resumed", 0)
    if bar is not None:
        bar.close()
    t_verify = time.perf_counter() - t1

    for r in best_per_type:
        r["minimal"] = True
    passing = list(best_per_type)
    if hetero and hetero.get("recommended"):
        passing.append(hetero["recommended"])
    passing.sort(key=lambda r: rank_key(plan, r))
    recommended = passing[0] if passing else None
    closest = None
    if recommended is None:
        pool = list(verified.values()) or [v["closest"] for v in by_type.values()]
        closest = min(pool, key=_ratio)
    single = {}
    for r in best_per_type:
        g = r["gpu_type"]
        if g not in single or rank_key(plan, r) < rank_key(plan, single[g]):
            single[g] = r
    return PlanOutcome(
        screened=screened, verified=list(verified.values()), recommended=recommended,
        runner_ups=passing[1:], closest=closest, skipped=skipped, hetero=hetero, single_type_best=single,
        timing={"screen_s": t_screen, "verify_s": t_verify, "total_s": time.perf_counter() - t0,
                "simulations": sims["run"], "simulations_resumed": sims["resumed"],
                "fleets_screened": sum(1 for r in screened if not r["pruned"]),
                "fleets_pruned": sum(1 for r in screened if r["pruned"]), "replica_types": len(types)},
    )


class _Budget(Exception):
    """search.max_simulations reached."""


def _lower_bound(plan, rt, bound: dict) -> float:
    """The objective of the smallest stable fleet of a type (closed forms): no fleet of it is better."""
    n = bound["min_replicas"]
    if not math.isfinite(n):
        return math.inf
    if plan.objective == "cost":
        return n * rt.cost_per_hour
    if plan.objective == "gpus":
        return n * rt.tensor_parallel
    return 0.0


def _prediction(model, rt, n: int, traffic, plan) -> dict:
    pred = model.predict(rt, n, traffic, plan)
    v = slo.verdict(plan, pred["per_class"])
    return {"per_class": pred["per_class"], "energy_per_token_j": pred["energy_per_token_j"],
            "meets_slo": v["meets_slo"], "binding": v["binding"]}


def _bar(progress: bool, total, desc: str):
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="fleet" if desc == "verifying" else "type", leave=False,
                mininterval=0.3)
