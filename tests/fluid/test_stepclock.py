"""The step-clock model: caps at every output point, conservation, backends agree, delays.

Caps (running <= max_num_seqs, KV <= capacity, waiting >= 0) are checked as a property over
random small configs for every fluid backend that is cheap enough to run many times (the
step-clock model, the step map and the quasi-static model; the Erlang ODE is checked on one
config). Delays are compared with the simulator at n = 1.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidserve import fluid
from fluidserve.sim import simulate
from fluidserve.workload import make_workload
from fluidserve.workload.base import Workload

from .conftest import ROOT, cfg_with

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _check_caps(res, cfg, slack=1e-6):
    s = cfg.system
    R = cfg.cluster.replicas
    M = s.total_blocks * s.block_size * R
    assert np.all(res["running"] <= s.max_num_seqs * R * (1 + slack) + slack)
    assert np.all(res["kv_memory_tokens"] <= M * (1 + slack) + slack)
    assert np.all(res["waiting"] >= -slack)
    assert np.all(res["swapped"] >= -slack)


@st.composite
def small_system(draw):
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    n = draw(st.integers(20, 300))
    rate = draw(st.floats(20.0, 600.0))
    P = rng.integers(1, draw(st.integers(2, 400)), n)
    D = rng.integers(1, draw(st.integers(2, 120)), n)
    t = np.sort(rng.random(n)) * n / rate
    over = {
        "system.max_num_seqs": draw(st.integers(2, 64)),
        "system.M_total": draw(st.integers(800, 20_000)),
        "system.B": draw(st.integers(512, 4096)),
        "system.mode": draw(st.sampled_from(["swapping", "recompute"])),
        **draw(st.sampled_from([{"system.scheduler": "vllm_v0", "system.chunked_prefill": False},
                                {"system.scheduler": "vllm_v1", "system.chunked_prefill": True}])),
        "fluid.bin_s": max(float(t.max()), 1e-3) / draw(st.integers(10, 40)),
        "fluid.step_stride": draw(st.sampled_from([None, 1, 3, 16])),
    }
    return Workload(t, P, D), over


# derandomized: CI runs the same 25 examples every time (a random failure is not a coin toss in
# CI; run with a larger max_examples and derandomize=False locally to search for new cases)
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(small_system(), st.sampled_from(["stepclock", "stepmap", "quasistatic"]))
def test_caps_hold_at_every_output_point(system, backend):
    wl, over = system
    cfg = cfg_with(**over)
    if backend != "stepclock":
        if cfg.system.scheduler != "vllm_v0":
            return  # the step map and the quasi-static model follow vllm_v0 only
        cfg.fluid.step_stride = None
    try:
        res = fluid.solve(cfg, wl, backend=backend)
    except fluid_input_errors() as exc:  # every request rejected: nothing to check
        assert "rejected" in str(exc)
        return
    _check_caps(res, cfg)
    if backend == "stepclock":
        # conservation: every admissible request completes
        assert res["completed"][-1] == pytest.approx(res.summary["admitted"], rel=1e-6)


@pytest.mark.parametrize("stride", [2, 4, 9])
def test_the_stride_does_not_move_an_underloaded_steady_state(stride):
    # the transport is exact for any stride and the rates are constant: the stationary step time
    # and the delays must not depend on h (they did: with the one-step admission lag the step-time
    # estimate counted the arrivals of h steps instead of h - 1, +25% step time at h = 2)
    cfg = cfg_with(**{"workload.num_requests": 6000, "sim.record_events": False})
    wl = make_workload(cfg)
    one = fluid.solve(cfg.model_copy(update={"fluid": cfg.fluid.model_copy(update={"step_stride": 1})}), wl)
    res = fluid.solve(cfg.model_copy(update={"fluid": cfg.fluid.model_copy(update={"step_stride": stride})}), wl)
    assert res.summary["step_stride"] == stride
    assert res.summary["mean_step_time_s"] == pytest.approx(one.summary["mean_step_time_s"], rel=0.005)
    assert res.percentiles()["e2e"]["mean"] == pytest.approx(one.percentiles()["e2e"]["mean"], rel=0.01)


def test_a_jump_to_a_bin_edge_lands_in_that_bin():
    # found by the property test: the system empties in a bin without arrivals and jumps to the
    # next bin's start, t = 6 * bin_s, where t / bin_s rounds to 5.999...: the model stayed in the
    # empty bin and jumped to the same time again, forever (2M macro steps, then an error)
    t = [0.13162562254555654, 0.14677367564053134, 0.1753542435319032, 0.20721835921782797, 0.27440203166361,
         0.3422249254954859, 0.34243253436831245, 0.36834902619966037, 0.37254410425828566, 0.38267020960645115,
         0.40405079997916876, 0.6154623182857838, 0.6155847029627929, 0.6227938896240682, 0.7519494276044623,
         0.7936450933342695, 0.8141028898324894, 0.867229272388965, 0.9588438493080904, 0.9594710217931898]
    ones = np.ones(len(t), dtype=int)
    cfg = cfg_with(**{"system.max_num_seqs": 2, "system.M_total": 800, "system.B": 512, "system.mode": "swapping",
                      "system.scheduler": "vllm_v0", "system.chunked_prefill": False,
                      "fluid.bin_s": 0.09594710217931898})
    res = fluid.solve(cfg, Workload(np.array(t), ones, ones), backend="stepclock")
    assert res["completed"][-1] == pytest.approx(len(t), rel=1e-6)
    assert res.summary["horizon_s"] < 1.2  # drained soon after the last arrival (0.96 s)


def fluid_input_errors():
    from fluidserve.errors import InputError

    return InputError


def test_caps_hold_for_the_ode_on_an_overloaded_config():
    cfg = cfg_with(**{"workload.num_requests": 400, "workload.arrival_rate": 400.0, "system.max_num_seqs": 32,
                      "fluid.bin_s": 0.5, "fluid.stages": 8})
    _check_caps(fluid.solve(cfg, make_workload(cfg), backend="scipy"), cfg, slack=1e-3)


def test_numpy_and_jax_agree_on_a_full_shipped_run():
    pytest.importorskip("jax")
    from fluidserve.config import load_config

    cfg = load_config(ROOT / "config" / "recompute.yaml")
    wl = make_workload(cfg)
    a = fluid.solve(cfg, wl, backend="stepclock")
    b = fluid.solve(cfg, wl, backend="stepclock_jax")
    for col in ("waiting", "running", "kv_memory_tokens", "step_time_s", "completed"):
        x, y = a[col], b[col]
        assert np.max(np.abs(x - y)) <= 1e-4 * max(np.max(np.abs(x)), 1e-12), col
    for key in ("mean_ttft_s", "mean_e2e_s", "completed"):
        assert b.summary[key] == pytest.approx(a.summary[key], rel=1e-4)


def test_delays_against_the_simulator_at_n1():
    # h100-like coefficients, gamma (CV 2) arrivals: the step fluctuations of eq. sc11 matter
    from fluidserve.config import load_config

    cfg = load_config(ROOT / "config" / "h100_calibrated.yaml", {"workload.num_requests": 6000,
                                                                   "sim.record_events": False})
    wl = make_workload(cfg)
    sim = simulate(cfg, wl).completed
    res = fluid.solve(cfg, wl, backend="stepclock")
    pc = res.percentiles()
    # measured: E2E mean +-3 %, p99 -8 %; TTFT mean -7 %, p99 -5 %
    assert pc["e2e"]["mean"] == pytest.approx(sim["total_delay"].mean(), rel=0.05)
    assert pc["e2e"]["p99"] == pytest.approx(sim["total_delay"].quantile(0.99), rel=0.10)
    assert pc["ttft"]["mean"] == pytest.approx(sim["ttft"].mean(), rel=0.15)
    assert pc["ttft"]["p99"] == pytest.approx(sim["ttft"].quantile(0.99), rel=0.25)
    assert pc["tpot"]["p50"] == pytest.approx(sim["tpot"].median(), rel=0.05)
    v0 = cfg_with(**{"system.scheduler": "vllm_v0", "system.chunked_prefill": False,
                     "system.enable_prefix_caching": False, "workload.num_requests": 500, "fluid.bin_s": 0.2})
    with pytest.raises(Exception, match="per-request"):
        fluid.solve(v0, make_workload(v0), backend="quasistatic").percentiles()


def test_least_loaded_replicas_are_an_equal_split():
    cfg = cfg_with(**{"workload.num_requests": 12000, "cluster.replicas": 2, "cluster.router": "least_loaded"})
    wl = make_workload(cfg)
    two = fluid.solve(cfg, wl, backend="stepclock")
    sim = simulate(cfg, wl)
    assert two.summary["replicas"] == 2
    assert two.summary["completed"] == pytest.approx(len(sim.completed), rel=1e-3)
    assert two.summary["mean_e2e_s"] == pytest.approx(sim.completed["total_delay"].mean(), rel=0.05)


def test_prefix_caching_against_the_simulator():
    # four 1000-token system prompts shared by all requests, 1.3x overload: the cached blocks are
    # held once and the hits skip compute; without them the fluid would be 25x slower to serve
    cfg = cfg_with(**{"sim.record_events": False, "workload.num_requests": 8000, "workload.arrival_rate": 200.0,
                      "system.scheduler": "vllm_v1", "system.chunked_prefill": True,
                      "system.enable_prefix_caching": True, "workload.shared_prefix": {"num_groups": 4, "system_prompt_len": 1000,
                                                 "question_len": [20, 200]}})
    wl = make_workload(cfg)
    sim = simulate(cfg, wl)
    res = fluid.solve(cfg, wl)
    # measured: E2E -0.7 %, TTFT -0.8 %, KV peak -1.3 %
    assert res.percentiles()["e2e"]["mean"] == pytest.approx(sim.completed["total_delay"].mean(), rel=0.05)
    assert res.summary["peak_kv_memory_tokens"] == pytest.approx(sim.snapshots["gpu_memory_used"].max(), rel=0.03)
    assert res.summary["completed"] == pytest.approx(len(sim.completed), rel=1e-3)
