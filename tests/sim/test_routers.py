"""Routers: one module, hand-checked splits, ties spread evenly."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fluidserve.batch_time import BatchTimeModel
from fluidserve.config import config_from_dict
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.routers import dispatch, make_router
from fluidserve.sim.simulator import simulate
from fluidserve.workload.base import Workload

BT = BatchTimeModel(0.01, 1e-4, 1e-4, 0.0)


def engines(n, **kw):
    return [ReplicaEngine(BT, num_gpu_blocks=kw.get("blocks", 10_000), block_size=16, record_events=False)
            for _ in range(n)]


def route_all(name, arrivals, n=4, weights=None, blocks=10_000, P=100, D=50):
    es = engines(n, blocks=blocks)
    router = make_router(name, weights)
    out = dispatch(router, es, arrivals, lambda i, r: es[r].submit(i, arrivals[i], P, D))
    return out, es


def test_round_robin():
    out, _ = route_all("round_robin", [0.0] * 10, n=3)
    assert out.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]


def test_weighted_shares_over_every_window():
    out, _ = route_all("weighted", np.arange(12) * 0.1, n=3, weights=[2, 1, 1])
    assert Counter(out.tolist()) == {0: 6, 1: 3, 2: 3}
    assert Counter(out[:4].tolist()) == {0: 2, 1: 1, 2: 1}


@pytest.mark.parametrize("name", ["least_loaded", "least_kv"])
def test_simultaneous_arrivals_on_idle_replicas_spread_evenly(name):
    # the case: 40 requests at t=5 on 4 idle replicas went [40, 0, 0, 0]
    out, es = route_all(name, [5.0] * 40)
    assert np.bincount(out, minlength=4).tolist() == [10, 10, 10, 10]
    assert [e.num_pending for e in es] == [10] * 4


def test_least_loaded_counts_the_system_and_breaks_ties_by_rotation():
    es = engines(3)
    for k in range(4):  # replica 0 busy with four long requests
        es[0].submit(k, 0.0, 100, 1000)
    es[0].run(until=0.5)
    router = make_router("least_loaded")
    arr = [1.0, 1.0, 1.0, 1.0, 1.0]
    out = dispatch(router, es, arr, lambda i, r: es[r].submit(10 + i, arr[i], 10, 10))
    # replica 0 holds 4; ties between 1 and 2 alternate; at 2-2 the pointer's order continues
    assert out.tolist() == [1, 2, 1, 2, 1]


def test_least_kv_prefers_the_emptier_cache():
    es = engines(2, blocks=200)
    es[0].submit(0, 0.0, 1000, 500)  # takes most of replica 0's blocks
    es[1].submit(1, 0.0, 100, 500)
    for e in es:
        e.run(until=1.0)
    router = make_router("least_kv")
    arr = [1.0, 1.0]
    out = dispatch(router, es, arr, lambda i, r: es[r].submit(2 + i, arr[i], 10, 10))
    assert out.tolist() == [1, 1]  # replica 1 is emptier even with one more request in it


def test_cluster_of_least_loaded_replicas_spreads_tied_arrivals():
    cfg = config_from_dict({
        "system": {"M_total": 24000, "block_size": 16, "B": 2048, "max_num_seqs": 256},
        "batch_time": {"d0_s": 0.0068, "d1_prefill_s": 3.5e-5, "d1_decode_s": 3e-5, "d2_kv_s": 3.8e-8},
        "cluster": {"replicas": 4, "router": "least_loaded"}, "sim": {"record_events": False},
    })
    wl = Workload(np.full(40, 5.0), np.full(40, 200), np.full(40, 100))
    res = simulate(cfg, wl)
    assert res.requests["replica"].value_counts().sort_index().tolist() == [10, 10, 10, 10]
