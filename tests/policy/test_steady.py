"""Fluid steady state: exact class expectations and agreement with the discrete simulator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.batch_time import BatchTimeModel
from fluidserve.policy.steady import LengthLaw, kv_token_steps, steady_state
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.simulator import collect

BT = BatchTimeModel(0.0068, 3.5e-5, 3.0e-5, 3.8e-8)


@settings(max_examples=40, deadline=None)
@given(p_lo=st.integers(1, 300), p_w=st.integers(0, 300), d_lo=st.integers(1, 200), d_w=st.integers(0, 200))
def test_expectations_are_exact(p_lo, p_w, d_lo, d_w):
    law = LengthLaw((p_lo, p_lo + p_w), (d_lo, d_lo + d_w))
    p = np.arange(p_lo, p_lo + p_w + 1, dtype=float)[:, None]
    d = np.arange(d_lo, d_lo + d_w + 1, dtype=float)[None, :]
    assert law.expect(BT.work_per_request) == pytest.approx(BT.work_per_request(p, d).mean(), rel=1e-9)
    assert law.expect(lambda a, b: kv_token_steps(a, b, 16)) == pytest.approx(kv_token_steps(p, d, 16).mean(), rel=1e-9)


def test_closed_form_values():
    law = LengthLaw((100, 100), (50, 50))
    ss = steady_state(BT, [5.0], [law])
    rho = 5.0 * BT.work_per_request(100, 50)
    assert ss.rho == pytest.approx(rho)
    assert ss.tau_s == pytest.approx(BT.d0_s / (1 - rho))
    assert ss.running == pytest.approx(5.0 * 50 * ss.tau_s)
    assert ss.kv_tokens == pytest.approx(5.0 * ss.tau_s * (50 * 100 + 50 * 51 / 2))
    assert steady_state(BT, [1000.0], [law]).tau_s == float("inf")


def test_mean_step_time_and_running_mass_match_the_simulator():
    law = LengthLaw((100, 600), (50, 300))
    rate = 20.0
    rng = np.random.default_rng(3)
    n = 6000
    arr = np.cumsum(rng.exponential(1 / rate, n))
    p, d = law.sample(n, rng)
    e = ReplicaEngine(BT, M_total=400000, B=4096, max_num_seqs=512, record_events=False)
    for i in range(n):
        e.submit(i, arr[i], int(p[i]), int(d[i]))
    e.run()
    snaps = collect([e]).snapshots
    win = snaps[(snaps.time > 0.2 * arr[-1]) & (snaps.time < arr[-1])]
    ss = steady_state(BT, [rate], [law], 16)
    assert win.batch_duration.mean() == pytest.approx(ss.tau_s, rel=0.03)
    tw = (win.batch_duration * win.decode_tokens).sum() / win.batch_duration.sum()
    assert tw == pytest.approx(ss.running, rel=0.05)


def test_agrees_with_fluid_closed_forms():
    cf = pytest.importorskip("fluidserve.fluid.closed_forms")
    law = LengthLaw((100, 600), (50, 300))
    ss = steady_state(BT, [20.0], [law])
    kv_read = law.expect(lambda p, d: d * p + d * (d - 1) / 2.0)
    ref = cf.steady_state(BT, 20.0, law.mean_prefill_tokens, law.mean_decode_tokens, kv_read)
    assert ss.rho == pytest.approx(ref["rho"], rel=1e-9)
    assert ss.tau_s == pytest.approx(ref["tau_s"], rel=1e-9)
    assert ss.running == pytest.approx(ref["running"], rel=1e-9)


@pytest.mark.parametrize("rate,law,old_max", [
    (14.0, LengthLaw((100, 1000), (50, 400)), 0.9),   # moderate load
    (30.0, LengthLaw((300, 1500), (10, 60)), 0.8),    # prefill-heavy: most of the time in prompts
])
def test_mean_ttft_with_waiting_behind_prompts_matches_the_simulator(rate, law, old_max):
    from fluidserve.policy.steady import mean_ttft_s

    bt = BatchTimeModel(0.0053, 2.5e-5, 1.2e-5, 5e-8)
    rng = np.random.default_rng(5)
    n = 8000
    arr = np.cumsum(rng.exponential(1 / rate, n))
    p, d = law.sample(n, rng)
    e = ReplicaEngine(bt, M_total=700000, B=4096, max_num_seqs=256, record_events=False, scheduler="vllm_v0")
    for i in range(n):
        e.submit(i, arr[i], int(p[i]), int(d[i]))
    e.run()
    req = collect([e]).requests
    sim = req[req.arrival_time > 0.15 * arr[-1]].ttft.mean()
    ss = steady_state(bt, [rate], [law], 16)
    pred = mean_ttft_s(bt, np.array([rate]), [law], ss)[0]
    assert pred == pytest.approx(sim, rel=0.08)
    # the old model (2.5 mean steps + own prefill) misses the waiting behind other prompts
    old = 2.5 * ss.tau_s + bt.d1_prefill_s * law.mean_prefill_tokens
    assert old < old_max * sim
