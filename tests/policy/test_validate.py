"""Simulator replay of the LP policy: energy accounting, SLOs, LP-vs-sim agreement, acceptance."""

from __future__ import annotations

import numpy as np
import pytest

from fluidserve.policy.lp import solve
from fluidserve.policy.lp_config import load_lp_config, lp_config_from_dict
from fluidserve.policy.problem import build_problem, pool_models
from fluidserve.policy.validate import (
    Replica,
    class_workload,
    lp_layout,
    measure,
    replica_energy,
    simulate_policy,
    validate,
)

from .conftest import EXAMPLE, H100


def test_class_workload_rates_and_labels():
    cfg = load_lp_config(EXAMPLE)
    wl = class_workload(cfg, 20000, 1)
    rates = np.array([c.rate for c in cfg.classes])
    share = np.bincount(wl.priority, minlength=3) / len(wl)
    assert share == pytest.approx(rates / rates.sum(), abs=0.01)
    assert wl.mean_rate == pytest.approx(rates.sum(), rel=0.03)
    for k, c in enumerate(cfg.classes):
        m = wl.priority == k
        assert wl.prefill_tokens[m].min() >= c.prefill_tokens[0] and wl.prefill_tokens[m].max() <= c.prefill_tokens[1]


def test_energy_of_an_idle_replica_and_of_a_single_request(small):
    cfg = lp_config_from_dict(small(pools=[dict(H100, count=1)]))
    pool = pool_models(cfg)[0]
    from fluidserve.workload.base import Workload

    wl = Workload(np.array([0.0]), np.array([100]), np.array([3]), np.array([0]))
    layout = [Replica(0, 1200.0)]
    engines, res = simulate_policy(cfg, layout, wl, "round_robin")
    bt = pool.freq.batch_time(pool.batch_time, 1200)
    en = pool.freq.energy_model(pool.batch_time, 1200)
    # steps: prefill of 100 tokens, then decode iterations with context 100, 101, 102
    steps_e = en.step_time(100, 0, 0) + sum(en.step_time(0, 1, 100 + j) for j in range(3))
    steps_t = bt.step_time(100, 0, 0) + sum(bt.step_time(0, 1, 100 + j) for j in range(3))
    e, tok, busy = replica_energy(engines[0], pool, 1200, 0.0, 10.0)
    assert tok == 3 and busy == pytest.approx(steps_t)
    assert e == pytest.approx(steps_e + pool.freq.idle_w * (10.0 - steps_t))


def test_measured_step_energy_prices_the_steps_at_the_default_clock(small):
    pool_spec = dict(H100, count=1, energy={"p_base_w": 400.0, "e_prefill_j": 0.01, "e_decode_j": 0.02,
                                            "e_kv_j": 1e-5, "idle_w": 70.0})
    cfg = lp_config_from_dict(small(pools=[pool_spec]))
    pool = pool_models(cfg)[0]
    from fluidserve.workload.base import Workload

    wl = Workload(np.array([0.0]), np.array([100]), np.array([3]), np.array([0]))
    engines, _ = simulate_policy(cfg, [Replica(0, 1980.0)], wl, "round_robin")
    # by hand: prefill step 6.8 ms + 100 x 35 us = 10.3 ms -> 400 W x 10.3 ms + 100 x 10 mJ = 5.12 J;
    # decode steps at context 100, 101, 102: 6.8 ms + 30 us + 0.038 us x ctx -> 400 W x that + 20 mJ + 10 uJ x ctx
    dec_t = [0.0068 + 3.0e-5 + 3.8e-8 * (100 + j) for j in range(3)]
    e_steps = 5.12 + sum(400.0 * t + 0.02 + 1e-5 * (100 + j) for j, t in enumerate(dec_t))
    busy = 0.0103 + sum(dec_t)
    e, tok, b = replica_energy(engines[0], pool, 1980.0, 0.0, 10.0)
    assert b == pytest.approx(busy, rel=1e-9) and tok == 3
    assert e == pytest.approx(e_steps + 70.0 * (10.0 - busy), rel=1e-9)
    # a lower clock: the replay's steps are slower (their energy scaling is tested in test_frequency)
    engines, _ = simulate_policy(cfg, [Replica(0, 1200.0)], wl, "round_robin")
    assert replica_energy(engines[0], pool, 1200.0, 0.0, 10.0)[2] > busy * 1.01


@pytest.mark.slow
def test_example_acceptance_on_a_short_run():
    """Calibrated example (short run): SLOs met, saving vs max-clock RR, LP energy and TTFT vs the simulator."""
    cfg = load_lp_config(EXAMPLE)
    cfg.validation.baselines = ["round_robin"]
    cfg.validation.band_samples = 8
    sol = solve(build_problem(cfg), cfg.objective, cfg.integer)
    out = validate(cfg, sol, num_requests=20000)
    assert out["slos_met"] and out["slo_attainment"] >= 0.95
    assert out["energy_saving"] >= 0.3  # mostly packing onto fewer GPUs (measured: 0.51)
    assert abs(out["lp_vs_sim_energy_error"]) <= 0.05
    assert abs(out["lp_vs_sim_latency_error"]["chat"]["tpot"]) <= 0.15
    for c in cfg.classes:  # TTFT with waiting behind prompts (measured: +1%, +7%, +12% at seed 7)
        assert abs(out["lp_vs_sim_latency_error"][c.name]["ttft"]) <= 0.15
    lo, hi = out["band"]["energy_saving"]
    assert lo <= out["energy_saving"] <= hi and hi - lo < 0.2
    lp_sim = out["lp"]
    # the layout holds every GPU of the example, the LP's idle ones at idle power only
    assert sum(len(v) for v in lp_sim["clocks"].values()) == sum(p.count for p in cfg.pools)
    assert out["baselines"]["round_robin"]["energy_per_token_j"] == out["baseline_energy_per_token_j"]


def test_lp_layout_rounds_to_whole_gpus(small):
    cfg = lp_config_from_dict(small(pools=[dict(H100, count=3)]))
    sol = solve(build_problem(cfg), "energy", integer=False)
    layout = lp_layout(sol)
    assert len(layout) == 3
    # 10 req/s of 100+50 tokens need 0.11 of one GPU at 1980 MHz (the relaxation): rounded up to
    # one busy GPU at that clock, the other two idle
    assert sol.y[sol.problem.s_clock == 1980.0][0] == pytest.approx(0.11, abs=0.01)
    assert [(r.clock_mhz, r.idle) for r in layout] == [(1980.0, False), (1980.0, True), (1980.0, True)]
    engines, res = simulate_policy(cfg, layout, class_workload(cfg, 500, 2), "lp", sol=sol)
    out = measure("lp", cfg, layout, engines, res, class_workload(cfg, 500, 2), pool_models(cfg))
    assert out.completed == 500 and out.rejected == 0
    busy = {r for r in range(3) if not layout[r].idle}
    assert set(res.requests["replica"].unique()) <= busy
