"""The main job and the CLI conventions: one JSON object with --json, exit 2 and one line on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def small_config(tmp_path, base="default.yaml", **patch) -> Path:
    data = yaml.safe_load((ROOT / "config" / base).read_text())
    data["workload"]["num_requests"] = 600
    data["fluid"] = {"enabled": False}
    for dotted, value in patch.items():
        node = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run_cli(*args, module="fluidserve.run"):
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_main_job_writes_every_output(tmp_path):
    cfg = small_config(tmp_path)
    proc = run_cli("--config", cfg, "--output-dir", tmp_path / "out", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON object on stdout
    exp = Path(summary["experiment_dir"])
    for name in ["config.yaml", "batch_snapshots.csv", "request_traces.csv", "events.csv", "memory_events.csv",
                 "summary.txt", "summary.json", "system_dynamics.png", "request_timeline.png"]:
        assert (exp / name).is_file(), name
    traces = pd.read_csv(exp / "request_traces.csv")
    assert len(traces) == 600
    assert summary["completed"] == 600
    # throughput is completions over first arrival -> last completion
    span = traces["completion_time"].max() - traces["arrival_time"].min()
    assert summary["throughput_rps"] == pytest.approx(600 / span, rel=1e-9)
    # ~70% load: every request's time per output token is near tau* = d0 / (1 - rho) ~ 22 ms
    assert 0.015 < summary["tpot_mean"] < 0.035
    resolved = yaml.safe_load((exp / "config.yaml").read_text())
    assert resolved["system"]["M_total"] == 32000


def test_main_job_with_fluid_model(tmp_path):
    # the fluid model is vllm_v0; 600 requests at 200 req/s arrive over 3 s: bins of 0.5 s
    # (the default 10 s bin is refused)
    cfg = small_config(tmp_path, base="seed_swapping.yaml", fluid={"enabled": True, "bin_s": 0.5})
    proc = run_cli("--config", cfg, "--output-dir", tmp_path / "out", "--json", "--quiet", "--no-figures")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["fluid"]["status"] == "ok"
    exp = Path(summary["experiment_dir"])
    fluid = pd.read_csv(exp / "fluid_trajectory.csv")
    assert len(fluid) > 10 and {"t"} & set(fluid.columns) or "time" in fluid.columns


def write_trace(tmp_path, text: str) -> Path:
    p = tmp_path / "trace.csv"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "case, expect",
    [
        ("unknown_key", "system.M_totl: unknown key"),
        ("wrong_type", "system.B"),
        ("negative_rate", "workload.arrival_rate"),
        ("missing_trace", "not found"),
        ("bad_row", "row 2"),
        ("negative_row", "row 1"),
        ("empty_trace", "no data rows"),
        ("missing_config", "config file not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, case, expect):
    trace = {"source": "trace", "trace": {"path": str(tmp_path / "trace.csv"), "format": "generic"}}
    if case == "unknown_key":
        cfg = small_config(tmp_path, system__M_totl=5)
    elif case == "wrong_type":
        cfg = small_config(tmp_path, system__B="many")
    elif case == "negative_rate":
        cfg = small_config(tmp_path, workload__arrival_rate=-2.0)
    elif case == "missing_trace":
        cfg = small_config(tmp_path, workload=trace)
    elif case == "bad_row":
        write_trace(tmp_path, "arrival_time,prefill_length,decode_length\n0.0,10,5\n0.5,abc,5\n")
        cfg = small_config(tmp_path, workload=trace)
    elif case == "negative_row":
        write_trace(tmp_path, "arrival_time,prefill_length,decode_length\n0.0,-10,5\n")
        cfg = small_config(tmp_path, workload=trace)
    elif case == "empty_trace":
        write_trace(tmp_path, "arrival_time,prefill_length,decode_length\n")
        cfg = small_config(tmp_path, workload=trace)
    else:
        cfg = tmp_path / "nope.yaml"
    proc = run_cli("--config", cfg, "--output-dir", tmp_path / "out", "--quiet")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert expect in lines[0]
    assert "Traceback" not in proc.stderr


def test_request_too_large_for_memory_is_counted_not_fatal(tmp_path):
    write_trace(tmp_path, "arrival_time,prefill_length,decode_length\n0.0,10,5\n0.1,500,100\n0.2,20,5\n")
    trace = {"source": "trace", "trace": {"path": str(tmp_path / "trace.csv"), "format": "generic"}}
    cfg = small_config(tmp_path, workload=trace, system__M_total=256)
    proc = run_cli("--config", cfg, "--output-dir", tmp_path / "out", "--json", "--quiet", "--no-figures")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["completed"] == 2
    assert summary["rejected"] == 1


def test_dispatcher_help_and_unknown_command():
    proc = run_cli("--help", module="fluidserve")
    assert proc.returncode == 0 and "crosscheck" in proc.stdout
    proc = run_cli("frobnicate", module="fluidserve")
    assert proc.returncode == 2 and "unknown command" in proc.stderr
    proc = run_cli("generate-requests", "--num_requests", "-5", module="fluidserve")
    assert proc.returncode == 2
