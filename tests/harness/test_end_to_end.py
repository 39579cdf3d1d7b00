"""The harness end to end against simulated servers (one stand-in; a prefill + decode pair behind the
proxy), with the fake NVML, and the report's prediction held against the measurement.

The stand-ins run the same step-time model as the simulator, so the prediction must match what the
client measured through the harness (and the proxy) up to HTTP overheads; the servers' clocks run at
time scale 0.1 (one simulated second per ten wall seconds), so those overheads (a few wall ms per
hop on a busy machine) are a small fraction of each simulated latency.
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from .conftest import NVML_STANDIN, harness_cmd, harness_env

TIME_SCALE = 0.1
LINK_GBPS = 25.0
KV_BYTES = 131072


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import yaml

    from .conftest import CONFIG, write_requests

    tmp = tmp_path_factory.mktemp("harness")
    cfg = tmp / "harness.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    req = write_requests(tmp / "requests.csv", 6, seed=2, mean_gap_s=0.03, decode=(4, 10))
    common = ["--config", str(cfg), "--requests", str(req), "--time-scale", str(TIME_SCALE),
              "--nvml-module", f"{NVML_STANDIN}:two_gpus", "--json"]
    procs = {
        "single": subprocess.Popen(harness_cmd("sim", "single", "--output-dir", str(tmp / "single"), *common),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=harness_env()),
        "disagg": subprocess.Popen(harness_cmd("sim", "disagg", "--output-dir", str(tmp / "disagg"), "--kv-link-GBps", str(LINK_GBPS), *common),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=harness_env()),
    }
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=240)
        assert p.returncode == 0, stderr[-3000:]
        out[name] = json.loads(stdout)
    from fluidserve.harness.report import build_report

    report = build_report([str(tmp / "single"), str(tmp / "disagg")], str(tmp / "report"))
    return {"tmp": tmp, "requests": pd.read_csv(req), "report": report, **out}


def test_single_run_writes_both_phases_power_and_logs(runs):
    res, d = runs["single"], runs["tmp"] / "single"
    assert res["status"] == "complete" and res["error"] is None
    for f in ("single_results.json", "single_prefill_requests.csv", "single_e2e_requests.csv", "single_power_gpu0.csv",
              "single_single.log", "workload.csv", "config.yaml"):
        assert (d / f).is_file(), f
    pre = pd.read_csv(d / "single_prefill_requests.csv").sort_values("req_id")
    e2e = pd.read_csv(d / "single_e2e_requests.csv").sort_values("req_id")
    assert (pre["tokens_received"] == 1).all()  # the prefill phase: max_tokens=1
    assert e2e["tokens_received"].tolist() == runs["requests"]["decode_length"].tolist()
    assert res["power"]["0"]["avg_power_w"] == pytest.approx(300.0, rel=0.05)  # the fake GPU draws 300 W (5%: see below)
    for phase in res["phases"].values():  # constant 300 W over the phase's window
        t0, t1 = phase["power_window_s"]
        assert phase["power"]["0"]["energy_j"] == pytest.approx(300.0 * (t1 - t0), rel=0.1)
    assert res["servers"][0]["exit_code"] == 0


def test_disagg_run_goes_through_the_proxy_with_the_modeled_kv_transfer(runs):
    res, d = runs["disagg"], runs["tmp"] / "disagg"
    assert res["status"] == "complete"
    for f in ("disaggregated_results.json", "proxy_requests.csv", "disagg_power_gpu0.csv", "disagg_power_gpu1.csv",
              "disagg_prefill.log", "disagg_decode.log", "disagg_proxy.log"):
        assert (d / f).is_file(), f
    proxy = pd.read_csv(d / "proxy_requests.csv")
    measured = proxy[proxy["req_id"] >= res["warmup_requests"]]
    assert len(measured) == len(runs["requests"])
    assert measured["error"].isna().all()
    assert sorted(measured["tokens"]) == sorted(runs["requests"]["decode_length"])
    # KV transfer reported by the prefill stand-in: prompt bytes over the link, by hand
    expected = measured["prompt_tokens"] * KV_BYTES / (LINK_GBPS * 1e9)
    assert measured["kv_transfer_reported_s"].to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-9)
    assert res["kv_transfer_source"] == "server"
    assert res["power"]["0"]["role"] == "prefill" and res["power"]["1"]["role"] == "decode"
    # the decode GPU's fake draws 250 W, the prefill GPU's 300 W: 5% still tells them apart, and
    # allows for the scheduling gap between the energy-counter read and its timestamp on a busy CPU
    assert res["power"]["1"]["avg_power_w"] == pytest.approx(250.0, rel=0.05)
    assert {s["name"]: s["exit_code"] for s in res["servers"]} == {"prefill": 0, "decode": 0, "proxy": 0}


@pytest.mark.parametrize("layout", ["single", "disagg"])
@pytest.mark.parametrize("metric", ["ttft_s", "e2e_s"])
def test_prediction_matches_the_stand_in_measurement_within_5_percent(runs, layout, metric):
    run = next(r for r in runs["report"]["runs"] if r["layout"] == layout)
    row = run["metrics"][metric]
    assert row["measured"]["n"] == len(runs["requests"])
    assert abs(row["rel_error"]) < 0.05, row


def test_report_files(runs):
    files = runs["report"]["files"]
    for key in ("markdown", "latency_distributions", "latency_means", "power_over_time", "json"):
        assert (runs["tmp"] / "report" / files[key].split("/")[-1]).is_file()
    md = (runs["tmp"] / "report" / "report.md").read_text()
    assert "## single instance" in md and "## disaggregated" in md and "rel. error" in md
