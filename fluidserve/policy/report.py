"""Readable report of an LP policy: routing table, clocks, predictions, duals and binding constraints.

:func:`report_dict` gives a JSON-ready dict, :func:`format_report` the same as text. Shadow prices
are the objective's change per unit increase of a constraint's right-hand side: for the energy
objective, a class's demand row is in W per extra req/s (= J per extra request), a fleet row of
the LP relaxation in W per extra GPU, a sub-pool's util row in W per unit of extra utilization.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fluidserve.policy.lp import LpSolution

_UNITS = {"energy": "W", "cost": "W (after minimizing $/h)", "throughput": "W (at the maximal scale)"}


def routing_table(sol: LpSolution) -> pd.DataFrame:
    """One row per (class, pool, clock, SLO group) with traffic: rate [req/s] and share of the class."""
    pb = sol.problem
    rows = []
    for a in np.flatnonzero(sol.x > 1e-9):
        k, s = int(pb.a_class[a]), int(pb.a_sub[a])
        rows.append({
            "class": pb.class_names[k], "pool": pb.pool_names[pb.s_pool[s]], "clock_mhz": float(pb.s_clock[s]),
            "replicas": float(sol.y[s]), "rate": float(sol.x[a]),
            "share": float(sol.x[a] / (pb.rate[k] * sol.alpha)),
        })
    cols = ["class", "pool", "clock_mhz", "replicas", "rate", "share"]
    return pd.DataFrame(rows, columns=cols).sort_values(["class", "pool", "clock_mhz"]).reset_index(drop=True)


def clock_table(sol: LpSolution) -> dict[str, dict]:
    """Per pool: replicas per clock [MHz] and idle replicas."""
    pb = sol.problem
    out = {}
    for j, name in enumerate(pb.pool_names):
        per: dict[float, float] = {}
        for s in np.flatnonzero((pb.s_pool == j) & (sol.y > 1e-9)):
            per[float(pb.s_clock[s])] = per.get(float(pb.s_clock[s]), 0.0) + float(sol.y[s])
        out[name] = {"replicas_per_clock_mhz": dict(sorted(per.items())), "idle": float(sol.idle[j])}
    return out


def _binding(df: pd.DataFrame) -> list[dict]:
    if df is None or not len(df):
        return []
    b = df[df["binding"]]
    return [
        {"kind": r.kind, "constraint": r.constraint, "shadow_price": float(r.shadow_price)}
        for r in b.itertuples(index=False)
    ]


def report_dict(sol: LpSolution, prediction: dict | None = None) -> dict:
    """JSON-ready description of the solution (``prediction`` from validate.lp_predictions)."""
    pb = sol.problem
    out = {
        "status": sol.status,
        "objective": sol.objective,
        "integer": sol.integer,
        "solve_time_s": sol.solve_time_s,
        "size": sol.size,
    }
    if not sol.feasible:
        out["violations"] = sol.violations
        out["reason"] = sol.violations[0] if sol.violations else "infeasible"
        if sol.unserved is not None:
            out["unserved_rate"] = dict(zip(pb.class_names, map(float, sol.unserved)))
        out["binding_constraints"] = _binding(sol.duals)
        return out
    out.update({
        "objective_value": sol.objective_value,
        "objective_units": _UNITS[sol.objective] if sol.objective == "energy" else (
            "$/h" if sol.objective == "cost" else "scale of the demand"),
        "throughput_scale": sol.alpha,
        "predicted_power_w": sol.power_w,
        "predicted_tokens_per_s": sol.alpha * pb.tokens_per_s,
        "predicted_energy_per_token_j": sol.energy_per_token_j,
        "cost_per_hour": sol.cost_per_hour,
        "routing": routing_table(sol).to_dict(orient="records"),
        "clocks": clock_table(sol),
        "binding_constraints": _binding(sol.duals),
        "demand_shadow_price_w_per_req_s": {
            r.constraint.split("'")[1]: float(r.shadow_price)
            for r in sol.duals[sol.duals["kind"] == "demand"].itertuples(index=False)
        },
        "fleet_shadow_price_w_per_gpu": {
            r.constraint.split("'")[1]: float(r.shadow_price)
            for r in sol.relaxation_duals[sol.relaxation_duals["kind"] == "fleet"].itertuples(index=False)
        },
    })
    if prediction is not None:
        out["predicted_latency"] = {"mean_ttft_s": prediction["mean_ttft_s"], "mean_tpot_s": prediction["mean_tpot_s"]}
        out["subpools"] = prediction["subpools"]
    return out


def format_report(rep: dict, validation: dict | None = None, disagg: dict | None = None) -> str:
    """The report as text for a person."""
    lines = [f"LP policy ({rep['objective']} objective, {'integer' if rep['integer'] else 'continuous'} GPU counts): "
             f"{rep['status']}, solved in {rep['solve_time_s']:.3f} s, size {rep['size']}"]
    if rep["status"] != "optimal":
        lines.append("The input cannot be served:")
        lines += [f"  - {v}" for v in rep.get("violations", [])]
        return "\n".join(lines)
    lines.append(
        f"predicted: {rep['predicted_power_w']:.0f} W for {rep['predicted_tokens_per_s']:.0f} output tokens/s -> "
        f"{rep['predicted_energy_per_token_j']:.4f} J/token; cost {rep['cost_per_hour']:.2f} $/h of busy GPUs; "
        f"demand scale {rep['throughput_scale']:.3f}"
    )
    lines.append("routing (req/s):")
    for r in rep["routing"]:
        lines.append(f"  {r['class']:<14} -> {r['pool']:<10} @ {r['clock_mhz']:>6.0f} MHz  {r['rate']:8.3f}  "
                     f"({100 * r['share']:5.1f}% of the class)")
    lines.append("clocks:")
    for pool, c in rep["clocks"].items():
        per = ", ".join(f"{n:g} x {f:g} MHz" for f, n in c["replicas_per_clock_mhz"].items()) or "none busy"
        lines.append(f"  {pool:<10} {per}; idle {c['idle']:g}")
    if "predicted_latency" in rep:
        lines.append("predicted mean latency (fluid): " + ", ".join(
            f"{k}: TTFT {rep['predicted_latency']['mean_ttft_s'][k]:.3f} s, TPOT {rep['predicted_latency']['mean_tpot_s'][k] * 1e3:.1f} ms"
            for k in rep["predicted_latency"]["mean_ttft_s"]))
    lines.append("shadow prices: demand (W per extra req/s = J per extra request): " + ", ".join(
        f"{k} {v:.2f}" for k, v in rep["demand_shadow_price_w_per_req_s"].items()))
    lines.append("               fleet, LP relaxation (W per extra GPU): " + ", ".join(
        f"{k} {v:.2f}" for k, v in rep["fleet_shadow_price_w_per_gpu"].items()))
    lines.append("binding constraints:")
    for b in rep["binding_constraints"]:
        if b["kind"] != "demand":
            lines.append(f"  {b['kind']:<6} {b['constraint']}  (shadow price {b['shadow_price']:.4g})")
    if validation is not None:
        v = validation
        lines.append(
            f"simulation ({v['num_requests']} requests): LP policy {v['energy_per_token_j']:.4f} J/token, "
            f"SLO attainment {100 * v['slo_attainment']:.2f}% (SLOs met: {v['slos_met']}); "
            f"max-clock round robin {v['baseline_energy_per_token_j']:.4f} J/token -> saving {100 * v['energy_saving']:.1f}%"
        )
        lines.append(
            f"LP-predicted vs simulated energy per token: {v['lp_predicted_energy_per_token_j']:.4f} vs "
            f"{v['energy_per_token_j']:.4f} J ({100 * v['lp_vs_sim_energy_error']:+.2f}%)"
        )
        for name, b in v["baselines"].items():
            lines.append(f"  baseline {name:<18} {b['energy_per_token_j']:.4f} J/token, SLO attainment "
                         f"{100 * b['slo_attainment']:.2f}% (met: {b['slos_met']})")
        lines.append("  latency, predicted/simulated - 1: " + ", ".join(
            f"{k}: TTFT {100 * e['ttft']:+.0f}%, TPOT {100 * e['tpot']:+.0f}%" for k, e in v["lp_vs_sim_latency_error"].items()))
        band = v.get("band")
        if band:
            def pct(x):
                return f"[{100 * x[0]:.2f}, {100 * x[1]:.2f}]%" if x else "n/a"

            lines.append(f"  band from the fitted parameters ({band['samples']} samples): saving {pct(band['energy_saving'])}, "
                         f"vs best single clock {pct(band['saving_vs_best_single_clock'])}, LP vs sim energy "
                         f"{pct(band['lp_vs_sim_energy_error'])}, SLO attainment {pct(band['slo_attainment'])}")
    if disagg is not None:
        d = disagg
        lines.append(f"disaggregation: {d.get('status')}: {d.get('n_prefill')} prefill + {d.get('n_decode')} decode GPUs "
                     f"(colocated needs {d.get('colocated_gpus')}) {d.get('reason', '')}")
        if d.get("simulated"):
            s = d["simulated"]
            lines.append(f"  simulated: mean TTFT {s['mean_ttft_s']:.3f} s, TBT {1e3 * s['mean_tbt_s']:.2f} ms, "
                         f"e2e {s['mean_e2e_s']:.3f} s, KV transfer {1e3 * s['mean_kv_transfer_s']:.2f} ms")
    return "\n".join(lines)
