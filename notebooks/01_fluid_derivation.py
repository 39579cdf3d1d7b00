# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 - The fluid model: derivation and numerical checks
#
# Equations: `theory/fluid_model.tex` (numbers below refer to it). Here we
# 1. derive the underloaded steady state with sympy from the per-step balance (eq. 17),
# 2. derive the capacity-bound throughput limit and the compute -> memory-bound transition (eqs. 18-19),
# 3. check them against the ODE's long-time limit (<= 0.5 %) and against the simulator,
# 4. export the closed forms as LaTeX into `theory/generated/`.

# %%
from pathlib import Path

import numpy as np
import sympy as sp

from fluidserve.config import load_config
from fluidserve.fluid import closed_forms as cf
from fluidserve.fluid.params import build_params
from fluidserve.fluid.solve import solve_params
from fluidserve.workload import make_workload

ROOT = Path.cwd() if (Path.cwd() / "config").is_dir() else Path.cwd().parent

# %% [markdown]
# ## 1. Steady state from the step balance
# In steady state a step of length $\tau$ admits the $\lambda\tau$ requests that arrived during
# the previous step; it prefills $\lambda\tau\bar P$ tokens, decodes $\lambda\tau\bar D$ sequences
# (each request is in $\bar D$ decode stages) reading $\lambda\tau\bar K$ context tokens:

# %%
tau = cf.tau
balance = sp.Eq(tau, cf.d0 + cf.d1p * cf.lam * tau * cf.Pbar + cf.d1d * cf.lam * tau * cf.Dbar
                + cf.d2 * cf.lam * tau * cf.Kbar)
tau_star = sp.solve(balance, tau)[0]
rho = cf.lam * (cf.d1p * cf.Pbar + cf.d1d * cf.Dbar + cf.d2 * cf.Kbar)
assert sp.simplify(tau_star - cf.d0 / (1 - rho)) == 0
tau_star

# %% [markdown]
# ## 2. Capacity bound and the transition
# A step admits at most $c^* = \min(M/\bar K_b, B/(\bar P+\bar D), S_{\max}/\bar D)$ requests;
# the transition rate solves $\lambda\tau^*(\lambda) = c$:

# %%
c = cf.c
lam_c = sp.solve(sp.Eq(cf.lam * cf.d0 / (1 - rho), c), cf.lam)[0]
x_max = c / (cf.d0 + c * (cf.d1p * cf.Pbar + cf.d1d * cf.Dbar + cf.d2 * cf.Kbar))
assert sp.simplify(lam_c - x_max) == 0
sp.simplify(lam_c)

# %% [markdown]
# ## 3. Numerical checks on the seed config (vllm_v0, 150 req/s)

# %%
cfg = load_config(ROOT / "config" / "seed_swapping.yaml", {
    "workload.arrival_rate": 150.0, "workload.num_requests": 4500, "fluid.bin_s": 30.0,
    "fluid.horizon_s": 20.0, "fluid.dt_out_s": 0.5,
})
full = make_workload(cfg)
wl = full.subset(full.arrival_time_s < 30.0)
p, tables = build_params(cfg, wl)
p = p._replace(lam=p.lam[:1].sum() * tables.share[None, :])
res = solve_params([p], tables, cfg.fluid, "scipy")
inputs = dict(
    arrival_rate=float(p.lam.sum()),
    mean_prefill=float(tables.share @ tables.mean_prefill_tokens),
    mean_decode=float(tables.share @ tables.mean_decode_tokens),
    mean_kv_per_request=tables.kv_read_per_request,
    mean_kv_memory_per_request=tables.kv_memory_steps_per_request,
    M_total=float(p.M_total), B=cfg.system.B, max_num_seqs=cfg.system.max_num_seqs,
)
ss = cf.steady_state(cfg.batch_time_model(), **inputs)
last = res.series.iloc[-1]
checks = {
    "step time [s]": (last["step_time_s"], ss["tau_s"]),
    "running": (last["running"], ss["running"]),
    "KV memory [tokens]": (last["kv_memory_tokens"], ss["kv_memory_tokens"]),
    "throughput [req/s]": (last["throughput_rps"], ss["throughput"]),
}
for name, (ode, closed) in checks.items():
    print(f"{name:20s} ODE {ode:12.5g}  closed form {closed:12.5g}  rel. diff {abs(ode / closed - 1):.2e}")
    assert abs(ode / closed - 1) <= 5e-3
print(f"rho = {ss['rho']:.3f}, binding limit: {ss['binding_limit']}, X_max = {ss['throughput_max']:.1f} req/s")

# %% [markdown]
# The simulator at scale n = 8 (per-replica normalized), time-averaged over its steady window:

# %%
from fluidserve.fluid.scaling import scaled_config, scaled_workload  # noqa: E402
from fluidserve.sim import simulate  # noqa: E402

n = 8
swl = scaled_workload(wl, n, 30.0, seed=1)
sim = simulate(scaled_config(cfg, n), swl, batch_time=cfg.batch_time_model().scaled(n))
s = sim.snapshots
win = (s["time"] > 5.0) & (s["time"] < 28.0)
dur = s.loc[win, "batch_duration"]
lam_sim = float(((swl.arrival_time_s > 5) & (swl.arrival_time_s < 28)).sum()) / 23.0 / n
ss_sim = cf.steady_state(cfg.batch_time_model(), **(inputs | {"arrival_rate": lam_sim}))
run_sim = float((s.loc[win, "running"] * dur).sum() / dur.sum()) / n
print(f"running: simulator {run_sim:.2f} vs closed form {ss_sim['running']:.2f}; "
      f"step: {dur.mean() * 1e3:.3f} vs {ss_sim['tau_s'] * 1e3:.3f} ms")
assert abs(run_sim / ss_sim["running"] - 1) <= 0.02

# %% [markdown]
# ## 4. LaTeX export

# %%
paths = cf.write_latex(ROOT / "theory" / "generated")
print("\n".join(str(p_.relative_to(ROOT)) for p_ in paths))
print(cf.to_latex()["throughput_max"])
