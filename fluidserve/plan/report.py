"""The plan's outputs: the ``--json`` object, the table (Markdown, booktabs LaTeX), the Pareto figure.

Rows of the table are the recommended fleet and the runner-ups (the smallest passing fleet of each
verified replica type, and the LP mix), each with predicted (screen) and verified (simulator)
p50/p90/p99 of TTFT, TPOT and E2E per class, attainment, $/h, J per output token and GPUs.
The screen's error is reported per verified fleet as (predicted - simulated) / simulated of each
SLO percentile, so a user sees how far the fast model can be trusted.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fluidserve.plan import slo

_SUMMARY_KEYS = ("key", "gpu_type", "tensor_parallel", "clock_mhz", "max_num_batched_tokens", "max_num_seqs",
                 "chunked_prefill", "enable_prefix_caching", "scheduler", "replicas", "gpus", "cost_per_hour",
                 "energy_per_token_j", "meets_slo", "binding")


def _num(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def screen_error(plan, rec: dict) -> dict:
    """Relative error (predicted - simulated) / simulated of every reported percentile, per class."""
    out = {}
    pred = (rec.get("predicted") or {}).get("per_class", {})
    for c, sim in rec.get("per_class", {}).items():
        p = pred.get(c, {})
        errs = {}
        for key, v in sim.items():
            if not key.endswith("_s"):
                continue
            a, b = _num(p.get(key)), _num(v)
            errs[key] = (a - b) / b if a is not None and b not in (None, 0) else None
        out[c] = errs
    return out


def fleet_summary(plan, rec: dict | None) -> dict | None:
    """The record's settings, verdict, measured and predicted stats and the screen's error."""
    if rec is None:
        return None
    out = {k: rec.get(k) for k in _SUMMARY_KEYS if k in rec}
    for k in ("groups", "fleet", "routing", "next_smaller"):
        if k in rec:
            out[k] = rec[k]
    out["verified"] = rec.get("per_class")
    out["predicted"] = (rec.get("predicted") or {}).get("per_class")
    out["predicted_energy_per_token_j"] = (rec.get("predicted") or {}).get("energy_per_token_j")
    out["screen_error"] = screen_error(plan, rec)
    return out


def payload(plan, outcome, traffic) -> dict:
    """The ``--json`` object: ``recommended``, ``candidates`` (screen), ``verified`` (every simulation), more."""
    rec = fleet_summary(plan, outcome.recommended)
    if rec is not None:
        smaller = _next_smaller(outcome, outcome.recommended)
        rec["next_smaller_fleet"] = smaller
    verified = []
    for r in outcome.verified:
        v = {k: r.get(k) for k in ("key", "fleet", "gpu_type", "tensor_parallel", "clock_mhz",
                                  "max_num_batched_tokens", "max_num_seqs", "replicas", "gpus", "cost_per_hour",
                                  "energy_per_token_j", "meets_slo", "binding", "groups", "sim_wall_s")
             if k in r}
        v["percentiles"] = r.get("per_class")
        v["predicted"] = (r.get("predicted") or {}).get("per_class")
        v["screen_error"] = screen_error(plan, r)
        verified.append(v)
    return {
        "name": plan.name, "objective": plan.objective,
        "status": "ok" if outcome.recommended is not None else "infeasible",
        "recommended": rec,
        "runner_ups": [fleet_summary(plan, r) for r in outcome.runner_ups],
        "closest": fleet_summary(plan, outcome.closest),
        "single_type_best": {g: fleet_summary(plan, r) for g, r in outcome.single_type_best.items()},
        "heterogeneous": _hetero_summary(plan, outcome.hetero),
        "candidates": [{k: v for k, v in r.items()} for r in outcome.screened],
        "verified": verified,
        "timing": outcome.timing,
        "skipped": outcome.skipped,
        "traffic": {"requests": len(traffic.workload), "classes": traffic.names,
                    "rates_rps": {n: traffic.rate(k) for k, n in enumerate(traffic.names)},
                    "duration_s": traffic.workload.duration_s},
        "screen_model": plan.search.screen,
    }


def _hetero_summary(plan, h):
    if not h:
        return None
    out = {k: v for k, v in h.items() if k not in ("verified", "recommended")}
    out["recommended"] = fleet_summary(plan, h.get("recommended"))
    return out


def _next_smaller(outcome, rec: dict) -> dict | None:
    """The verified fleet one replica smaller than ``rec`` (shown missing the SLO), if any."""
    if rec.get("groups"):
        return rec.get("next_smaller")
    if rec["replicas"] <= 1:
        return None
    for r in outcome.verified:
        if r.get("key") == rec["key"] and r.get("replicas") == rec["replicas"] - 1 and not r.get("groups"):
            return {"replicas": r["replicas"], "gpus": r["gpus"], "meets_slo": r["meets_slo"],
                    "binding": r["binding"], "percentiles": r["per_class"]}
    return None


def table(plan, outcome) -> pd.DataFrame:
    """One row per (fleet, class): recommended first, then runner-ups; predicted / verified columns."""
    rows = []
    fleets = ([outcome.recommended] if outcome.recommended else []) + list(outcome.runner_ups)
    if not fleets and outcome.closest is not None:
        fleets = [outcome.closest]
    for rank, rec in enumerate(fleets):
        label = "recommended" if rank == 0 and outcome.recommended else ("closest" if not outcome.recommended
                                                                         else f"runner-up {rank}")
        pred = (rec.get("predicted") or {}).get("per_class", {})
        for cname, st in (rec.get("per_class") or {}).items():
            row = {"rank": label, "fleet": describe(rec), "class": cname, "GPUs": rec.get("gpus"),
                   "$/h": rec.get("cost_per_hour"), "J/token": rec.get("energy_per_token_j")}
            for metric in slo.METRICS:
                for q in slo.REPORTED:
                    key = slo.stat_key(metric, q)
                    row[f"{metric.upper()} p{q:g} pred (s)"] = (pred.get(cname) or {}).get(key)
                    row[f"{metric.upper()} p{q:g} sim (s)"] = st.get(key)
            row["attainment pred"] = (pred.get(cname) or {}).get("attainment")
            row["attainment sim"] = st.get("attainment")
            row["meets SLO"] = "yes" if rec.get("meets_slo") else "no"
            rows.append(row)
    return pd.DataFrame(rows)


def describe(rec: dict) -> str:
    """'2 x H100-SXM tp1 @1980 MHz, B=8192, S=256' (or the groups of a mix)."""
    if rec.get("groups"):
        return " + ".join(describe(g) for g in rec["groups"])
    return (f"{rec['replicas']} x {rec['gpu_type']} tp{rec['tensor_parallel']} @{rec['clock_mhz']:g} MHz, "
            f"B={rec['max_num_batched_tokens']}, S={rec['max_num_seqs']}")


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


def markdown(df: pd.DataFrame) -> str:
    if not len(df):
        return "(no verified fleet)\n"
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def latex(df: pd.DataFrame) -> str:
    """booktabs tabular of the p99 columns (the full table is in plan.md / plan.json)."""
    from fluidserve.export.latex import table_latex

    if not len(df):
        return "% no verified fleet\n"
    keep = ["rank", "fleet", "class", "GPUs", "$/h", "J/token"] + [
        c for c in df.columns if " p99 " in c] + ["attainment sim", "meets SLO"]
    sub = df[[c for c in keep if c in df.columns]].copy()
    for c in sub.columns:
        sub[c] = sub[c].map(_fmt)
    return table_latex(sub)


def pareto_figure(plan, outcome):
    """Cost ($/h) vs the binding SLO metric: every screened fleet (predicted) and every simulated one."""
    from fluidserve.policy.figures import _plt

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    binding = _binding_metric(plan, outcome)
    cls, key, limit = binding

    def series(recs, use_pred):
        xs, ys = [], []
        for r in recs:
            st = ((r.get("predicted") or {}).get("per_class") if use_pred == "pred_of_sim" else r.get("per_class"))
            v = (st or {}).get(cls, {}).get(key) if st else None
            if v is not None and math.isfinite(v) and r.get("cost_per_hour") is not None:
                xs.append(r["cost_per_hour"])
                ys.append(v)
        return xs, ys

    xs, ys = series([r for r in outcome.screened if not r.get("pruned")], "screen")
    ax.scatter(xs, ys, s=14, alpha=0.5, label="screened (predicted)", color="tab:blue")
    xs, ys = series(outcome.verified, "sim")
    ax.scatter(xs, ys, s=34, marker="s", facecolors="none", edgecolors="tab:red", label="verified (simulator)")
    front = _pareto(list(zip(xs, ys)))
    if front:
        ax.step(*zip(*front), where="post", color="tab:red", lw=1, alpha=0.7)
    if outcome.recommended is not None:
        st = outcome.recommended.get("per_class", {}).get(cls, {})
        if st.get(key) is not None:
            ax.scatter([outcome.recommended["cost_per_hour"]], [st[key]], s=120, marker="*", color="gold",
                       edgecolors="k", zorder=5, label="recommended")
    if limit is not None:
        ax.axhline(limit, color="k", ls="--", lw=1, label=f"SLO {key} = {limit:g} s")
    ax.set_yscale("log")
    ax.set_xlabel("cost ($/h)")
    ax.set_ylabel(f"{key.replace('_s', '')} of class '{cls}' (s)")
    ax.set_title(f"{plan.name}: cost vs binding SLO metric")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _pareto(points):
    pts = sorted(points)
    out, best = [], math.inf
    for x, y in pts:
        if y < best:
            out.append((x, y))
            best = y
    return out


def _binding_metric(plan, outcome) -> tuple[str, str, float | None]:
    rec = outcome.recommended or outcome.closest
    b = (rec or {}).get("binding") or {}
    if b.get("class") and b.get("constraint", "").endswith("_s"):
        return b["class"], b["constraint"], b.get("limit")
    c = plan.traffic.classes[0]
    m, q, thr = c.slo.thresholds[0]
    return c.name, slo.stat_key(m, q), thr


def write_outputs(plan, outcome, traffic, outdir: Path, figures: bool = True) -> list[Path]:
    """plan.json, plan.md, plan.tex, screen.csv and pareto.png/pdf under ``outdir``."""
    from fluidserve.jsonout import to_json

    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    p = outdir / "plan.json"
    p.write_text(to_json(payload(plan, outcome, traffic), indent=2))
    paths.append(p)
    df = table(plan, outcome)
    p = outdir / "plan.md"
    p.write_text(format_text(plan, outcome) + "\n" + markdown(df))
    paths.append(p)
    p = outdir / "plan.tex"
    p.write_text(latex(df))
    paths.append(p)
    flat = pd.DataFrame([{k: (v if not isinstance(v, dict) else None) for k, v in r.items() if k != "per_class"}
                         | {"binding_constraint": (r.get("binding") or {}).get("constraint"),
                            "binding_ratio": (r.get("binding") or {}).get("ratio")}
                         for r in outcome.screened])
    p = outdir / "screen.csv"
    flat.drop(columns=[c for c in ("binding",) if c in flat.columns]).to_csv(p, index=False)
    paths.append(p)
    if figures:
        from fluidserve.policy.figures import save

        paths += save(pareto_figure(plan, outcome), outdir / "pareto")
    return paths


def format_text(plan, outcome) -> str:
    """The human-readable answer (stdout without ``--json``, and the head of plan.md)."""
    t = outcome.timing
    lines = [f"# plan '{plan.name}' (objective: {plan.objective})", ""]
    if outcome.recommended is not None:
        r = outcome.recommended
        lines.append(f"recommended: {describe(r)}: {r['gpus']} GPUs, ${r['cost_per_hour']:.2f}/h, "
                     f"{_fmt(r.get('energy_per_token_j'))} J/token; meets the SLO in the simulator")
        b = r.get("binding") or {}
        lines.append(f"binding constraint: class '{b.get('class')}' {b.get('constraint')} = {_fmt(b.get('value'))} "
                     f"(limit {_fmt(b.get('limit'))}, {100 * b.get('ratio', 0):.0f}% of it)")
        smaller = _next_smaller(outcome, r)
        if r.get("groups"):
            for g in r["groups"]:
                lines.append(f"  group {g['replicas']} x {g['key']} serving {', '.join(g.get('classes') or [])} "
                             f"(LP: {g['lp_replicas']}); one replica fewer: "
                             + ("n/a (one replica)" if g["replicas"] <= 1 else
                                ("meets" if g["next_smaller_meets_slo"] else "misses") + " the SLO"))
        elif smaller:
            sb = smaller.get("binding") or {}
            lines.append(f"next smaller fleet ({smaller['replicas'] if 'replicas' in smaller else 'one less'}"
                         f" replicas): {'meets' if smaller['meets_slo'] else 'misses'} the SLO "
                         f"({sb.get('constraint')} = {_fmt(sb.get('value'))})")
        elif not r.get("groups"):
            lines.append("next smaller fleet: none (one replica)")
    else:
        c = outcome.closest or {}
        b = c.get("binding") or {}
        lines.append("INFEASIBLE: no candidate meets the SLO")
        if c:
            lines.append(f"closest candidate: {describe(c)} ({c.get('gpus')} GPUs, ${_fmt(c.get('cost_per_hour'))}/h)")
        lines.append(f"binding constraint: class '{b.get('class')}' {b.get('constraint')} = {_fmt(b.get('value'))}"
                     f" vs limit {_fmt(b.get('limit'))}")
    for g, r in outcome.single_type_best.items():
        lines.append(f"best {g}-only fleet: {describe(r)}: ${r['cost_per_hour']:.2f}/h")
    lines += ["", f"timing: screen {t['screen_s']:.2f} s ({t['fleets_screened']} fleets of {t['replica_types']} "
              f"replica types, {t['fleets_pruned']} pruned by closed forms), verify {t['verify_s']:.2f} s "
              f"({t['simulations']} simulations, {t['simulations_resumed']} resumed), total {t['total_s']:.2f} s", ""]
    return "\n".join(lines)
