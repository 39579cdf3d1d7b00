"""Closed forms of the fluid model, derived with sympy (theory eqs. 17-19).

The derivation is done once, symbolically, from the steady-state step balance
``tau = d0 + lambda * tau * w`` (a step admits lambda*tau requests, each costing the per-request
work w); everything numeric is a lambdified sympy expression, so the formulas in the LaTeX
export and the numbers returned are the same objects.

* underloaded steady state: tau* = d0/(1-rho), running, KV tokens, KV memory, throughput;
* stability: rho < 1 and lambda*tau* <= c* (per-step capacity: memory, token budget, sequences);
* capacity-bound throughput limit X_max = c*/(d0 + c* w) (memory-bound when c* = M/Kb);
* the compute-bound -> memory-bound transition rate lambda_c (= X_max).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import sympy as sp

from fluidserve.batch_time import BatchTimeModel

# symbols (units: s, tokens, req/s)
d0, d1p, d1d, d2 = sp.symbols("d_0 d_{1p} d_{1d} d_2", positive=True)
lam = sp.Symbol("lambda", positive=True)
Pbar, Dbar, Kbar, Kb = sp.symbols(r"\bar{P} \bar{D} \bar{K} \bar{K}_b", positive=True)
M, B, S = sp.symbols("M B S_{max}", positive=True)
# per scheduler: steps a request spends in the batch (V0: prefill step + D decode steps; V1: the
# prefill step samples the first token, D steps in all) and its decode tokens in the budget
Lb, Dd = sp.symbols(r"L_b D_d", positive=True)
tau, c = sp.symbols("tau c", positive=True)
c_star_sym = sp.Symbol("c^*", positive=True)
rho_sym = sp.Symbol("rho", positive=True)


@functools.lru_cache(maxsize=1)
def derive() -> dict[str, sp.Expr]:
    """The symbolic closed forms (sympy expressions), keyed by name."""
    w = d1p * Pbar + d1d * Dbar + d2 * Kbar  # work per request [s]
    rho = lam * w
    # steady state: per step, admissions lam*tau, prefill lam*tau*P, decoding lam*tau*D, kv lam*tau*K
    balance = sp.Eq(tau, d0 + d1p * lam * tau * Pbar + d1d * lam * tau * Dbar + d2 * lam * tau * Kbar)
    tau_star = sp.simplify(sp.solve(balance, tau)[0])
    assert sp.simplify(tau_star - d0 / (1 - rho)) == 0
    per_step = lam * tau_star
    c_star = sp.Min(M / Kb, B / (Pbar + Dd), S / Lb)
    # capacity-bound: a step admits c requests -> tau = d0 + c w, throughput c / tau
    tau_cap = d0 + c * w
    x_max = c / tau_cap
    # transition: lam * tau*(lam) = c
    lam_c = sp.simplify(sp.solve(sp.Eq(lam * d0 / (1 - lam * w), c), lam)[0])
    assert sp.simplify(lam_c - x_max) == 0
    return {
        "work_per_request": w,
        "rho": rho,
        "tau_star": tau_star,
        "running": sp.simplify(per_step * Dbar),
        "kv_tokens": sp.simplify(per_step * Kbar),
        "kv_memory": sp.simplify(per_step * Kb),
        "throughput": lam,
        "per_step_admissions": sp.simplify(per_step),
        "capacity": c_star,
        "stability": sp.And(rho_sym < 1, lam * d0 / (1 - rho_sym) <= c_star_sym),
        "tau_star_in_rho": d0 / (1 - rho_sym),
        "tau_capacity_bound": tau_cap,
        "throughput_max": x_max,
        "lambda_transition": lam_c,
        "rho_transition": sp.simplify(lam_c * w),
    }


@functools.lru_cache(maxsize=1)
def _numeric():
    e = derive()
    args = (d0, d1p, d1d, d2, lam, Pbar, Dbar, Kbar, Kb)
    f = {k: sp.lambdify(args, e[k], "math") for k in ("rho", "tau_star", "running", "kv_tokens", "kv_memory")}
    cap_args = (d0, d1p, d1d, d2, Pbar, Dbar, Kbar, c)
    f["throughput_max"] = sp.lambdify(cap_args, e["throughput_max"], "math")
    f["capacity"] = sp.lambdify((M, B, S, Pbar, Dd, Lb, Kb), e["capacity"], "math")
    return f


@functools.lru_cache(maxsize=1)
def _numeric_arrays():
    """The same sympy expressions as :func:`_numeric`, lambdified for numpy arrays."""
    e = derive()
    f = {"work_per_request": sp.lambdify((d1p, d1d, d2, Pbar, Dbar, Kbar), e["work_per_request"], "numpy")}
    f["capacity"] = sp.lambdify((M, B, S, Pbar, Dd, Lb, Kb), e["capacity"], "numpy")
    f["throughput_max"] = sp.lambdify((d0, d1p, d1d, d2, Pbar, Dbar, Kbar, c), e["throughput_max"], "numpy")
    f["tau_star"] = sp.lambdify((d0, d1p, d1d, d2, lam, Pbar, Dbar, Kbar), e["tau_star"], "numpy")
    return f


def batch_steps(mean_decode, scheduler: str = "vllm_v0"):
    """(L_b, D_d): steps a request spends in the batch and its decode tokens in the token budget.

    vLLM V0 (this package's engine): one prefill step, then D decode steps (the first token at the
    end of decode iteration 0): L_b = D + 1, D_d = D. vLLM V1: the prefill step samples the first
    token: L_b = D, D_d = D - 1.
    """
    D = np.asarray(mean_decode, float)
    if scheduler == "vllm_v1":
        return D, D - 1.0
    return D + 1.0, D


def capacity_arrays(batch_time_model: BatchTimeModel, mean_prefill, mean_decode, mean_kv_per_request,
                    mean_kv_memory_per_request, M_total: float, B: float, max_num_seqs: float,
                    scheduler: str = "vllm_v0") -> dict:
    """Vectorized eqs. 17-19 over arrays of request mixes (one entry per mix, e.g. per time bin).

    ``mean_kv_memory_per_request`` is the block-rounded memory a request holds summed over its
    steps in the batch (:func:`fluidserve.fluid.classes.memory_steps_in_batch`).

    Returns arrays: ``work_s`` (w, seconds of step time per request), ``capacity_per_step`` (c*,
    requests admitted per step at the binding limit) and ``throughput_max`` (X_max, req/s).
    """
    bt = batch_time_model
    f = _numeric_arrays()
    P, D = np.asarray(mean_prefill, float), np.asarray(mean_decode, float)
    K, Kb_ = np.asarray(mean_kv_per_request, float), np.asarray(mean_kv_memory_per_request, float)
    Lb_, Dd_ = batch_steps(D, scheduler)
    cap = np.asarray(f["capacity"](float(M_total), float(B), float(max_num_seqs), P, Dd_, Lb_, Kb_), float)
    D = Dd_  # the work per request counts decode steps
    return {
        "work_s": np.asarray(f["work_per_request"](bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s, P, D, K), float),
        "capacity_per_step": cap,
        "throughput_max": np.asarray(f["throughput_max"](bt.d0_s, bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s,
                                                         P, D, K, cap), float),
    }


def tau_star_arrays(batch_time_model: BatchTimeModel, rate, mean_prefill, mean_decode, mean_kv_per_request):
    """tau* = d0/(1 - rho) [s] (eq. 17) for arrays of admission rates [req/s] and mixes."""
    bt = batch_time_model
    return np.asarray(_numeric_arrays()["tau_star"](bt.d0_s, bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s,
                                                    np.asarray(rate, float), mean_prefill, mean_decode,
                                                    mean_kv_per_request), float)


def steady_state(batch_time_model: BatchTimeModel, arrival_rate: float, mean_prefill: float, mean_decode: float,
                 mean_kv_per_request: float, mean_kv_memory_per_request: float | None = None,
                 M_total: float | None = None, B: float | None = None, max_num_seqs: float | None = None,
                 scheduler: str = "vllm_v0") -> dict:
    """Numeric underloaded steady state (eq. 17) and, given limits, stability and X_max (18-19).

    Args:
        batch_time_model: the step-time coefficients.
        arrival_rate: lambda [req/s].
        mean_prefill, mean_decode: mean P and D (output tokens, vLLM's max_tokens) [tokens].
        mean_kv_per_request: context tokens read over a request's decode steps (V0: D steps,
            E[D*P + D*(D-1)/2]; V1: D - 1 steps).
        mean_kv_memory_per_request: block-rounded KV memory summed over the request's steps in the
            batch [token-steps] (:func:`fluidserve.fluid.classes.memory_steps_in_batch`: the
            prefill step's prompt blocks and each decode step's blocks after its growth token);
            default: mean_kv.
        scheduler: "vllm_v0" or "vllm_v1" (:func:`batch_steps`): the sequence and token caps.
        M_total, B, max_num_seqs: limits; when all given, ``capacity``, ``throughput_max``,
            ``lambda_transition`` and ``stable`` are added.

    Returns: tau_s, rho, running (requests), kv_tokens (context read per step), kv_memory_tokens,
    throughput (req/s), plus the limit quantities when requested. tau_s is inf when rho >= 1.
    """
    bt = batch_time_model
    kb = mean_kv_per_request if mean_kv_memory_per_request is None else mean_kv_memory_per_request
    f = _numeric()
    Lb_, Dd_ = (float(x) for x in batch_steps(mean_decode, scheduler))
    mean_decode = Dd_  # the work per request and the decoding mass count decode steps
    args = (bt.d0_s, bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s, arrival_rate, mean_prefill, mean_decode,
            mean_kv_per_request, kb)
    rho = f["rho"](*args)
    out = {"rho": rho, "throughput": arrival_rate}
    if rho < 1:
        out.update(tau_s=f["tau_star"](*args), running=f["running"](*args), kv_tokens=f["kv_tokens"](*args),
                   kv_memory_tokens=f["kv_memory"](*args))
    else:
        out.update(tau_s=float("inf"), running=float("inf"), kv_tokens=float("inf"), kv_memory_tokens=float("inf"))
    if M_total is not None and B is not None and max_num_seqs is not None:
        cap = f["capacity"](M_total, B, max_num_seqs, mean_prefill, Dd_, Lb_, kb)
        xmax = f["throughput_max"](bt.d0_s, bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s, mean_prefill,
                                   mean_decode, mean_kv_per_request, cap)
        binding = min(
            (M_total / kb, "memory"), (B / (mean_prefill + Dd_), "token_budget"),
            (max_num_seqs / Lb_, "max_num_seqs"),
        )[1]
        out.update(
            capacity_per_step=cap, throughput_max=xmax, lambda_transition=xmax, binding_limit=binding,
            stable=bool(rho < 1 and arrival_rate * out["tau_s"] <= cap),
        )
    return out


def to_latex() -> dict[str, str]:
    """LaTeX of each closed form."""
    e = derive()
    names = {
        "rho": r"\rho", "tau_star": r"\tau^*", "running": r"N^*", "kv_tokens": r"K^*", "kv_memory": r"\mathcal{M}^*",
        "capacity": r"c^*", "throughput_max": r"X_{\max}", "lambda_transition": r"\lambda_c",
        "rho_transition": r"\rho_c", "tau_capacity_bound": r"\tau_{c}",
    }
    names["tau_star_in_rho"] = r"\tau^*"
    return {k: f"{sym} = {sp.latex(e[k])}" for k, sym in names.items()} | {"stability": sp.latex(e["stability"])}


def write_latex(directory: str | Path) -> list[Path]:
    """Write theory/generated/<name>.tex (one equation each) and closed_forms.tex (all); returns paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    body = []
    for name, tex in to_latex().items():
        path = directory / f"{name}.tex"
        path.write_text(f"% generated by fluidserve.fluid.closed_forms.write_latex; do not edit\n\\[ {tex} \\]\n")
        paths.append(path)
        body.append(f"\\[ {tex} \\]")
    allpath = directory / "closed_forms.tex"
    allpath.write_text("% generated by fluidserve.fluid.closed_forms.write_latex; do not edit\n" + "\n".join(body) + "\n")
    paths.append(allpath)
    return paths
