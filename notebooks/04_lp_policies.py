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
# # 04 · LP policies: routing and clocks for minimum energy
#
# `config/lp_example.yaml` describes two GPU pools (H100, A100) with several SM clocks and three
# traffic classes with TTFT/TPOT SLOs. The LP (`fluidserve.policy`) routes each class's rate to
# (pool, clock) targets and picks GPU counts so that the fluid steady state of every replica meets
# the SLOs at minimum power; the policy is then replayed in the discrete simulator against
# round-robin / least-loaded baselines at the maximum clock.

# %%
from pathlib import Path

import pandas as pd

from fluidserve.policy import cli as lp_cli
from fluidserve.policy import figures
from fluidserve.policy.lp import solve
from fluidserve.policy.lp_config import load_lp_config
from fluidserve.policy.problem import build_problem
from fluidserve.policy.report import report_dict, routing_table
from fluidserve.policy.validate import lp_predictions, validate

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file())
cfg = load_lp_config(ROOT / "config" / "lp_example.yaml")
pd.DataFrame([c.model_dump() for c in cfg.classes])

# %%
problem = build_problem(cfg)
solution = solve(problem, "energy", integer=True)
print("feasible:", solution.feasible, "| energy per token (J):", round(solution.energy_per_token_j, 4))
routing = routing_table(solution)
routing

# %%
figures.routing_bars(routing.to_dict("records"), [c.name for c in cfg.classes])

# %% [markdown]
# ## Energy against load
# The same program at scaled rates, with DVFS and with every GPU at its maximum clock.

# %%
curves = lp_cli.energy_curves(cfg, True)
figures.energy_vs_load(curves)

# %% [markdown]
# ## Replay in the simulator
# A short replay (3000 requests) of the LP policy and the baselines; energy from the power model.

# %%
validation = validate(cfg, solution, num_requests=3000)
prediction = lp_predictions(solution, cfg)
pd.Series({k: validation[k] for k in ("energy_per_token_j", "baseline_energy_per_token_j", "energy_saving",
                                       "slo_attainment", "lp_predicted_energy_per_token_j",
                                       "lp_vs_sim_energy_error")})

# %%
report = report_dict(solution, prediction)
assert validation["energy_saving"] > 0
assert abs(validation["lp_vs_sim_energy_error"]) < 0.15
