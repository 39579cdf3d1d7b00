"""End-to-end calibration: the load client drives the endpoint, the fit recovers the truth."""

from __future__ import annotations

import json

import pytest

from fluidserve.batch_time import BatchTimeModel
from fluidserve.serve.e2e import calibration_workload, run_e2e

TRUTH = BatchTimeModel(d0_s=0.008, d1_prefill_s=4.0e-5, d1_decode_s=3.0e-4, d2_kv_s=5.0e-7)


def test_e2e_loop_recovers_the_coefficients(tmp_path):
    result = run_e2e(TRUTH, calibration_workload(100, seed=1), time_scale=0.25, workdir=tmp_path)
    summary = result.summary()
    print(json.dumps(summary, indent=1))  # shown when the test fails
    assert summary["errors"] == 0 and summary["requests"] == 100
    assert summary["profile_rows"] >= 100  # most steps are identified
    assert summary["profile_phases"].get("mixed", 0) >= 12  # prefill is seen inside mixed steps
    for name, err in summary["rel_error"].items():
        assert abs(err) < 0.10, f"{name}: fitted {summary['fitted'][name]:.4g} vs true {summary['truth'][name]:.4g}"
    json.dumps(summary)  # JSON-ready


def test_calibration_workload_regimes():
    w = calibration_workload(400, seed=3)
    assert len(w) == 400
    short = w.prefill_tokens <= 96
    assert short.any() and (~short).any()
    assert w.prefill_tokens[~short].min() >= 640
    with pytest.raises(ValueError):
        calibration_workload(5)
