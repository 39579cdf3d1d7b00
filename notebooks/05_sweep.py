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
# # 05 · A parameter sweep: arrival rate x KV-cache size
#
# `config/sweep_example.yaml` sweeps the arrival rate and the KV capacity $M$ on the default
# config and runs both engines at every point. Points run on a local process pool (or a Dask
# cluster: `--executor dask --address ...`); fluid points over numeric fields take the JAX
# `vmap` fast path. Results are appended to a Parquet dataset as points finish, so a re-run
# computes only what is missing. Here the sweep is shrunk (fewer requests and values) to stay quick.

# %%
import tempfile
from pathlib import Path

from fluidserve.export import export_table, latex_style, tex_available
from fluidserve.export import sweep_plots
from fluidserve.sweep import load_results, load_sweep, run_sweep

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").is_file())
sweep = load_sweep(ROOT / "config" / "sweep_example.yaml")
print(len(sweep.points), "points x", sweep.engines, "| fields:", sweep.fields)

# %%
# a smaller copy of the example: 3 rates x 3 memory sizes, 600 requests per point
small = load_sweep(
    ROOT / "config" / "sweep_example.yaml",
    {"set": {"workload.num_requests": 600, "fluid.num_classes": 2, "fluid.stages": 6, "fluid.bin_s": 0.5},
     "axes": [{"field": "workload.arrival_rate", "values": [100, 175, 250]},
              {"field": "system.M_total", "grid": {"start": 6000, "stop": 24000, "num": 3, "scale": "log"}}]},
)
out = Path(tempfile.mkdtemp(prefix="sweep-"))
report = run_sweep(small, out, workers=2, progress=False)
print(f"computed {report.computed} (vmap: {report.vmap_points}), skipped {report.skipped}, "
      f"{report.wall_time_s:.1f} s")

# %% [markdown]
# Running it again finds every point stored and computes nothing.

# %%
again = run_sweep(small, out, workers=2, progress=False)
assert (again.computed, again.skipped) == (0, 18)

# %%
df = load_results(out / small.name)
df[["engine", "workload.arrival_rate", "system.M_total", "throughput_rps", "mean_ttft_s", "mean_e2e_s",
    "peak_kv_memory_tokens"]].head(8)

# %% [markdown]
# ## Figures
# Metrics against the arrival rate, one line per KV size (fluid solid, simulator dashed).

# %%
with latex_style():
    fig = sweep_plots.metric_vs_field(df, "workload.arrival_rate", hue="system.M_total")
fig

# %%
sweep_plots.heatmap(df, "workload.arrival_rate", "system.M_total", "mean_e2e_s", engine="sim")

# %%
sweep_plots.fluid_vs_sim(df)

# %% [markdown]
# ## A LaTeX table
# `export_table` writes booktabs LaTeX; `export_figure` writes PGF/PDF at `\columnwidth`
# and `\textwidth` (the `sweep --latex` flag does both for every figure).

# %%
table = df[df.engine == "sim"][["workload.arrival_rate", "system.M_total", "throughput_rps", "mean_e2e_s"]]
path = export_table(table, out / "sim.tex", columns={"workload.arrival_rate": "rate (req/s)",
                                                     "system.M_total": "M (tokens)",
                                                     "throughput_rps": "throughput (req/s)",
                                                     "mean_e2e_s": "mean e2e (s)"})
print(path.read_text())
print("TeX installed (PGF export available):", tex_available())

# %%
# more memory never hurts the simulated delay at the highest rate
sim = df[(df.engine == "sim") & (df["workload.arrival_rate"] == 250)].sort_values("system.M_total")
assert sim["mean_e2e_s"].is_monotonic_decreasing
