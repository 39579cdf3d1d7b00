"""The prefill-attention and MoE terms of BatchTimeModel (default 0: old presets unchanged)."""

import numpy as np
import pytest

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError


def test_new_terms_default_to_zero():
    m = BatchTimeModel(0.01, 1e-4, 2e-4, 1e-7)
    assert m.step_time(100, 10, 5000, prefill_attention_tokens=1e6) == pytest.approx(0.01 + 0.01 + 0.002 + 0.0005)
    assert m.to_dict() == {"d0_s": 0.01, "d1_prefill_s": 1e-4, "d1_decode_s": 2e-4, "d2_kv_s": 1e-7}


def test_prefill_attention_term():
    m = BatchTimeModel(0.01, 0.0, 0.0, d3_prefill_attn_s=1e-9)
    # a 1000-token chunk after 500 cached tokens: 1000 * 1500 pairs
    assert m.step_time(1000, 0, 0, 1000 * 1500) == pytest.approx(0.01 + 1.5e-3)


def test_expected_experts_hand_checked():
    m = BatchTimeModel(0.01, 0, 0, moe_expert_s=1e-3, moe_num_experts=8, moe_top_k=2)
    # one token activates exactly k experts; two tokens: 8 * (1 - 0.75^2) = 3.5
    assert m.expected_experts(1) == pytest.approx(2.0)
    assert m.expected_experts(2) == pytest.approx(3.5)
    # many tokens activate all experts
    assert m.expected_experts(1000) == pytest.approx(8.0)
    assert m.step_time(0, 2, 0) == pytest.approx(0.01 + 3.5e-3)


def test_expected_experts_matches_random_routing():
    rng = np.random.default_rng(0)
    e, k, n = 64, 6, 20
    m = BatchTimeModel(0.01, 0, 0, moe_expert_s=1.0, moe_num_experts=e, moe_top_k=k)
    counts = [len({x for _ in range(n) for x in rng.choice(e, k, replace=False)}) for _ in range(4000)]
    assert m.expected_experts(n) == pytest.approx(np.mean(counts), rel=0.01)


def test_vectorized():
    m = BatchTimeModel(0.01, 1e-4, 2e-4, 1e-7, 1e-9, 1e-3, 8, 2)
    p = np.array([0, 10, 100])
    out = m.step_time(p, np.array([4, 4, 4]), np.zeros(3), np.zeros(3))
    assert out.shape == (3,)
    assert out[2] == pytest.approx(m.step_time(100, 4, 0, 0))


def test_bad_moe_structure():
    with pytest.raises(InputError, match="moe_top_k"):
        BatchTimeModel(0.01, 0, 0, moe_expert_s=1e-3, moe_num_experts=8, moe_top_k=0)


def test_jax_traceable():
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    m = BatchTimeModel(0.01, 1e-4, 2e-4, 1e-7, 1e-9, 1e-3, 8, 2)
    f = jax.jit(lambda p, d: m.step_time(p, d, 0.0, 0.0))
    out = f(jnp.array([0.0, 100.0]), jnp.array([4.0, 4.0]))
    # 4 decode tokens: 8 * (1 - 0.75^4) = 5.4688 experts; 104 tokens: all 8
    assert float(out[0]) == pytest.approx(0.01 + 8e-4 + 5.46875e-3, rel=1e-5)
    assert float(out[1]) == pytest.approx(0.01 + 0.01 + 8e-4 + 8e-3, rel=1e-5)
