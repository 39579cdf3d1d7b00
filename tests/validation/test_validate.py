"""validate: replay of real runs against hand-checked fixtures (no ../shared needed)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.validation import report
from fluidserve.validation.replay import build_requests, predict_run
from fluidserve.validation.runs import METRICS, read_run, timeline_factor

FIX = Path(__file__).parent / "fixtures"
RUN = FIX / "tiny-llama31-8b-run"
STEP_10MS = BatchTimeModel.from_yaml(FIX / "step_10ms.yaml")
ROOT = Path(__file__).resolve().parents[2]


def test_reads_inference_perf_layout():
    run = read_run(RUN)
    assert (run.model, run.tensor_parallel, run.max_num_seqs, run.max_num_batched_tokens) == (
        "meta-llama/Llama-3.1-8B", 1, 4, 2048)
    assert run.client_timeout_s == 30
    assert [(s.rate, s.duration_s, s.arrivals) for s in run.stages] == [(0.5, 20, "constant"), (20.0, 30, "constant")]
    assert not run.stages[0].overloaded and run.stages[1].overloaded
    assert run.stages[0].measured["ttft_mean"] == pytest.approx(0.01)
    # median ITL of microseconds: two timeline entries per token (BOS per chunk)
    assert run.stages[0].client_tokens_per_token == 2.0


def test_timeline_factor():
    assert timeline_factor({"mean": 0.004, "median": 3e-5}) == 2.0
    assert timeline_factor({"mean": 0.004, "median": 0.0039}) == 1.0
    assert timeline_factor(None) == 1.0


def test_shared_prefix_cache_hits():
    run = read_run(RUN)
    r = build_requests(run)
    # constant arrivals: 10 in stage 0 (one per 2 s), 600 in stage 1
    assert (r.stage == 0).sum() == 10 and (r.stage == 1).sum() == 600
    # one shared prompt of 201 tokens: the first request computes all of it, later ones hit every
    # full 16-token block except the one holding the last token (vLLM computes >= 1 token)
    assert r.cached_tokens[0] == 0
    assert set(r.cached_tokens[1:]) == {192}


def test_replay_matches_hand_checked_10ms_server():
    run = read_run(RUN)
    m = specs.model(run.model)
    pred = predict_run(run, "H100-SXM", m, STEP_10MS)
    p0 = pred[0]
    # alone on a 10-ms server: token 1 at the end of the prefill step, 99 decode steps
    assert p0["ttft_mean"] == pytest.approx(0.010, abs=1e-9)
    assert p0["e2e_mean"] == pytest.approx(1.000, abs=1e-9)
    assert p0["e2e_p99"] == pytest.approx(1.000, abs=1e-9)
    # inference-perf TPOT over a timeline of 2 entries per token: 0.99 s / 199
    assert p0["tpot_mean"] == pytest.approx(0.99 / 199, rel=1e-9)
    assert p0["itl_mean"] == pytest.approx(0.99 / 199, rel=1e-9)
    assert p0["output_tokens_per_s"] == pytest.approx(1000 / 19.0, rel=1e-9)
    assert not p0["overloaded"] and p0["failures"] == 0
    # stage 1: 20 req/s against a capacity of 4 req/s -> timeouts at 30 s
    assert pred[1]["overloaded"] and pred[1]["failures"] > 300


def test_mape_leaves_out_overloaded_stages():
    run = read_run(RUN)
    rows = report.rows([run], [predict_run(run, "H100-SXM", specs.model(run.model), STEP_10MS)])
    errs = report.mape(rows)
    for k in METRICS:
        assert errs[k] == pytest.approx(0.0, abs=1e-6), k


def test_benchmark_json():
    run = read_run(FIX / "vllm_benchmark.json")
    assert run.kind == "vllm-benchmark" and run.stages[0].client_tokens_per_token == 1.0
    p = predict_run(run, "H100-SXM", specs.model(run.model), STEP_10MS)[0]
    # vLLM's TPOT: 49 decode steps of 10 ms per request, whatever the overlap
    assert p["tpot_mean"] == pytest.approx(0.010, rel=1e-9)
    assert 0.5 - 1e-9 <= p["e2e_mean"] <= 0.51 + 1e-9
    assert 0.01 - 1e-9 <= p["ttft_mean"] <= 0.02 + 1e-9


def _cli(*args):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "fluidserve", *args], capture_output=True, text=True, env=env, cwd=ROOT)


def test_cli_json_shape_and_outputs(tmp_path, capsys):
    from fluidserve.__main__ import main

    rc = main(["validate", str(RUN), "--gpu", "H100-SXM", "--preset", str(FIX / "step_10ms.yaml"), "--json",
               "--output-dir", str(tmp_path)])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    data = json.loads(cap.out)
    assert set(data) == {"stages", "mape"}
    row = data["stages"][0]
    assert set(row) == {"run", "stage", "predicted", "measured"}
    assert row["run"] == RUN.name and row["stage"] == 0
    assert row["predicted"]["output_len_mean"] == 100 and row["measured"]["output_len_mean"] == 101
    assert set(METRICS) <= set(row["predicted"])
    assert set(METRICS) | {"requests", "failures"} <= set(row["measured"])
    assert data["stages"][1]["predicted"]["overloaded"] and data["stages"][1]["measured"]["overloaded"]
    assert data["mape"]["e2e_mean"] == pytest.approx(0.0, abs=1e-6)
    for name in ("validation.json", "validation.txt", "validation.png", "validation.pdf"):
        assert (tmp_path / name).is_file()


def test_cli_bad_input_one_line(tmp_path):
    out = _cli("validate", str(tmp_path), "--gpu", "H100-SXM")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "exp-config.yaml" in out.stderr
    out = _cli("validate", str(RUN), "--gpu", "B300")
    assert out.returncode == 2 and "B300" in out.stderr


def test_from_runs_recovers_the_10ms_server(tmp_path, capsys):
    """Fit the per-step overhead on the fixture: the loop must land where a decode step takes 10 ms.

    (The roofline's prefill steps also pay per-token compute, and the first request prefills its
    whole prompt, so TTFT pulls the fit a little below the decode-only value: 6% on the overhead,
    3% on TPOT and E2E.)"""
    from fluidserve.__main__ import main
    from fluidserve.calibration.roofline import predict
    from fluidserve.validation.preset import read_preset, vllm_start_preset

    out = tmp_path / "preset.yaml"
    rc = main(["calibrate", "from-runs", str(RUN), "--gpu", "H100-SXM", "--fit", "step_overhead_s",
               "--out", str(out), "--json"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    fitted = read_preset(out)
    # one request at a time: a decode step of Llama-3.1-8B at ~250 tokens of context
    base = vllm_start_preset("H100-SXM").efficiency
    bt0 = predict("H100-SXM", "Llama-3.1-8B", 1, base.__class__(**{**base.__dict__, "step_overhead_s": 0.0})).batch_time
    expected = 0.010 - bt0.step_time(0, 1, 250)
    assert fitted.efficiency.step_overhead_s == pytest.approx(expected, rel=0.06)
    data = json.loads(cap.out)
    for r in data["residuals"]:
        if r["metric"] != "ttft_mean":
            assert abs(r["percent_error"]) < 3.0, r
    assert data["parameters"]["step_overhead_s"]["std_error"] >= 0
    assert {r["metric"] for r in data["residuals"]} == {"tpot_mean", "ttft_mean", "e2e_mean"}
