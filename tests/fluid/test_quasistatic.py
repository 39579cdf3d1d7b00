"""The quasi-static fluid model (closed forms per rate bin + an exact fluid queue)."""

import numpy as np
import pytest

from fluidserve.errors import UnsupportedError
from fluidserve.fluid import closed_forms as cf
from fluidserve.fluid import crosscheck, solve
from fluidserve.fluid.quasistatic import bin_mix, fluid_queue, solve_quasistatic
from fluidserve.workload import make_workload

from .conftest import cfg_with


def test_fluid_queue_is_exact_piecewise_linear():
    # 3 bins of 2 s: 10 req/s over capacity 6, then 2 (drains at 4/s), then 0; capacity 6 throughout
    seg = fluid_queue(np.array([10.0, 2.0, 0.0]), np.array([6.0, 6.0, 6.0]), 2.0)
    # backlog 8 at t = 2, empty after 8/4 = 2 s, i.e. exactly at t = 4, nothing in bin 3
    q_end = seg["q0"] + seg["slope"] * (seg["t1"] - seg["t0"])
    assert q_end[0] == pytest.approx(8.0)
    assert seg["t1"][1] == pytest.approx(4.0) and q_end[1] == pytest.approx(0.0)
    served = (seg["x"] * (seg["t1"] - seg["t0"])).sum()
    assert served == pytest.approx(10 * 2 + 2 * 2)  # everything that arrived is admitted
    # still over capacity at the end: a drain segment at the last capacity
    seg = fluid_queue(np.array([10.0]), np.array([4.0]), 1.0)
    assert seg["t1"][-1] == pytest.approx(1.0 + 6.0 / 4.0)


def test_steady_state_in_a_long_bin_equals_the_closed_forms():
    cfg = cfg_with(**{"workload.arrival_rate": 150.0, "workload.num_requests": 6000, "fluid.bin_s": 40.0})
    wl = make_workload(cfg)
    res = solve_quasistatic(cfg, wl, pooled_mix=True, dt_out_s=0.5)
    mix = bin_mix(wl, cfg, 40.0, pooled=True)
    lam = mix["count"][0] / 40.0
    ss = cf.steady_state(cfg.batch_time_model(), lam, mix["P"][0], mix["D"][0], mix["K"][0], mix["Kb"][0])
    mid = res.series.iloc[np.searchsorted(res.t_s, 20.0)]
    assert mid["step_time_s"] == pytest.approx(ss["tau_s"], rel=1e-12)
    assert mid["throughput_rps"] == pytest.approx(lam, rel=1e-12)
    # the class-resolved running mass sums to the closed form once every class has ramped up
    assert mid["running"] == pytest.approx(ss["running"], rel=1e-9)
    assert mid["waiting"] == 0.0
    # everything is served; completions lag admissions by the sojourn and reach the total
    assert res["completed"][-1] == pytest.approx(mix["count"].sum(), rel=1e-9)


def test_memory_bound_overload_serves_at_x_max_and_queues():
    cfg = cfg_with(**{"workload.scenario": "heavy", "workload.arrival_rate": 80.0, "workload.num_requests": 2400,
                      "fluid.bin_s": 30.0, "fluid.dt_out_s": 0.5})
    wl = make_workload(cfg)
    res = solve_quasistatic(cfg, wl, pooled_mix=True)
    mix = bin_mix(wl, cfg, 30.0, pooled=True)
    s = cfg.system
    x_max = cf.capacity_arrays(cfg.batch_time_model(), mix["P"], mix["D"], mix["K"], mix["Kb_batch"],
                               s.total_blocks * s.block_size, s.B, s.max_num_seqs)["throughput_max"][0]
    mid = res.series.iloc[np.searchsorted(res.t_s, 15.0)]
    assert mid["throughput_rps"] == pytest.approx(x_max, rel=1e-12)
    lam = mix["count"][0] / 30.0
    assert mid["waiting"] == pytest.approx((lam - x_max) * 15.0, rel=1e-9)
    assert mid["kv_memory_tokens"] == pytest.approx(s.M_total, rel=0.02)  # memory is the binding limit
    # the series run until the last cohort (admitted at the longer capacity-bound step) has left
    assert res["completed"][-1] == pytest.approx(mix["count"].sum(), rel=1e-9)


def test_against_the_simulator_on_the_azure_replay():
    rows, fres, sim, _ = crosscheck.run_scenario(cfg_with(), "azure", [64], "quasistatic", 0.05)
    r = rows[0]
    # measured: throughput 0.0035, e2e 0.0077 (at n = 256), running 0.12, KV 0.12 at n = 64
    assert r["throughput_rel_err"] <= 0.01
    assert r["e2e_rel_err"] <= 0.02
    assert r["sup_err_running"] <= 0.15 and r["sup_err_kv_memory_tokens"] <= 0.15


def test_backend_via_config_and_unsupported_policy():
    cfg = cfg_with(**{"fluid.backend": "quasistatic", "workload.num_requests": 2000})
    res = solve(cfg, make_workload(cfg))
    assert res.summary["backend"] == "quasistatic" and res.summary["mean_e2e_s"] > 0
    assert res.to_frame().shape[0] == len(res.t_s)
    bad = cfg_with(**{"fluid.backend": "quasistatic", "policy.victim_policy": "random"})
    with pytest.raises(UnsupportedError, match="victim_policy"):
        solve(bad, make_workload(bad))
