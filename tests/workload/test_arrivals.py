"""Arrival processes: rates, coefficients of variation and the MMPP's stationary mix."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.errors import InputError
from fluidserve.workload.arrivals import gamma_arrivals, mmpp_arrivals, mmpp_mean_rate, poisson_arrivals


def gaps_cv(times: np.ndarray) -> float:
    g = np.diff(times)
    return float(g.std(ddof=1) / g.mean())


def test_poisson_rate_and_cv():
    t = poisson_arrivals(20_000, 3.0, np.random.default_rng(11))
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0) and len(t) == 20_000
    rate = (len(t) - 1) / t[-1]
    assert rate == pytest.approx(3.0, rel=0.03)
    assert gaps_cv(t) == pytest.approx(1.0, abs=0.03)
    # counts in unit windows are Poisson: index of dispersion ~ 1
    counts = np.bincount(t.astype(int))[:-1]
    assert counts.var() / counts.mean() == pytest.approx(1.0, abs=0.08)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(cv=st.floats(1.2, 3.0), rate=st.floats(0.5, 500.0), seed=st.integers(0, 2**32 - 1))
def test_gamma_cv_and_mean_gap(cv, rate, seed):
    t = gamma_arrivals(100_000, rate, cv, np.random.default_rng(seed))
    assert gaps_cv(t) == pytest.approx(cv, rel=0.05)
    assert np.diff(t).mean() == pytest.approx(1.0 / rate, rel=0.04)


def test_gamma_is_burstier_than_poisson():
    rng = np.random.default_rng(5)
    t = gamma_arrivals(50_000, 10.0, 3.0, rng)
    counts = np.bincount(t.astype(int))[:-1]
    assert counts.var() / counts.mean() > 5.0  # ~ cv**2 = 9 for a renewal process


def test_mmpp_long_run_rate_is_the_stationary_mix():
    rl, rh, ml, mh = 1.0, 10.0, 20.0, 5.0
    assert mmpp_mean_rate(rl, rh, ml, mh) == pytest.approx(2.8, rel=1e-12)
    t = mmpp_arrivals(500_000, rl, rh, ml, mh, np.random.default_rng(3))
    assert np.all(np.diff(t) >= 0) and t[0] == 0.0
    assert (len(t) - 1) / t[-1] == pytest.approx(2.8, rel=0.05)
    # rates modulate: 1-s counts far more dispersed than Poisson, and both levels visible
    counts = np.bincount(t.astype(int))[:-1]
    assert counts.var() / counts.mean() > 5.0
    assert np.mean(counts <= 2) > 0.5  # low state (rate 1) holds 80% of the time
    assert np.mean(counts >= 8) > 0.1  # high state (rate 10) holds 20% of the time


def test_mmpp_on_off_and_start_state():
    # rate_low = 0: no arrivals in off periods, so every arrival lies in a high sojourn
    t = mmpp_arrivals(20_000, 0.0, 50.0, 2.0, 1.0, np.random.default_rng(8), start_state="high")
    assert (len(t) - 1) / t[-1] == pytest.approx(50.0 / 3.0, rel=0.15)
    # gaps > 0.5 s are (almost) only off periods (mean 2 s): P(off > 0.5) per ~50 arrivals
    assert np.mean(np.diff(t) > 0.5) == pytest.approx(np.exp(-0.25) / 50, rel=0.2)
    # starting low with a very long low sojourn: the first arrivals come at rate_low
    t = mmpp_arrivals(5, 1.0, 1000.0, 1e6, 1e-6, np.random.default_rng(0), start_state="low")
    assert t[-1] > 0.5


def test_deterministic_for_a_seed():
    for f in (
        lambda r: poisson_arrivals(1000, 2.0, r),
        lambda r: gamma_arrivals(1000, 2.0, 2.5, r),
        lambda r: mmpp_arrivals(1000, 1.0, 5.0, 3.0, 1.0, r),
    ):
        assert np.array_equal(f(np.random.default_rng(42)), f(np.random.default_rng(42)))
        assert not np.array_equal(f(np.random.default_rng(42)), f(np.random.default_rng(43)))


def test_single_request_arrives_at_zero():
    assert poisson_arrivals(1, 2.0, np.random.default_rng(0)).tolist() == [0.0]
    assert mmpp_arrivals(1, 1.0, 2.0, 1.0, 1.0, np.random.default_rng(0)).tolist() == [0.0]


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda r: poisson_arrivals(10, -1.0, r), "arrival rate"),
        (lambda r: poisson_arrivals(0, 1.0, r), "number of requests"),
        (lambda r: gamma_arrivals(10, 1.0, 0.0, r), "gamma_cv"),
        (lambda r: mmpp_arrivals(10, -1.0, 2.0, 1.0, 1.0, r), "mmpp.rate_low"),
        (lambda r: mmpp_arrivals(10, 1.0, 2.0, 1.0, float("nan"), r), "mmpp.mean_high_s"),
        (lambda r: mmpp_arrivals(10, 1.0, 2.0, 1.0, 1.0, r, start_state="on"), "start_state"),
    ],
)
def test_bad_parameters(call, field):
    with pytest.raises(InputError, match=field):
        call(np.random.default_rng(0))
