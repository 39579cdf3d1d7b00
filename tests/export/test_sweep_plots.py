"""Sweep figures: the plotted data are the results table's (group means), in the right panels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fluidserve.errors import InputError
from fluidserve.export import latex as lx
from fluidserve.export import sweep_plots as sp
from fluidserve.export.latex import export_figure

from .conftest import check_pdf


@pytest.fixture
def results() -> pd.DataFrame:
    rows = []
    for i, (rate, mem) in enumerate([(r, m) for r in (100, 200, 300) for m in (4000, 8000)]):
        for engine, bias in (("fluid", 1.0), ("sim", 1.1)):
            rows.append({"point_index": i, "point_id": f"p{i}", "engine": engine, "workload.arrival_rate": rate,
                         "system.M_total": mem, "throughput_rps": 0.9 * rate * bias,
                         "mean_ttft_s": rate / mem * bias, "mean_e2e_s": rate / mem * bias + 0.3,
                         "peak_kv_memory_tokens": min(mem, 30 * rate) * bias})
    df = pd.DataFrame(rows)
    df.attrs["fields"] = ["workload.arrival_rate", "system.M_total"]
    return df


def test_metric_vs_field_lines_per_engine_and_hue(results):
    fig = sp.metric_vs_field(results, "workload.arrival_rate", hue="system.M_total")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4
    assert [ax.get_ylabel() for ax in axes] == [sp.metric_label(m) for m in sp.DEFAULT_METRICS]
    lines = axes[2].get_lines()  # mean_e2e_s: 2 engines x 2 memory sizes
    assert len(lines) == 4
    expected = results[(results.engine == "sim") & (results["system.M_total"] == 8000)]["mean_e2e_s"].to_numpy()
    sim_8000 = [ln for ln in lines if ln.get_linestyle() == "--"][1]
    assert np.allclose(sim_8000.get_xdata(), [100, 200, 300])
    assert np.allclose(sim_8000.get_ydata(), expected)
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()][:2] == ["fluid model", "simulator"]


def test_metric_vs_field_averages_the_other_fields(results):
    fig = sp.metric_vs_field(results, "workload.arrival_rate", metrics=["mean_ttft_s"])
    fluid = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == "-"][0]
    sel = results[results.engine == "fluid"].groupby("workload.arrival_rate")["mean_ttft_s"].mean()
    assert np.allclose(fluid.get_ydata(), sel.to_numpy())
    assert "mean over" in fig._suptitle.get_text() and "KV capacity" in fig._suptitle.get_text()


def test_heatmap_cells_hold_the_metric(results, tmp_path):
    fig = sp.heatmap(results, "workload.arrival_rate", "system.M_total", "mean_e2e_s", engine="sim")
    mesh = fig.axes[0].collections[0]
    cells = np.asarray(mesh.get_array()).reshape(2, 3)
    table = results[results.engine == "sim"].pivot(index="system.M_total", columns="workload.arrival_rate",
                                                   values="mean_e2e_s")
    assert np.allclose(cells, table.to_numpy())
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["100", "200", "300"]
    paths = export_figure(fig, tmp_path / "hm", widths=("column",), formats=("pdf",))
    check_pdf(paths[0], lx.WIDTHS_IN["column"], max_ink=0.95)


def test_fluid_vs_sim_pairs_points(results):
    fig = sp.fluid_vs_sim(results, metrics=["throughput_rps"])
    xy = fig.axes[0].collections[0].get_offsets()
    assert len(xy) == 6
    assert np.allclose(xy[:, 1] * 1.1, xy[:, 0])


def test_bad_inputs_are_input_errors(results):
    with pytest.raises(InputError, match="no column 'system.B'"):
        sp.metric_vs_field(results, "system.B")
    with pytest.raises(InputError, match="at most 6 lines"):
        sp.metric_vs_field(results.assign(h=np.arange(len(results))), "workload.arrival_rate", hue="h")
    with pytest.raises(InputError, match="both engines"):
        sp.fluid_vs_sim(results[results.engine == "sim"])
    with pytest.raises(InputError, match="empty"):
        sp.heatmap(results.iloc[:0], "workload.arrival_rate", "system.M_total")
