"""SLO bookkeeping shared by the screen and the verification: per-class percentiles and the verdict.

A class's statistics are a flat dict ``{metric}_p{q}_s`` (metric in ttft, tpot, e2e; q in
:data:`REPORTED` and every percentile its SLO names) plus ``attainment`` (share of its requests
meeting every threshold at once). :func:`verdict` compares them with the plan's SLOs: the fleet
meets the SLO when every class does (classes absent from the stats, e.g.
not served by a group of a mix, are skipped); the *binding* constraint is the one with the largest
value / threshold ratio (for attainment: target / achieved), so a ratio <= 1 means met.
"""

from __future__ import annotations

import math

import numpy as np

#: Percentiles always reported (p50/p90/p99 of TTFT, TPOT, E2E).
REPORTED = (50.0, 90.0, 99.0)
METRICS = ("ttft", "tpot", "e2e")
_NEVER = 1e300  # stands in for inf inside np.percentile


def stat_key(metric: str, q: float) -> str:
    """``ttft_p99_s`` for ('ttft', 99), ``tpot_p99.9_s`` for ('tpot', 99.9)."""
    return f"{metric}_p{q:g}_s"


def class_percentiles(plan) -> list[list[float]]:
    """Per class, the percentiles to compute: :data:`REPORTED` and those its SLO names."""
    out = []
    for c in plan.traffic.classes:
        qs = set(REPORTED) | {q for _, q, _ in c.slo.thresholds}
        out.append(sorted(qs))
    return out


def sample_stats(ttft_s, tpot_s, e2e_s, qs, thresholds) -> dict:
    """Statistics of measured requests (arrays; inf for a request never served, NaN tpot when D = 1)."""
    ttft_s, tpot_s, e2e_s = (np.asarray(x, float) for x in (ttft_s, tpot_s, e2e_s))
    out = {"requests": int(len(ttft_s))}
    for metric, v in (("ttft", ttft_s), ("tpot", tpot_s), ("e2e", e2e_s)):
        v = v[~np.isnan(v)]
        v = np.where(np.isinf(v), _NEVER, v)  # interpolating towards a never-served request gives inf
        for q in qs:
            x = float(np.percentile(v, q)) if len(v) else math.nan
            out[stat_key(metric, q)] = math.inf if x >= 1e200 else x  # any weight on _NEVER
    ok = np.ones(len(ttft_s), bool)
    for metric, _, thr in thresholds:
        v = {"ttft": ttft_s, "tpot": tpot_s, "e2e": e2e_s}[metric]
        ok &= np.isnan(v) | (v <= thr)
    out["attainment"] = float(ok.mean()) if len(ok) else math.nan
    return out


def verdict(plan, stats_by_class: dict[str, dict]) -> dict:
    """Whether every class meets its SLO, and the binding constraint.

    Returns ``meets_slo``, ``binding`` (``{"class", "constraint", "value", "limit", "ratio"}``)
    and ``violations`` (readable lines, empty when met).
    """
    worst = None
    violations = []
    for c in plan.traffic.classes:
        st = stats_by_class.get(c.name)
        if st is None:  # a group that serves none of this class's requests
            continue
        checks = [(stat_key(m, q), st.get(stat_key(m, q), math.nan), thr) for m, q, thr in c.slo.thresholds]
        for key, value, thr in checks:
            ratio = value / thr if math.isfinite(value) else math.inf
            if not math.isfinite(value) and math.isnan(value):
                ratio = math.inf
            item = {"class": c.name, "constraint": key, "value": value, "limit": thr, "ratio": ratio}
            if worst is None or ratio > worst["ratio"]:
                worst = item
            if ratio > 1:
                violations.append(f"class '{c.name}': {key} = {value:.4g} s > {thr:g} s")
        if c.slo.attainment is not None:
            got = st.get("attainment", math.nan)
            ratio = c.slo.attainment / got if got and got > 0 else math.inf
            item = {"class": c.name, "constraint": "attainment", "value": got, "limit": c.slo.attainment,
                    "ratio": ratio}
            if worst is None or ratio > worst["ratio"]:
                worst = item
            if ratio > 1:
                violations.append(f"class '{c.name}': attainment {got:.4f} < {c.slo.attainment:g}")
    return {"meets_slo": not violations, "binding": worst, "violations": violations}
