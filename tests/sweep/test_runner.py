"""Running sweeps: resume after a kill, Dask = local, the Parquet store, the JAX vmap fast path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fluidserve.sweep import load_results, load_sweep, run_sweep, store
from fluidserve.sweep.metrics import METRICS
from fluidserve.sweep.runner import compute_task, make_task

from .conftest import ROOT


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killed_sweep_resumes_and_computes_every_point_exactly_once(write_sweep, tmp_path):
    # 36 simulator points of ~0.1 s each on 2 workers: the kill lands mid-sweep
    path = write_sweep(set={"workload.num_requests": 4000},
                       axes=[{"field": "workload.arrival_rate", "grid": {"start": 100, "stop": 300, "num": 6}},
                             {"field": "system.M_total", "values": [4000, 6000, 8000, 12000, 16000, 24000]}])
    out = tmp_path / "out"
    dataset = out / "t" / "results"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "fluidserve.sweep.cli", "--config", str(path), "--output-dir", str(out),
           "--workers", "2", "--quiet", "--no-figures"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if dataset.is_dir() and len(list(dataset.glob("part-*.parquet"))) >= 4:
            workers = _children(proc.pid)
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"sweep ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    proc.stderr.close()
    first = {p.name: p.stat().st_mtime_ns for p in dataset.glob("part-*.parquet")}
    assert 4 <= len(first) < 36
    # the pool's workers notice their parent is gone and exit on their own
    end = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "pool workers outlived the killed sweep"
    killed_rows = load_results(dataset)
    assert killed_rows["run_id"].nunique() == 1

    sweep = load_sweep(path)
    report = run_sweep(sweep, out, workers=2, progress=False)
    assert report.skipped == len(first)
    assert report.computed == 36 - len(first)
    assert report.errors == []
    df = load_results(out / "t")
    assert len(df) == 36
    assert not df.duplicated(["point_id", "engine"]).any()
    assert set(df["point_id"]) == {p.point_id for p in sweep.points}
    # parts written before the kill were neither rewritten nor recomputed
    assert {p.name: p.stat().st_mtime_ns for p in dataset.glob("part-*.parquet") if p.name in first} == first
    assert (df["run_id"] == killed_rows["run_id"].iloc[0]).sum() == len(first)
    # a third run has nothing to do
    again = run_sweep(sweep, out, workers=2, progress=False)
    assert (again.computed, again.skipped) == (0, 36)


def test_dask_local_cluster_gives_the_local_results(write_sweep, tmp_path):
    distributed = pytest.importorskip("distributed")
    sweep = load_sweep(write_sweep())
    local = run_sweep(sweep, tmp_path / "local", executor="local", workers=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        report = run_sweep(sweep, tmp_path / "dask", executor="dask", address=cluster.scheduler_address,
                           progress=False)
    assert local.computed == report.computed == 6 and report.errors == []
    a = load_results(tmp_path / "local" / "t").set_index(["point_id", "engine"]).sort_index()
    b = load_results(tmp_path / "dask" / "t").set_index(["point_id", "engine"]).sort_index()
    cols = ["point_index", "workload.arrival_rate", "system.M_total", *METRICS]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert a["completed"].eq(120).all()


def test_simulator_rows_match_a_direct_run(write_sweep, tmp_path):
    from fluidserve.sim import simulate
    from fluidserve.workload import make_workload

    sweep = load_sweep(write_sweep())
    point = sweep.points[4]
    result = compute_task(make_task(point, "sim"))
    assert result["ok"], result.get("error")
    row = result["row"]
    wl = make_workload(point.config)
    sim = simulate(point.config, wl)
    done = sim.completed
    assert row["completed"] == len(done) == 120
    assert row["mean_e2e_s"] == pytest.approx(done["total_delay"].mean(), rel=1e-12)
    assert row["mean_ttft_s"] == pytest.approx(done["ttft"].mean(), rel=1e-12)
    span = done["completion_time"].max() - wl.arrival_time_s[0]
    assert row["throughput_rps"] == pytest.approx(120 / span, rel=1e-12)
    assert row["peak_kv_memory_tokens"] <= point.config.system.M_total
    assert row["system.M_total"] == point.params["system.M_total"]


def test_failed_points_are_reported_not_stored_and_retried(write_sweep, tmp_path, monkeypatch):
    sweep = load_sweep(write_sweep())
    import fluidserve.sweep.runner as runner

    real = runner.compute_task
    calls = []

    def flaky(task):  # runs in-process (workers=1)
        calls.append(task["point_id"])
        if task["point_index"] == 2 and len(calls) <= 6:
            return {"ok": False, "error": "RuntimeError: boom", "traceback": ""}
        return real(task)

    monkeypatch.setattr(runner, "compute_task", flaky)
    first = run_sweep(sweep, tmp_path, workers=1, progress=False)
    assert first.computed == 5 and len(first.errors) == 1 and "boom" in first.errors[0]["error"]
    log = [json.loads(x) for x in (tmp_path / "t" / "errors.jsonl").read_text().splitlines()]
    assert log[0]["point_id"] == sweep.points[2].point_id
    second = run_sweep(sweep, tmp_path, workers=1, progress=False)
    assert (second.computed, second.skipped, second.errors) == (1, 5, [])
    assert len(load_results(tmp_path / "t")) == 6


def test_store_unifies_columns_and_ignores_partial_files(tmp_path):
    store.append_rows(tmp_path, [{"point_index": 1, "point_id": "b", "engine": "sim", "x": 2, "m": 1.5}])
    store.append_rows(tmp_path, [{"point_index": 0, "point_id": "a", "engine": "fluid", "x": 1.5, "s": "q"}])
    (tmp_path / ".tmp-dead-0000.parquet").write_bytes(b"PAR1 half a file")
    assert store.finished_keys(tmp_path) == {("a", "fluid"), ("b", "sim")}
    df = load_results(tmp_path)
    assert list(df["point_id"]) == ["a", "b"]
    assert df["x"].tolist() == [1.5, 2.0]
    assert np.isnan(df["m"].iloc[0]) and df["m"].iloc[1] == 1.5
    assert store.remove_partial(tmp_path) == 1


def test_vmap_fast_path_matches_the_scipy_solve_per_point(write_sweep, tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("diffrax")
    from fluidserve import fluid
    from fluidserve.sweep.metrics import fluid_metrics
    from fluidserve.workload import make_workload

    axes = [{"field": "workload.arrival_rate", "values": [150, 300]},
            {"field": "batch_time.d0_s", "values": [0.005, 0.009]}]
    sweep = load_sweep(write_sweep(engines="fluid", axes=axes,
                                   set={"workload.num_requests": 300, "fluid.num_classes": 2, "fluid.stages": 4,
                                        "fluid.bin_s": 0.5, "system.M_total": 6000, "fluid.backend": "scipy"}))
    report = run_sweep(sweep, tmp_path, progress=False)
    assert report.vmap_points == 4 and report.computed == 4
    df = load_results(tmp_path / "t").set_index("point_id")
    for point in (sweep.points[0], sweep.points[3]):
        ref = fluid_metrics(fluid.solve(point.config, make_workload(point.config), backend="scipy"))
        row = df.loc[point.point_id]
        for metric in ("completed", "mean_waiting_s", "mean_ttft_s", "mean_e2e_s", "throughput_rps",
                       "peak_running", "peak_kv_memory_tokens"):
            assert row[metric] == pytest.approx(ref[metric], rel=2e-3, abs=1e-4), metric
    # the heavier, slower point waits longer
    hi = df[(df["workload.arrival_rate"] == 300) & (df["batch_time.d0_s"] == 0.009)]["mean_e2e_s"].item()
    lo = df[(df["workload.arrival_rate"] == 150) & (df["batch_time.d0_s"] == 0.005)]["mean_e2e_s"].item()
    assert hi > lo


def test_vmap_fast_path_of_the_stepclock_model(write_sweep, tmp_path):
    pytest.importorskip("jax")
    from fluidserve.fluid.stepclock_solve import solve_stepclock
    from fluidserve.sweep.metrics import fluid_metrics
    from fluidserve.workload import make_workload

    axes = [{"field": "workload.arrival_rate", "values": [150, 300]},
            {"field": "batch_time.d0_s", "values": [0.005, 0.009]}]
    sweep = load_sweep(write_sweep(engines="fluid", axes=axes,
                                   set={"workload.num_requests": 300, "fluid.bin_s": 0.5, "system.M_total": 6000}))
    report = run_sweep(sweep, tmp_path, progress=False)
    assert report.vmap_points == 4 and report.computed == 4
    df = load_results(tmp_path / "t").set_index("point_id")
    for point in (sweep.points[0], sweep.points[3]):
        # the vmap rows are the fluid limit's means (no n = 1 step fluctuations), at the sweep's stride
        ref = fluid_metrics(solve_stepclock(point.config, make_workload(point.config), fluctuations=False))
        row = df.loc[point.point_id]
        for metric in ("completed", "mean_e2e_s", "throughput_rps", "peak_kv_memory_tokens"):
            assert row[metric] == pytest.approx(ref[metric], rel=0.03), metric


def test_vmap_does_not_apply_to_non_numeric_axes(write_sweep):
    from fluidserve.sweep import vmap

    sweep = load_sweep(write_sweep(engines="fluid", axes=[{"field": "system.mode",
                                                           "values": ["swapping", "recompute"]}]))
    assert "non-numeric" in vmap.why_not(sweep)
    assert vmap.plan(sweep, sweep.points) is None


def test_vmap_does_not_stand_in_for_other_fluid_backends(write_sweep, tmp_path):
    from fluidserve.sweep import load_results, run_sweep, vmap

    small = {"workload.num_requests": 120, "fluid.num_classes": 2, "fluid.bin_s": 0.5,
             "fluid.backend": "quasistatic"}
    sweep = load_sweep(write_sweep(engines="fluid", set=small))
    assert "quasistatic" in vmap.why_not(sweep)
    report = run_sweep(sweep, tmp_path / "out", progress=False, use_vmap=True)
    assert report.vmap_points == 0 and report.computed == len(sweep.points)
    df = load_results(tmp_path / "out" / sweep.name)
    # each row is the quasi-static model's own solve of that point
    from fluidserve import fluid
    from fluidserve.sweep.metrics import fluid_metrics
    from fluidserve.workload import make_workload

    p = sweep.points[0]
    want = fluid_metrics(fluid.solve(p.config, make_workload(p.config)))
    got = df.set_index("point_id").loc[p.point_id]
    assert got["mean_e2e_s"] == pytest.approx(want["mean_e2e_s"], rel=1e-12)



def test_vmap_points_are_stored_in_even_chunks(write_sweep, tmp_path, monkeypatch):
    """A kill loses at most one chunk: the runner asks vmap.run for even chunks and stores each."""
    from types import SimpleNamespace

    from fluidserve.sweep import runner, vmap

    sweep = load_sweep(write_sweep(engines="fluid", axes=[
        {"field": "workload.arrival_rate", "values": [100, 120, 140]},
        {"field": "system.M_total", "values": [8000, 16000]}]))
    asked = []

    def fake_run(plan, batch, progress):
        asked.append(batch)
        for start in range(0, len(plan.points), batch):
            yield [{"point_id": p.point_id, "engine": "fluid"} for p in plan.points[start:start + batch]]

    stored = []
    monkeypatch.setattr(vmap, "plan", lambda sw, points: SimpleNamespace(points=points))
    monkeypatch.setattr(vmap, "run", fake_run)
    monkeypatch.setattr(runner.store, "append_rows", lambda d, rows: stored.append(len(rows)))
    report = run_sweep(sweep, tmp_path / "out", progress=False, vmap_batch=4)
    assert asked == [3] and stored == [3, 3] and report.vmap_points == 6  # 6 points, ~4 a chunk: 2 of 3
