"""Class tables (theory eqs. 3-5) against brute force over the requests."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.fluid.classes import _memory_steps, build_classes
from fluidserve.workload.base import Workload


def _workload(P, D):
    n = len(P)
    return Workload(np.arange(n, dtype=float), np.asarray(P), np.asarray(D))


def test_tables_match_brute_force_for_small_workload():
    P = [5, 17, 32, 40, 3, 16]
    D = [1, 3, 3, 7, 2, 5]
    bs = 16
    tab = build_classes(_workload(P, D), num_classes=1, block_size=bs, total_blocks=100, B=2048)
    P, D = np.array(P), np.array(D)
    for j in range(D.max()):
        surv = D > j
        assert np.isclose(tab.memory_tokens[0, j], np.mean(bs * np.ceil((P[surv] + j) / bs)))
        grow = bs * (np.ceil((P[surv] + j + 1) / bs) - np.ceil((P[surv] + j) / bs))
        assert np.isclose(tab.growth_tokens[0, j], grow.mean())
        assert np.isclose(tab.context_tokens[0, j], P[surv].mean() + j)
        assert np.isclose(tab.hazard[0, j], np.sum(D == j + 1) / surv.sum())
    assert tab.hazard[0, D.max() - 1] == 1.0


def test_rejected_requests_are_removed_and_counted():
    P = [10, 3000, 20, 500]
    D = [5, 5, 600, 5]
    # 600+20 tokens need 39 blocks > 32 total; 3000 > B
    tab = build_classes(_workload(P, D), num_classes=2, block_size=16, total_blocks=32, B=2048)
    assert tab.rejected == 2
    assert tab.counts.sum() == 2


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 300), st.integers(1, 80)), min_size=1, max_size=40),
    st.sampled_from([1, 8, 16]),
    st.integers(1, 5),
)
def test_survival_weighted_tables_reproduce_per_request_totals(reqs, bs, K):
    """sum_j N*S(j)*m(j) = total memory-steps; hazards give each request exactly one completion."""
    P = np.array([r[0] for r in reqs])
    D = np.array([r[1] for r in reqs])
    tab = build_classes(_workload(P, D), num_classes=K, block_size=bs, total_blocks=10**6, B=10**6)
    total_mem, total_ctx, completions = 0.0, 0.0, 0.0
    for k in range(tab.num_classes):
        surv = float(tab.counts[k])
        for j in range(tab.num_stages):
            if not tab.valid[k, j]:
                continue
            total_mem += surv * tab.memory_tokens[k, j]
            total_ctx += surv * tab.context_tokens[k, j]
            completions += surv * tab.hazard[k, j]
            surv *= 1.0 - tab.hazard[k, j]
    brute_mem = sum(bs * np.ceil((p + j) / bs) for p, d in zip(P, D) for j in range(d))
    brute_ctx = sum(p + j for p, d in zip(P, D) for j in range(d))
    assert np.isclose(total_mem, brute_mem, rtol=1e-9)
    assert np.isclose(total_ctx, brute_ctx, rtol=1e-9)
    assert np.isclose(completions, len(P))
    assert np.isclose(_memory_steps(P, D, bs).sum(), brute_mem)


def test_coarse_stages_shrink_the_state():
    rng = np.random.default_rng(0)
    P = rng.integers(1, 200, 500)
    D = rng.integers(1, 300, 500)
    exact = build_classes(_workload(P, D), 4, 16, 10**6, 10**6)
    coarse = build_classes(_workload(P, D), 4, 16, 10**6, 10**6, stages=30)
    assert exact.num_stages == D.max()
    assert coarse.num_stages <= 30 and coarse.stage_width == int(np.ceil(D.max() / 30))
