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
# # 02 · Fluid model vs simulator: the cross-check
#
# The fluid model is the limit of the discrete engine when the traffic and the system grow by a
# factor $n$ (arrival rates, $M$, $B$, $S_{\max}$ times $n$; per-token batch-time coefficients
# divided by $n$). Here we run the simulator at growing $n$ on two scenarios of
# `fluidserve.fluid.crosscheck`, divide its trajectories by $n$ and measure the sup-distance to the
# fluid solution (`fluidserve.fluid.compare.distance`). Small scales keep this notebook quick; the
# `python -m fluidserve crosscheck` command runs the full set.

# %%
from pathlib import Path

import pandas as pd

from fluidserve.config import load_config
from fluidserve.fluid import compare, crosscheck

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file())
cfg = load_config(ROOT / "config" / "seed_swapping.yaml")
SCALES = (1, 4, 16)

# %% [markdown]
# ## Underloaded: the steady state
# At about 55 % of compute capacity nothing waits long and memory is never full, so the fluid
# solution settles into the steady state of the closed forms (theory eqs. 17-19).

# %%
rows, fluid_under, sim_under, _ = crosscheck.run_scenario(cfg, "underloaded", SCALES, "scipy", 0.05)
under = pd.DataFrame(rows)
under[["n", "requests", "sup_err_running", "sup_err_kv_memory_tokens", "throughput_rel_err", "e2e_rel_err"]]

# %%
compare.fluid_vs_sim_figure(fluid_under, sim_under, scale=SCALES[-1], title=f"underloaded, n = {SCALES[-1]}")

# %% [markdown]
# ## Overload with swapping
# The heavy mix at 1.6x its memory-bound limit: the KV cache fills, LIFO victims are swapped out
# and the waiting queue grows linearly. The fluid model keeps memory at $M$ and gives the queue's
# growth rate.

# %%
rows, fluid_over, sim_over, _ = crosscheck.run_scenario(cfg, "overload_swapping", SCALES, "scipy", 0.05)
over = pd.DataFrame(rows)
over[["n", "requests", "sup_err_waiting", "sup_err_swapped", "sup_err_kv_memory_tokens", "throughput_rel_err"]]

# %%
compare.fluid_vs_sim_figure(fluid_over, sim_over, scale=SCALES[-1], title=f"overload (swapping), n = {SCALES[-1]}")

# %% [markdown]
# ## Convergence
# Errors against $n$ on log axes, with the least-squares rate of log(error) vs log(n); the law of
# large numbers predicts $n^{-1/2}$ for the random fluctuations.

# %%
table = pd.concat([under, over], ignore_index=True)
compare.convergence_figure(table)

# %%
pd.DataFrame(crosscheck.rates(table)).T

# %%
# the running mass of the underloaded system converges: the error shrinks as n grows
assert under["sup_err_running"].iloc[-1] < under["sup_err_running"].iloc[0]

# %% [markdown]
# ## The exact limit: the step map
# Under this scaling the step time stays $O(1)$, so the engine$/n$ converges to a deterministic
# recursion over engine steps (`fluid.backend: stepmap`, theory section "Discrete-time fluid
# limit"), of which the ODE above is a relaxation. Against the step map the errors keep falling;
# `tol_err_*` is the sup norm up to a time shift of one step (the simulator's step boundaries
# drift from the limit's by a fraction of a step). The README's table runs this to $n = 4096$.

# %%
SCALES_MAP = (4, 16, 64)
rows, fluid_map, sim_map, _ = crosscheck.run_scenario(cfg, "overload_swapping", SCALES_MAP, "stepmap", 0.01)
stepmap = pd.DataFrame(rows)
stepmap[["n", "sup_err_waiting", "tol_err_waiting", "sup_err_running", "tol_err_running",
         "sup_err_kv_memory_tokens", "tol_err_kv_memory_tokens", "throughput_rel_err"]]

# %%
compare.fluid_vs_sim_figure(fluid_map, sim_map, scale=SCALES_MAP[-1], title=f"overload vs the step map, n = {SCALES_MAP[-1]}")

# %%
# the step map is the better reference at the same n (measured: waiting 0.021 vs 0.026, KV 0.029 vs 0.061 at n = 64)
ode64 = crosscheck.run_scenario(cfg, "overload_swapping", [64], "scipy", 0.01)[0][0]
assert stepmap["sup_err_kv_memory_tokens"].iloc[-1] < ode64["sup_err_kv_memory_tokens"]
assert stepmap["tol_err_waiting"].iloc[-1] < stepmap["tol_err_waiting"].iloc[0]
