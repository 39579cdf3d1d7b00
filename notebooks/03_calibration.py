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
# # 03 · Calibration: fitting the batch-time model to the H100 profile
#
# `calibration/data/h100_llama31_8b_profile.csv` holds step times measured on an H100 serving
# Llama-3.1-8B (decode, prefill and mixed batches). We fit the four-coefficient model
# $\tau = d_0 + d_{1p}\,\Pi + d_{1d}\,N + d_2\,K$ and the seed's two-parameter model
# $\tau = d_0 + d_1 (\Pi + N)$ by relative-error weighted least squares
# (`fluidserve.calibration.fit`), compare their errors, and use the fit in a simulation.

# %%
import tempfile
from pathlib import Path

import pandas as pd

from fluidserve.batch_time import BatchTimeModel
from fluidserve.calibration import fit, roofline
from fluidserve.config import load_config
from fluidserve.sim import simulate
from fluidserve.workload import make_workload

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file())
profile = fit.read_profile(ROOT / "calibration" / "data" / "h100_llama31_8b_profile.csv")
print(len(profile), "steps;", profile["phase"].value_counts().to_dict())
profile.head()

# %%
four = fit.fit_batch_time(profile, "four")
two = fit.fit_batch_time(profile, "two")
pd.DataFrame(
    {
        "coefficient (s)": four.coef_s,
        "95% CI low": {k: v[0] if v else None for k, v in four.ci_s.items()},
        "95% CI high": {k: v[1] if v else None for k, v in four.ci_s.items()},
    }
)

# %%
pd.DataFrame(
    {"four-coefficient": [four.mape, four.max_error, four.r2], "two-parameter": [two.mape, two.max_error, two.r2]},
    index=["MAPE", "max relative error", "R^2"],
)

# %% [markdown]
# The KV term matters: decode steps with long contexts read more KV cache, which the
# two-parameter model cannot express, so its errors grow with the context length.

# %%
fit.plot_residuals([four, two])

# %%
roofline.plot_roofline("H100-SXM", "Llama-3.1-8B", profile=profile)

# %% [markdown]
# ## The fitted model in the simulator
# A preset file (`calibrate fit --out`) plugs the coefficients into any config.

# %%
with tempfile.TemporaryDirectory() as tmp:
    preset = fit.write_preset(Path(tmp) / "h100.yaml", four, two, "h100 profile")
    model = BatchTimeModel.from_yaml(preset)
    cfg = load_config(ROOT / "config" / "default.yaml",
                      {"batch_time": {"preset": str(preset)}, "workload.num_requests": 2000})
    result = simulate(cfg, make_workload(cfg))
print(model)
done = result.completed
print(f"{len(done)} requests, mean TTFT {done['ttft'].mean():.3f} s, mean end-to-end {done['total_delay'].mean():.3f} s")

# %%
assert four.mape < two.mape
assert four.mape < 0.05
