"""End-to-end calibration: the calibration workload's regimes.

How well the loop (load client -> endpoint -> token times -> profile -> fit) recovers the truth
depends on wall-clock scheduling, so it is measured by ``bench/e2e_calibration.py``; the
deterministic parts are tested on the engine's exact token times (tests/serve/test_streamprofile.py)
and the fit on synthetic profiles (tests/calibration/test_fit.py).
"""

from __future__ import annotations

import pytest

from fluidserve.serve.e2e import calibration_workload


def test_calibration_workload_regimes():
    w = calibration_workload(400, seed=3)
    assert len(w) == 400
    short = w.prefill_tokens <= 96
    assert short.any() and (~short).any()
    assert w.prefill_tokens[~short].min() >= 640
    with pytest.raises(ValueError):
        calibration_workload(5)
