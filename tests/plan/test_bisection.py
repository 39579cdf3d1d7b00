"""min_replicas: the smallest passing count from any start, and the count below it always simulated."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.plan.verify import min_replicas


def _oracle(threshold):
    calls = []

    def run(n):
        calls.append(n)
        return {"meets_slo": n >= threshold}

    return run, calls


@settings(max_examples=200, deadline=None)
@given(threshold=st.integers(1, 40), start=st.integers(1, 40), hi=st.integers(1, 40))
def test_finds_smallest_and_shows_the_one_below(threshold, start, hi):
    run, calls = _oracle(threshold)
    n, tried = min_replicas(run, start, hi)
    if threshold > hi:
        assert n is None
        return
    assert n == threshold
    assert n in tried
    if n > 1:
        assert n - 1 in tried  # the next smaller fleet was simulated (and failed)
    assert len(tried) == len(set(tried))  # no count simulated twice


def test_good_screen_guess_costs_two_runs():
    run, calls = _oracle(5)
    assert min_replicas(run, 5, 8) == (5, [5, 4])
