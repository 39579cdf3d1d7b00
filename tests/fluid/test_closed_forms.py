"""Closed forms (theory eqs. 17-19) vs the sympy identities, the ODE's long-time limit and the simulator."""

import pytest
import sympy as sp

from fluidserve.fluid import closed_forms as cf
from fluidserve.fluid.params import build_params
from fluidserve.fluid.solve import solve_params
from fluidserve.workload import make_workload

from .conftest import cfg_with


def test_symbolic_identities():
    e = cf.derive()
    assert sp.simplify(e["tau_star"] - cf.d0 / (1 - e["rho"])) == 0
    assert sp.simplify(e["lambda_transition"] - e["throughput_max"]) == 0
    # at the transition rate, the steady-state admissions per step equal the capacity c
    at = e["per_step_admissions"].subs(cf.lam, e["lambda_transition"])
    assert sp.simplify(at - cf.c) == 0


def test_latex_export(tmp_path):
    paths = cf.write_latex(tmp_path)
    names = {p.name for p in paths}
    assert {"tau_star.tex", "throughput_max.tex", "stability.tex", "closed_forms.tex"} <= names
    assert r"\frac{d_{0}}{1 - \rho}" in (tmp_path / "tau_star_in_rho.tex").read_text()


def _steady_inputs(cfg, p, tables):
    share = tables.share
    return dict(
        arrival_rate=float(p.lam.sum()),
        mean_prefill=float(share @ tables.mean_prefill_tokens),
        mean_decode=float(share @ tables.mean_decode_tokens),
        mean_kv_per_request=tables.kv_read_per_request,
        mean_kv_memory_per_request=tables.kv_memory_steps_per_request,
        M_total=float(p.M_total), B=cfg.system.B, max_num_seqs=cfg.system.max_num_seqs,
    )


@pytest.fixture(scope="module")
def steady():
    # one rate bin of 30 s at ~150 req/s: the fluid settles long before t = 25 s
    cfg = cfg_with(**{"workload.arrival_rate": 150.0, "workload.num_requests": 6000, "fluid.bin_s": 30.0,
                      "fluid.horizon_s": 25.0, "fluid.dt_out_s": 0.5})
    full = make_workload(cfg)
    wl = full.subset(full.arrival_time_s < 30.0)  # exactly one 30 s bin
    p, tables = build_params(cfg, wl)
    # the class mix of the closed form's means: total rate of bin 0 times the class shares
    p = p._replace(lam=p.lam[:1].sum() * tables.share[None, :])
    res = solve_params([p], tables, cfg.fluid, "scipy")
    ss = cf.steady_state(cfg.batch_time_model(), **_steady_inputs(cfg, p, tables))
    return cfg, wl, res, ss


def test_closed_form_matches_ode_long_time_limit(steady):
    _, _, res, ss = steady
    last = res.series.iloc[-1]
    assert ss["stable"] and ss["binding_limit"] == "memory"
    assert last["step_time_s"] == pytest.approx(ss["tau_s"], rel=5e-3)
    assert last["running"] == pytest.approx(ss["running"], rel=5e-3)
    assert last["kv_memory_tokens"] == pytest.approx(ss["kv_memory_tokens"], rel=5e-3)
    assert last["kv_context_tokens"] == pytest.approx(ss["kv_tokens"], rel=5e-3)
    assert last["throughput_rps"] == pytest.approx(ss["throughput"], rel=5e-3)


def test_closed_form_matches_simulator(steady):
    from fluidserve.fluid.scaling import scaled_config, scaled_workload
    from fluidserve.sim import simulate

    cfg, wl, res, ss = steady
    # a scaled system (n = 8) at the same per-replica normalized load: less noise, same fluid limit
    n = 8
    swl = scaled_workload(wl, n, 30.0, seed=1)
    sim = simulate(scaled_config(cfg, n), swl, batch_time=cfg.batch_time_model().scaled(n))
    s = sim.snapshots
    win = (s["time"] > 5.0) & (s["time"] < 28.0)
    dur = s.loc[win, "batch_duration"]
    time_avg = lambda col: float((s.loc[win, col] * dur).sum() / dur.sum())  # noqa: E731
    lam_sim = float(((swl.arrival_time_s > 5) & (swl.arrival_time_s < 28)).sum()) / 23.0 / n
    ss_sim = cf.steady_state(cfg.batch_time_model(), **(_steady_inputs(cfg, *build_params(cfg, wl))
                                                       | {"arrival_rate": lam_sim}))
    assert time_avg("running") / n == pytest.approx(ss_sim["running"], rel=0.02)
    assert time_avg("gpu_memory_used") / n == pytest.approx(ss_sim["kv_memory_tokens"], rel=0.02)
    # step time: the time average over steps is the per-step formula at the mean load
    assert float(dur.mean()) == pytest.approx(ss_sim["tau_s"], rel=0.02)


def test_overload_has_no_steady_state():
    # the capacity-bound values themselves are checked against the simulator at saturation
    # (tests/fluid/test_saturation.py), not against a re-typed formula
    from fluidserve.batch_time import BatchTimeModel

    bt = BatchTimeModel(0.01, 1e-4, 2e-4, 0.0)
    over = cf.steady_state(bt, 60.0, 100.0, 50.0, 5000.0)
    assert over["tau_s"] == float("inf") and over["rho"] > 1
