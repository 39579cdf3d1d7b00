"""Invariants of the shared vector field (theory eqs. 6-15), numpy and JAX namespaces."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.fluid.params import build_params
from fluidserve.fluid.vector_field import step_quantities, unpack, vector_field
from fluidserve.workload import make_workload

from .conftest import cfg_with


def _params(mode="swapping"):
    cfg = cfg_with(**{"workload.num_requests": 400, "system.mode": mode, "fluid.bin_s": 1.0})
    p, _ = build_params(cfg, make_workload(cfg))
    return p


P_SWAP = _params("swapping")
P_REC = _params("recompute")


def _random_state(p, seed, scale):
    rng = np.random.default_rng(seed)
    y = np.zeros(p.state_size)
    K, J = p.num_classes, p.num_stages
    valid = (p.mem > 0).ravel()
    y[:K] = rng.exponential(scale, K)
    y[K:K + K * J] = rng.exponential(scale / J, K * J) * valid
    y[K + K * J:K + 2 * K * J] = rng.exponential(scale / J, K * J) * valid * rng.integers(0, 2)
    return y


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.floats(0.1, 400.0), st.floats(0.0, 2.0), st.booleans())
def test_mass_balance_and_memory_limit(seed, scale, t, recompute):
    """d/dt (waiting + running + held + completed) = arrival rate, and tau >= d0."""
    p = P_REC if recompute else P_SWAP
    y = _random_state(p, seed, scale)
    q = step_quantities(t, y, p, np)
    K, J = p.num_classes, p.num_stages
    dW, dr, dH, dA, dC, *_ = unpack(q["dy"], K, J)
    total = dW.sum() + dr.sum() + dH.sum() + dC.sum()
    assert np.isclose(total, q["lam"].sum(), rtol=1e-9, atol=1e-9 * scale)
    assert q["tau"] >= float(p.d0_s)


def test_lifo_victims_are_the_youngest_stages():
    p = P_SWAP
    K, J = p.num_classes, p.num_stages
    y = np.zeros(p.state_size)
    r = np.zeros((K, J))
    r[:, :40] = 30.0 * (p.mem[:, :40] > 0)  # far more memory than M_total
    y[K:K + K * J] = r.ravel()
    q = step_quantities(0.0, y, p, np)
    v = q["victims"].sum(0)
    assert v.sum() > 0
    taken = np.nonzero(v > 1e-12)[0]
    # a contiguous block of the youngest ages, all but the oldest of them taken fully
    assert taken[0] == 0 and np.all(np.diff(taken) == 1)
    full = q["victims"][:, taken[:-1]]
    assert np.allclose(full, r[:, taken[:-1]])


def test_underloaded_state_admits_everything_and_tau_is_the_step_formula():
    p = P_SWAP
    K = p.num_classes
    y = np.zeros(p.state_size)
    y[:K] = 1.0  # a little waiting mass, empty engine
    q = step_quantities(0.5, y, p, np)
    lam = q["lam"]
    assert np.isclose(q["theta"], 1.0)
    prefill = ((y[:K] + lam * q["tau"]) * p.prefill).sum()
    assert np.isclose(q["tau"], float(p.d0_s) + float(p.d1_prefill_s) * prefill)


def test_numpy_and_jax_vector_fields_agree():
    pytest.importorskip("jax")
    from fluidserve.fluid.jax_backend import _jax, to_jax

    jnp = _jax().numpy
    for p in (P_SWAP, P_REC):
        pj = to_jax(p)
        for seed in range(5):
            y = _random_state(p, seed, 200.0)
            a = vector_field(0.3, y, p, np)
            b = np.asarray(vector_field(jnp.float64(0.3), jnp.asarray(y), pj, jnp))
            assert np.allclose(a, b, rtol=1e-10, atol=1e-10)
