"""Synthetic scenarios: length ranges, class mixes, default rates, bursts, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from fluidserve.config import config_from_dict
from fluidserve.errors import InputError
from fluidserve.workload import make_workload, synthetic_workload, write_requests_csv
from fluidserve.workload.arrivals import mmpp_mean_rate
from fluidserve.workload.synthetic import SCENARIOS, burst_mmpp


def dispersion(t: np.ndarray, window_s: float) -> float:
    counts = np.bincount((t // window_s).astype(int))[:-1]
    return float(counts.var() / counts.mean())


def test_normal_ranges_and_80_20_mix():
    w = synthetic_workload("normal", 20_000, seed=1)
    short = w.priority == 0
    assert short.mean() == pytest.approx(0.8, abs=0.012)
    P, D = w.prefill_tokens, w.decode_tokens
    # exact inclusive ranges per class, both ends hit
    assert (P[short].min(), P[short].max(), D[short].min(), D[short].max()) == (10, 60, 10, 40)
    assert (P[~short].min(), P[~short].max(), D[~short].min(), D[~short].max()) == (150, 200, 80, 100)
    assert P.mean() == pytest.approx(0.8 * 35 + 0.2 * 175, rel=0.02)  # 63
    assert D.mean() == pytest.approx(0.8 * 25 + 0.2 * 90, rel=0.02)  # 38
    assert w.mean_rate == pytest.approx(1.0, rel=0.03)
    assert w.name == "normal-poisson"


def test_heavy_defaults():
    w = synthetic_workload("heavy", 20_000, seed=2)
    short = w.priority == 0
    assert short.mean() == pytest.approx(0.6, abs=0.012)
    P, D = w.prefill_tokens, w.decode_tokens
    assert (P[~short].min(), P[~short].max(), D[~short].min(), D[~short].max()) == (300, 500, 150, 250)
    assert (P[short].min(), P[short].max(), D[short].min(), D[short].max()) == (10, 60, 10, 40)
    assert P.mean() == pytest.approx(SCENARIOS["heavy"].mean_prefill_tokens, rel=0.02)  # 181
    assert SCENARIOS["heavy"].mean_prefill_tokens == 181.0
    assert SCENARIOS["heavy"].mean_decode_tokens == 95.0
    assert w.mean_rate == pytest.approx(2.0, rel=0.03)


def test_burst_pattern_has_the_mean_rate():
    for rate in (1.0, 200.0):
        m = burst_mmpp(rate)
        assert mmpp_mean_rate(m.rate_low, m.rate_high, m.mean_low_s, m.mean_high_s) == pytest.approx(rate, rel=1e-12)
        assert m.rate_high * m.mean_high_s == pytest.approx(200.0)  # requests per burst
        assert m.rate_low * m.mean_low_s == pytest.approx(100.0)  # requests per quiet period


def test_bursty_is_mmpp_with_normal_lengths():
    b = synthetic_workload("bursty", 300_000, seed=3)
    n = synthetic_workload("normal", 300_000, seed=3)
    assert b.name == "bursty-mmpp"
    assert b.mean_rate == pytest.approx(1.0, rel=0.08)
    # same length streams as normal (same seed), different arrivals
    assert np.array_equal(b.prefill_tokens, n.prefill_tokens)
    assert np.array_equal(b.decode_tokens, n.decode_tokens)
    # dense periods: counts over 20 s windows are far more dispersed than Poisson's
    assert dispersion(n.arrival_time_s, 20.0) == pytest.approx(1.0, abs=0.1)
    assert dispersion(b.arrival_time_s, 20.0) > 10.0


def test_bursty_honours_gamma():
    w = synthetic_workload("bursty", 50_000, seed=4, arrival_process="gamma", gamma_cv=2.0)
    assert w.name == "bursty-gamma"
    g = np.diff(w.arrival_time_s)
    assert g.std() / g.mean() == pytest.approx(2.0, rel=0.05)


def test_arrival_rate_override_and_common_lengths():
    a = synthetic_workload("normal", 20_000, seed=5)
    b = synthetic_workload("normal", 20_000, seed=5, arrival_rate=150.0, arrival_process="gamma", gamma_cv=1.5)
    assert b.mean_rate == pytest.approx(150.0, rel=0.03)
    assert np.array_equal(a.prefill_tokens, b.prefill_tokens)
    assert np.array_equal(a.priority, b.priority)


def test_explicit_mmpp_section_defines_the_rate():
    from fluidserve.config import MMPPConfig

    m = MMPPConfig(rate_low=2.0, rate_high=20.0, mean_low_s=10.0, mean_high_s=10.0)
    w = synthetic_workload("normal", 200_000, seed=6, arrival_rate=999.0, arrival_process="mmpp", mmpp=m)
    assert w.mean_rate == pytest.approx(11.0, rel=0.05)


def test_deterministic_for_a_seed(tmp_path):
    a = synthetic_workload("bursty", 5000, seed=9)
    b = synthetic_workload("bursty", 5000, seed=9)
    c = synthetic_workload("bursty", 5000, seed=10)
    for x, y in ((a.arrival_time_s, b.arrival_time_s), (a.prefill_tokens, b.prefill_tokens)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.arrival_time_s, c.arrival_time_s)
    write_requests_csv(a, tmp_path / "a.csv")
    write_requests_csv(b, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_unknown_scenario():
    with pytest.raises(InputError, match="unknown scenario 'huge'"):
        synthetic_workload("huge", 10)


BASE = {"system": {"M_total": 4096}, "batch_time": {"d0_s": 0.01, "d1_s": 1e-4}}


def test_make_workload_from_config_synthetic():
    cfg = config_from_dict({**BASE, "seed": 7, "workload": {"scenario": "heavy", "num_requests": 3000}})
    w = make_workload(cfg)
    assert len(w) == 3000
    expected = synthetic_workload("heavy", 3000, seed=7)
    assert np.array_equal(w.arrival_time_s, expected.arrival_time_s)
    assert np.array_equal(w.decode_tokens, expected.decode_tokens)


def test_make_workload_from_config_trace_relative_to_yaml(tmp_path):
    (tmp_path / "t.csv").write_text("arrival_time,prefill_length,decode_length\n5,10,3\n7,20,4\n9,30,5\n")
    cfg = config_from_dict(
        {**BASE, "workload": {"source": "trace", "trace": {"path": "t.csv", "rate_scale": 2.0, "max_requests": 2}}},
        base_dir=str(tmp_path),
    )
    w = make_workload(cfg)
    assert w.arrival_time_s.tolist() == [0.0, 1.0]
    assert w.prefill_tokens.tolist() == [10, 20]
