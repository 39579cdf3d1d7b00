"""SLO statistics and verdicts on hand-checked samples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fluidserve.plan import slo
from fluidserve.plan.config import plan_config_from_dict

from .conftest import CHAT, plan_dict


def test_sample_stats_hand_checked():
    ttft = np.arange(1, 101) / 100.0  # 0.01 .. 1.00 s
    tpot = np.full(100, 0.02)
    tpot[:10] = np.nan  # requests with one output token: no TPOT
    e2e = ttft + 1.0
    st = slo.sample_stats(ttft, tpot, e2e, [50.0, 99.0], [("ttft", 99.0, 0.9), ("e2e", 50.0, 1.5)])
    assert st["ttft_p50_s"] == pytest.approx(0.505)  # numpy linear interpolation of 0.50, 0.51
    assert st["ttft_p99_s"] == pytest.approx(0.9901)
    assert st["tpot_p99_s"] == pytest.approx(0.02)
    # every threshold as a deadline at once: ttft <= 0.9 and e2e <= 1.5 -> the first 50 requests
    assert st["attainment"] == pytest.approx(0.50)


def test_never_served_requests_count_as_misses():
    st = slo.sample_stats([0.1, 0.1, math.inf, math.inf], [0.01] * 4, [1, 1, math.inf, math.inf], [50.0],
                          [("ttft", 50.0, 1.0)])
    assert st["attainment"] == 0.5
    assert st["ttft_p50_s"] == math.inf  # half the requests never served


def test_verdict_binding_is_largest_ratio():
    cls = dict(CHAT, slo={"ttft_p99_s": 1.0, "tpot_p90_s": 0.05, "attainment": 0.9})
    plan = plan_config_from_dict(plan_dict(classes=[cls]))
    st = {"ttft_p99_s": 0.8, "tpot_p90_s": 0.06, "attainment": 0.95}
    v = slo.verdict(plan, {"chat": st})
    assert not v["meets_slo"]
    assert v["binding"]["constraint"] == "tpot_p90_s" and v["binding"]["ratio"] == pytest.approx(1.2)
    st["tpot_p90_s"] = 0.04
    v = slo.verdict(plan, {"chat": st})
    assert v["meets_slo"] and v["binding"]["constraint"] == "attainment"
    assert v["binding"]["ratio"] == pytest.approx(0.9 / 0.95)
