"""The LP: hand-checked optimum, constraints hold, objectives, infeasibility reports, duals."""

from __future__ import annotations

import numpy as np
import pytest

from fluidserve.errors import InputError
from fluidserve.policy.lp import solve
from fluidserve.policy.lp_config import load_lp_config, lp_config_from_dict
from fluidserve.policy.problem import build_problem, pool_models
from fluidserve.policy.validate import lp_predictions

from .conftest import A100, CHAT, EXAMPLE, H100


def _one_clock(pool, clock):
    p = dict(pool)
    p["clocks_mhz"] = [clock]
    return p


def test_hand_checked_single_pool_single_clock(small):
    cfg = lp_config_from_dict(small(pools=[_one_clock(H100, 1980)]))
    pb = build_problem(cfg)
    sol = solve(pb, "energy", integer=True)
    assert sol.feasible
    assert sol.y.sum() == pytest.approx(1.0) and sol.idle.sum() == pytest.approx(1.0)
    pool = pool_models(cfg)[0]
    bt, en = pool.batch_time, pool.freq.energy_model(pool.batch_time, 1980)
    rho = 10.0 * bt.work_per_request(100, 50)
    busy = (1 - rho) * en.d0_s / bt.d0_s + 10.0 * en.work_per_request(100, 50)
    idle = 72.3  # the H100 preset's measured idle power (the second GPU idles)
    assert sol.power_w == pytest.approx(busy + idle, rel=1e-9)
    assert lp_predictions(sol, cfg)["power_w"] == pytest.approx(sol.power_w, rel=1e-9)
    assert sol.energy_per_token_j == pytest.approx((busy + idle) / (10.0 * 50), rel=1e-9)
    # the relaxation uses the least fractional replica count that the binding row allows
    relax = solve(pb, "energy", integer=False)
    s = int(np.flatnonzero(relax.y > 1e-9)[0])
    need = max(10.0 * pb.a_work[0] / pb.s_rho_cap[s], pb.s_tau_cap[s] * 10.0 * pb.a_decode[0] / pb.s_seq_cap[s],
               pb.s_tau_cap[s] * 10.0 * pb.a_tokens[0] / pb.s_tok_cap[s], pb.s_tau_cap[s] * 10.0 * pb.a_kv[0] / pb.s_kv_cap[s],
               10.0 * pb.a_x2[0] / pb.s_tbt_cap[s])
    assert relax.y[s] == pytest.approx(need, rel=1e-7)
    assert relax.power_w < sol.power_w


def test_example_solution_respects_every_constraint():
    cfg = load_lp_config(EXAMPLE)
    pb = build_problem(cfg)
    sol = solve(pb, "energy", integer=True)
    assert sol.feasible and sol.integer
    assert np.allclose(sol.y, np.round(sol.y)) and np.allclose(sol.idle, np.round(sol.idle))
    for j in range(len(pb.pool_names)):
        assert sol.y[pb.s_pool == j].sum() + sol.idle[j] == pytest.approx(pb.pool_count[j])
    served = np.bincount(pb.a_class, weights=sol.x, minlength=len(pb.class_names))
    assert served == pytest.approx(pb.rate, rel=1e-7)
    load = np.bincount(pb.a_sub, weights=pb.a_work * sol.x, minlength=pb.num_subpools)
    assert np.all(load <= pb.s_rho_cap * sol.y + 1e-7)
    kv = np.bincount(pb.a_sub, weights=pb.a_kv * sol.x, minlength=pb.num_subpools) * pb.s_tau_cap
    assert np.all(kv <= pb.s_kv_cap * sol.y + 1e-4)
    # fluid TPOT of every used sub-pool within the planned share of the SLO
    pred = lp_predictions(sol, cfg)
    for name, tpot in pred["mean_tpot_s"].items():
        c = next(c for c in cfg.classes if c.name == name)
        assert tpot <= cfg.safety.slo_headroom * cfg.safety.tpot_mean_share * c.tpot_s + 1e-9
    for name, ttft in pred["mean_ttft_s"].items():  # TTFT with waiting behind prompts within its budget
        c = next(c for c in cfg.classes if c.name == name)
        assert ttft <= cfg.safety.slo_headroom * c.ttft_s + 1e-9


def test_cost_objective_prefers_cheaper_gpus(small):
    cfg = lp_config_from_dict(small(pools=[H100, A100], classes=[dict(CHAT, rate=4.0)]))
    sol = solve(build_problem(cfg), "cost", integer=True)
    pb = sol.problem
    assert sol.feasible
    used = {pb.pool_names[pb.s_pool[s]] for s in np.flatnonzero(sol.y > 0.5)}
    assert used == {"a100"} and sol.cost_per_hour == pytest.approx(1.8)


def test_throughput_objective_hits_the_capacity(small):
    cfg = lp_config_from_dict(small(pools=[_one_clock(H100, 1980)], safety={"tpot_z": 0.0}))
    pb = build_problem(cfg)
    sol = solve(pb, "throughput", integer=False)
    s = 0
    caps = [pb.s_rho_cap[s] / pb.a_work[0], pb.s_seq_cap[s] / (pb.s_tau_cap[s] * pb.a_decode[0]),
            pb.s_tok_cap[s] / (pb.s_tau_cap[s] * pb.a_tokens[0]), pb.s_kv_cap[s] / (pb.s_tau_cap[s] * pb.a_kv[0])]
    assert sol.alpha * 10.0 == pytest.approx(2 * min(caps), rel=1e-7)


def test_slo_tighter_than_any_clock_is_reported(small):
    cfg = lp_config_from_dict(small(classes=[dict(CHAT, tpot_s=0.005)]))
    sol = solve(build_problem(cfg), "energy", integer=True)
    assert sol.status == "infeasible"
    assert "SLO tighter than any pool/clock" in sol.violations[0] and "'chat'" in sol.violations[0]
    assert any("TPOT SLO 0.005 s" in v for v in sol.violations)


def test_traffic_above_capacity_names_binding_constraints(small):
    cfg = lp_config_from_dict(small(classes=[dict(CHAT, rate=500.0)]))
    sol = solve(build_problem(cfg), "energy", integer=True)
    assert sol.status == "infeasible"
    assert "traffic above capacity" in sol.violations[0]
    assert any("only" in v and "of 500 req/s" in v for v in sol.violations)
    assert any(v.startswith("binding: pool 'h100' GPU count 2") for v in sol.violations)
    assert 0 < sol.unserved[0] < 500


def test_bad_config_names_the_field(small):
    data = small()
    data["pools"][0]["clocks_mhz"] = [2500]
    with pytest.raises(InputError, match=r"pools\.0\(h100\).*above f_max"):
        lp_config_from_dict(data, "x.yaml")
    data = small()
    data["classes"][0]["rate"] = -1
    with pytest.raises(InputError, match=r"classes\.0\(chat\)\.rate"):
        lp_config_from_dict(data, "x.yaml")
