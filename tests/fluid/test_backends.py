"""SciPy and JAX backends agree on the default config; JAX vmap and grad work."""

import numpy as np
import pytest

from fluidserve import fluid
from fluidserve.fluid import closed_forms as cf
from fluidserve.fluid.params import build_params
from fluidserve.workload import make_workload

from .conftest import cfg_with

jax = pytest.importorskip("jax")
pytest.importorskip("diffrax")


def test_scipy_and_jax_agree_on_default_config():
    # the seed config over 30 s of arrivals (the full 100 s run agrees to 2e-5, see README)
    cfg = cfg_with(**{"workload.num_requests": 6000})
    wl = make_workload(cfg)
    a = fluid.solve(cfg, wl, backend="scipy")
    b = fluid.solve(cfg, wl, backend="jax")
    assert np.allclose(a.t_s, b.t_s)
    for col in ("running", "kv_memory_tokens", "kv_context_tokens", "step_time_s", "throughput_rps", "completed"):
        x, y = a[col], b[col]
        assert np.max(np.abs(x - y)) <= 1e-4 * np.max(np.abs(x)), col
    # waiting is ~0 (underloaded): compare on the scale of the running mass
    assert np.max(np.abs(a["waiting"] - b["waiting"])) <= 1e-4 * np.max(a["running"])


@pytest.fixture(scope="module")
def small():
    # short requests (D <= 12) keep the state small so jit + vmap + grad stay fast
    from fluidserve.workload.base import Workload

    cfg = cfg_with(**{"fluid.num_classes": 2, "fluid.bin_s": 100.0})
    rng = np.random.default_rng(3)
    wl = Workload(np.sort(rng.random(2000)) * 99.0, rng.integers(20, 200, 2000), rng.integers(2, 13, 2000))
    p, tables = build_params(cfg, wl)
    p = p._replace(lam=150.0 * tables.share[None, :])
    return cfg, p, tables


def _tau_at_end(p, t_end=2.0):
    from fluidserve.fluid.jax_backend import _jax, solve_fixed
    from fluidserve.fluid.vector_field import step_quantities

    jnp = _jax().numpy
    ys = solve_fixed(p, jnp.array([t_end]), rtol=1e-7, atol=1e-9, max_steps=1024)
    return step_quantities(jnp.float64(t_end), ys[-1], p, jnp)["tau"]


def test_vmap_over_d0_matches_closed_form(small):
    from fluidserve.fluid.jax_backend import _jax, to_jax

    cfg, p, tables = small
    jnp = _jax().numpy
    pj = to_jax(p)
    d0s = jnp.array([0.005, 0.0068, 0.009])
    axes = type(pj)(*(0 if f == "d0_s" else None for f in pj._fields))
    taus = jax.vmap(_tau_at_end, in_axes=(axes,))(pj._replace(d0_s=d0s))
    bt = cfg.batch_time_model()
    for d0, tau in zip(np.asarray(d0s), np.asarray(taus)):
        ss = cf.steady_state(
            type(bt)(float(d0), bt.d1_prefill_s, bt.d1_decode_s, bt.d2_kv_s), 150.0,
            float(tables.share @ tables.mean_prefill_tokens), float(tables.share @ tables.mean_decode_tokens),
            tables.kv_read_per_request,
        )
        assert tau == pytest.approx(ss["tau_s"], rel=5e-3)


def test_grad_of_step_time_wrt_d0(small):
    from fluidserve.fluid.jax_backend import to_jax

    cfg, p, tables = small
    pj = to_jax(p)
    g = jax.grad(lambda d0: _tau_at_end(pj._replace(d0_s=d0)))(pj.d0_s)
    bt = cfg.batch_time_model()
    rho = cf.steady_state(bt, 150.0, float(tables.share @ tables.mean_prefill_tokens),
                          float(tables.share @ tables.mean_decode_tokens), tables.kv_read_per_request)["rho"]
    assert float(g) == pytest.approx(1.0 / (1.0 - rho), rel=1e-2)  # d tau*/d d0 = 1/(1-rho)
