"""Figures of theory/fluid_modeling.tex, written as PGF (and PDF) into theory/figures/.

    python theory/make_figures.py            (from the repository root; `make -C theory figures`)

1. A sweep of the arrival rate at two KV capacities, fluid model vs simulator (both engines),
   as a figure and a booktabs table.
2. Fluid vs simulator trajectories in overload with swapping, simulator at scale n = 16.
3. The convergence of the simulator to the fluid solution as n grows (two scenarios).
Settings are small so the figures build in well under a minute on two cores.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "theory" / "figures"
WIDTH_IN = 6.0  # the document's \textwidth (A4, 2.5 cm margins) is 6.3 in


def main() -> int:
    from fluidserve.config import load_config
    from fluidserve.export import export_figure, export_table, latex_style, tex_available
    from fluidserve.export import sweep_plots
    from fluidserve.fluid import compare, crosscheck
    from fluidserve.sweep import load_results, run_sweep, sweep_from_dict

    formats = ("pgf", "pdf") if tex_available() else ("pdf",)
    OUT.mkdir(parents=True, exist_ok=True)
    sweep = sweep_from_dict(
        {
            "name": "theory_rate",
            "base": str(ROOT / "config" / "default.yaml"),
            "set": {"workload.num_requests": 1500, "fluid.num_classes": 2, "fluid.stages": 8, "fluid.bin_s": 0.5},
            "engines": "both",
            "axes": [{"field": "workload.arrival_rate", "values": [60, 100, 140, 180, 220, 260]},
                     {"field": "system.M_total", "values": [8000, 24000]}],
        },
        "theory sweep",
    )
    with tempfile.TemporaryDirectory() as tmp:
        run_sweep(sweep, tmp, workers=2, progress=False)
        df = load_results(Path(tmp) / sweep.name)
    with latex_style():
        fig = sweep_plots.metric_vs_field(df, "workload.arrival_rate", hue="system.M_total")
    export_figure(fig, OUT / "sweep_rate", widths=(WIDTH_IN,), formats=formats, aspect=0.62)
    wide = df.pivot_table(index=["system.M_total", "workload.arrival_rate"], columns="engine",
                          values=["throughput_rps", "mean_e2e_s"])
    wide.columns = [f"{m}|{e}" for m, e in wide.columns]
    wide = wide.reset_index()[["system.M_total", "workload.arrival_rate", "throughput_rps|fluid",
                               "throughput_rps|sim", "mean_e2e_s|fluid", "mean_e2e_s|sim"]]
    export_table(wide, OUT / "sweep_rate_table.tex", precision=3, columns={
        "system.M_total": "M (tokens)", "workload.arrival_rate": "rate (req/s)",
        "throughput_rps|fluid": "throughput, fluid (req/s)", "throughput_rps|sim": "throughput, sim (req/s)",
        "mean_e2e_s|fluid": "e2e, fluid (s)", "mean_e2e_s|sim": "e2e, sim (s)"})

    cfg = load_config(ROOT / "config" / "default.yaml")
    tables = []
    for name in ("underloaded", "overload_swapping"):
        rows, fres, sim, _ = crosscheck.run_scenario(cfg, name, (1, 4, 16, 64), "scipy", 0.05)
        tables.append(pd.DataFrame(rows))
        if name == "overload_swapping":
            with latex_style():
                fig = compare.fluid_vs_sim_figure(fres, sim, scale=64, title="overload with swapping, n = 64")
            export_figure(fig, OUT / "fluid_vs_sim_overload", widths=(WIDTH_IN,), formats=formats, aspect=0.55)
    with latex_style():
        fig = compare.convergence_figure(pd.concat(tables, ignore_index=True))
    export_figure(fig, OUT / "convergence", widths=(WIDTH_IN,), formats=formats, aspect=0.45)
    print(f"figures written to {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
