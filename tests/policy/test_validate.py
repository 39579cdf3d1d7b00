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


@pytest.mark.slow
def test_example_acceptance_on_a_short_run():
    """Issue 5 acceptance (short run): SLOs met, >= 15% saving vs max-clock RR, LP energy within 5%."""
    cfg = load_lp_config(EXAMPLE)
    cfg.validation.baselines = ["round_robin"]
    sol = solve(build_problem(cfg), cfg.objective, cfg.integer)
    out = validate(cfg, sol, num_requests=6000)
    assert out["slos_met"] and out["slo_attainment"] >= 0.95
    assert out["energy_saving"] >= 0.15
    assert abs(out["lp_vs_sim_energy_error"]) <= 0.05
    assert abs(out["lp_vs_sim_latency_error"]["chat"]["tpot"]) <= 0.15
    lp_sim = out["lp"]
    # the layout holds every GPU of the example, the LP's idle ones at idle power only
    assert sum(len(v) for v in lp_sim["clocks"].values()) == sum(p.count for p in cfg.pools)
    assert out["baselines"]["round_robin"]["energy_per_token_j"] == out["baseline_energy_per_token_j"]


def test_lp_layout_rounds_to_whole_gpus(small):
    cfg = lp_config_from_dict(small(pools=[dict(H100, count=3)]))
    sol = solve(build_problem(cfg), "energy", integer=False)
    layout = lp_layout(sol)
    assert len(layout) == 3
    assert sum(r.idle for r in layout) + sum(not r.idle for r in layout) == 3
    engines, res = simulate_policy(cfg, layout, class_workload(cfg, 500, 2), "lp", sol=sol)
    out = measure("lp", cfg, layout, engines, res, class_workload(cfg, 500, 2), pool_models(cfg))
    assert out.completed == 500 and out.rejected == 0
    busy = {r for r in range(3) if not layout[r].idle}
    assert set(res.requests["replica"].unique()) <= busy
