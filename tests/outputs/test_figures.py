import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from fluidserve.outputs.figures import (
    aggregate_snapshots,
    completion_curve,
    request_timeline,
    sample_requests,
    save_figure,
    system_dynamics,
)
from fluidserve.sim.result import SNAPSHOT_COLUMNS, SimResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_system_dynamics_six_panels_png_and_pdf(tmp_path, result):
    fig = system_dynamics(result)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["requests", "KV memory (tokens)", "memory utilization (%)", "batch time (ms)",
                      "completed requests", "throughput (req/s)"]
    assert fig.axes[4].get_xlabel() == "time (s)"
    # the M_total line sits at 64 tokens
    assert any(np.allclose(line.get_ydata(), 64) for line in fig.axes[1].get_lines())
    paths = save_figure(fig, tmp_path / "system_dynamics", formats=("png", "pdf"))
    assert [p.name for p in paths] == ["system_dynamics.png", "system_dynamics.pdf"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC and paths[0].stat().st_size > 10_000
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["system_dynamics.pdf", "system_dynamics.png"]


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pgf output needs LaTeX")
def test_pgf_output(tmp_path, result):
    (path,) = save_figure(request_timeline(result), tmp_path / "tl", formats=("pgf",))
    assert "\\begin{pgfpicture}" in path.read_text()


def _snaps(times, dur, replica, **cols):
    n = len(times)
    data = {c: np.zeros(n) for c in SNAPSHOT_COLUMNS}
    data.update(time=times, batch_duration=dur, replica=np.full(n, replica), **cols)
    return pd.DataFrame(data)[SNAPSHOT_COLUMNS]


def test_aggregate_sums_replicas_on_common_grid():
    t = np.arange(10.0)  # steps [k, k+1), counts at step end k+1
    a = _snaps(t, np.ones(10), 0, running=np.full(10, 2.0), waiting=np.arange(1.0, 11.0))
    b = _snaps(t + 0.5, np.ones(10), 1, running=np.full(10, 3.0), waiting=np.zeros(10))
    agg = aggregate_snapshots(pd.concat([a, b], ignore_index=True), max_points=21)
    assert len(agg) == 21
    # grid 0 .. 10.5 in bins of 0.5; first step ends at t=1.0 -> bins before it read 0
    assert agg["running"].iloc[0] == 0
    # from the bin where both replicas have reported on, the sum is 2 + 3
    assert np.all(agg["running"].iloc[3:] == 5.0)
    # replica 0's waiting count k+1 is reported at t = k+1: bin [k+1, k+1.5) holds it
    for k in range(9):
        assert agg["waiting"].iloc[2 * (k + 1)] == k + 1
    # each bin [k, k+0.5) has one step start of 1 s (replica 0) and [k+0.5, k+1) one of replica 1
    assert np.allclose(agg["batch_duration"].iloc[:20], 1.0)


def test_aggregate_downsamples_large_tables_fast():
    n = 300_000
    rng = np.random.default_rng(0)
    dur = rng.uniform(0.01, 0.03, n)
    t = np.concatenate([[0.0], np.cumsum(dur)[:-1]])
    used = rng.integers(0, 1000, n).astype(float)
    agg = aggregate_snapshots(_snaps(t, dur, 0, gpu_memory_used=used), max_points=1500)
    assert len(agg) == 1500
    # means of bins stay inside the data's range and the time-average is preserved roughly
    assert agg["gpu_memory_used"].between(0, 999).all()
    assert agg["gpu_memory_used"].mean() == pytest.approx(used.mean(), rel=0.02)
    assert agg["batch_duration"].mean() == pytest.approx(0.02, rel=0.02)


def test_completion_curve():
    req = pd.DataFrame({"completion_time": [1.0, 2.0, 3.0, 4.0, np.nan]})
    cum, rate = completion_curve(req, np.array([0.5, 2.0, 4.0]), window_s=2.0)
    assert cum.tolist() == [0, 2, 4]
    # (2, 4] holds 3.0 and 4.0 -> 2 / 2 s
    assert rate.tolist() == [0.0, 1.0, 1.0]


def test_request_timeline_bars_and_swap_markers(tmp_path, result):
    fig = request_timeline(result, n=40, seed=1)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time (s)"
    # waiting spans 0 (r0), 0.5 (r1), 1.0 (r2), 0 (r3 arrives at the horizon); running 1.0, 1.5, 0.5
    widths = sorted(round(p.get_width(), 9) for p in ax.patches)
    assert widths == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.5]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "swap_out" in labels and "swap_in" in labels and "preempt" in labels
    offsets = {c.get_label(): c.get_offsets() for c in ax.collections}
    assert offsets["swap_out"].tolist() == [[1.2, 1.0]]  # request 1 is row 1
    (path,) = save_figure(fig, tmp_path / "tl")
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_sample_requests_window_is_seeded_and_contains_a_swapped_request(result):
    req = pd.concat([result.requests] * 50, ignore_index=True)
    req["req_id"] = np.arange(len(req))
    req["arrival_time"] = np.arange(len(req), dtype=float)
    req["swap_count"] = 0
    req["preempt_count"] = 0
    req.loc[137, "swap_count"] = 2
    s1 = sample_requests(req, 10, seed=5)
    assert len(s1) == 10 and 137 in s1["req_id"].tolist()
    assert np.all(np.diff(s1["arrival_time"]) > 0)
    assert s1["req_id"].tolist() == sample_requests(req, 10, seed=5)["req_id"].tolist()


def test_empty_result_still_draws(result):
    empty = SimResult(result.requests.iloc[:0], result.snapshots.iloc[:0], result.events.iloc[:0],
                      result.memory_events.iloc[:0], result.rejected.iloc[:0], M_total=64)
    assert len(system_dynamics(empty).axes) == 6
    assert len(request_timeline(empty).axes) == 1


def test_multi_replica_result_uses_total_capacity(result):
    s2 = result.snapshots.copy()
    s2["replica"] = 1
    multi = SimResult(result.requests, pd.concat([result.snapshots, s2], ignore_index=True), result.events,
                      result.memory_events, result.rejected, M_total=64, replicas=2)
    fig = system_dynamics(multi)
    assert "2 replicas" in fig.get_suptitle()
    assert any(np.allclose(line.get_ydata(), 128) for line in fig.axes[1].get_lines())
    util = fig.axes[2].get_lines()[0].get_ydata()
    assert np.nanmax(util) == pytest.approx(75.0)  # 2 x 48 of 128 tokens


def test_unfinished_request_runs_to_the_horizon_hatched(result):
    req = result.requests.copy()
    req.loc[3, ["arrival_time", "first_enter_running_time"]] = [1.5, 2.0]  # started, never completed
    res = SimResult(req, result.snapshots, result.events, result.memory_events, result.rejected, M_total=64)
    ax = request_timeline(res).axes[0]
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 1
    assert hatched[0].get_x() == pytest.approx(2.0)
    assert hatched[0].get_width() == pytest.approx(0.5)  # horizon: last completion at 2.5 s
