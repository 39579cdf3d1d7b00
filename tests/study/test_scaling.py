"""The scaling study: saturated data-parallel replicas scale linearly; outputs; TP points; bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fluidserve.config import load_config
from fluidserve.errors import InputError
from fluidserve.study.scaling import ScalingPoint, add_efficiency, plan_points, point_config, run_point
from fluidserve.workload import make_workload

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "scaling_burstgpt.yaml"


def test_plan_points_divisibility_and_errors():
    pts = plan_points([1, 2, 4], [1, 2])
    assert [(p.gpus, p.tensor_parallel, p.replicas) for p in pts] == [(1, 1, 1), (2, 1, 2), (4, 1, 4), (2, 2, 1), (4, 2, 2)]
    with pytest.raises(InputError, match="--gpus"):
        plan_points([0, 2])
    with pytest.raises(InputError, match="multiple"):
        plan_points([1, 3], [2])


def test_saturated_replicas_scale_linearly():
    """Offered load far above what 4 GPUs serve: every replica is busy all the time, so 2 and 4
    replicas complete 2x and 4x the requests per second of one. The last batches drain with fewer
    requests than a full batch, which costs a few percent of the makespan at 3,000 requests per
    replica (measured: efficiency 0.99 at 2 replicas, 0.95 at 4)."""
    cfg = load_config(CONFIG, {"workload.num_requests": 12000, "workload.arrival_rate": 20000.0})
    workload = make_workload(cfg)
    rows = []
    for g in (1, 2, 4):
        p = ScalingPoint(g, 1)
        rows.append(run_point((point_config(cfg, p, use_roofline=False), workload, p, None)))
    rows = add_efficiency(rows)
    assert [r["completed"] for r in rows] == [12000, 12000, 12000]
    assert rows[1]["scaling_efficiency"] == pytest.approx(1.0, abs=0.04)
    assert rows[2]["scaling_efficiency"] == pytest.approx(1.0, abs=0.08)
    # and queueing falls: mean E2E shrinks with every doubling
    assert rows[0]["e2e_mean_s"] > rows[1]["e2e_mean_s"] > rows[2]["e2e_mean_s"]


def test_underloaded_fleet_serves_the_offered_rate():
    cfg = load_config(CONFIG, {"workload.num_requests": 3000, "workload.arrival_rate": 100.0})
    workload = make_workload(cfg)
    p = ScalingPoint(4, 1)
    row = run_point((point_config(cfg, p, use_roofline=False), workload, p, None))
    assert row["throughput_rps"] == pytest.approx(workload.mean_rate, rel=0.05)


def test_tp_points_use_the_roofline_per_degree():
    cfg = load_config(CONFIG, {"workload.num_requests": 200})
    c1 = point_config(cfg, ScalingPoint(2, 1), use_roofline=True)
    c2 = point_config(cfg, ScalingPoint(2, 2), use_roofline=True)
    assert (c1.cluster.replicas, c2.cluster.replicas) == (2, 1)
    b1, b2 = c1.batch_time_model(), c2.batch_time_model()
    # TP=2 streams half the weights per GPU: the fixed step cost drops, by less than half (all-reduces)
    assert 0.5 * b1.d0_s < b2.d0_s < b1.d0_s
    # and each TP=2 engine holds more KV (two GPUs' memory minus one copy of the weights)
    assert c2.system.M_total > 2 * c1.system.M_total
    nogpu = load_config(ROOT / "config" / "default.yaml")
    with pytest.raises(InputError, match="system.gpu and system.model"):
        point_config(nogpu, ScalingPoint(2, 2), use_roofline=True)


def test_cli_writes_every_output(tmp_path):
    cmd = [sys.executable, "-m", "fluidserve", "study", "scaling", "--config", str(CONFIG), "--gpus", "1,2",
           "--tensor-parallel", "1,2", "--num-requests", "500", "--output-dir", str(tmp_path), "--json",
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    assert [(c["gpus"], c["tensor_parallel"]) for c in out["configurations"]] == [(1, 1), (2, 1), (2, 2)]
    for name in ("scaling.csv", "report.md", "scaling.png", "scaling.pdf", "scaling.json",
                 "latency_1gpu_tp1.csv", "latency_2gpu_tp2.csv"):
        assert (tmp_path / name).exists(), name
    lat = pd.read_csv(tmp_path / "latency_2gpu_tp1.csv")
    assert lat["e2e_s"].is_monotonic_increasing and (lat["e2e_s"] >= lat["ttft_s"]).all()
    bad = subprocess.run([*cmd[:7], "--gpus", "1,x"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert bad.returncode == 2 and "--gpus" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
