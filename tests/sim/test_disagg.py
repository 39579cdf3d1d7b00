"""Disaggregated simulator: hand-checked timeline, prefilled admission, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.batch_time import BatchTimeModel
from fluidserve.config import config_from_dict
from fluidserve.errors import InputError
from fluidserve.sim.disagg import simulate_disagg
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.simulator import collect
from fluidserve.workload.base import Workload

BT = BatchTimeModel(0.01, 1e-4, 0.0, 0.0)  # prefill step = 10 ms + 0.1 ms/token; decode step = 10 ms


def _cfg(**system):
    sysd = {"M_total": 100000, "block_size": 16, "B": 4096, "max_num_seqs": 64, "kv_bytes_per_token": 1_000_000}
    sysd.update(system)
    return config_from_dict({
        "system": sysd, "batch_time": {"d0_s": 0.01, "d1_prefill_s": 1e-4, "d1_decode_s": 0.0, "d2_kv_s": 0.0},
        "sim": {"record_events": True},
    })


def test_prefilled_request_decodes_in_its_first_step():
    e = ReplicaEngine(BatchTimeModel(0.01, 0.0, 0.0, 0.0), M_total=1000, block_size=16)
    e.submit(0, 0.0, 32, 4, prefilled=True)
    e.run()
    r = collect([e]).requests.iloc[0]
    assert r.first_token_time == pytest.approx(0.01)  # iteration 0 runs in the admission step
    assert r.completion_time == pytest.approx(0.04)  # 4 decode steps, no prefill step
    assert e.num_steps == 4


def test_prefilled_admission_takes_prompt_blocks_plus_one_token():
    # 40 blocks: the first takes ceil((512 + 1) / 16) = 33; the second needs 8 more and waits for the first
    e = ReplicaEngine(BatchTimeModel(0.01, 0.0, 0.0, 0.0), M_total=640, block_size=16, record_events=True)
    e.submit(0, 0.0, 512, 2, prefilled=True)
    e.submit(1, 0.0, 120, 2, prefilled=True)  # 33 + 8 = 41 > 40 blocks (32 + 8 would fit without the +1)
    e.run()
    r = collect([e]).requests
    assert r.first_token_time.tolist() == pytest.approx([0.01, 0.03])


def test_hand_checked_timeline():
    cfg = _cfg()
    wl = Workload(np.array([0.0, 0.001]), np.array([1000, 2000]), np.array([3, 1]))
    res = simulate_disagg(cfg, wl, n_prefill=1, n_decode=1, link_GBps=100.0)
    r = res.requests
    # request 0 alone in the first prefill step: 10 ms + 100 ms; request 1 arrives during it
    assert r.prefill_end[0] == pytest.approx(0.11)
    assert r.prefill_start[1] == pytest.approx(0.11) and r.prefill_end[1] == pytest.approx(0.11 + 0.21)
    # KV: 1000 tokens x 1 MB at 100 GB/s = 10 ms on the link, then 20 ms for request 1
    assert r.kv_transfer_s.tolist() == pytest.approx([0.01, 0.02])
    assert r.transfer_end[0] == pytest.approx(0.12)
    # decode: 3 steps of 10 ms from the hand-off; first token after the first of them
    assert r.first_token_time[0] == pytest.approx(0.13)
    assert r.completion_time[0] == pytest.approx(0.15)
    assert r.tbt[0] == pytest.approx(0.01)
    assert np.isnan(r.tbt[1])
    assert r.ttft[1] == pytest.approx(0.32 + 0.02 + 0.01 - 0.001)
    assert r.e2e.tolist() == pytest.approx((r.completion_time - r.arrival_time).tolist())
    assert res.prefill_steps.prefill_tokens.tolist() == [1000, 2000]


def test_bad_inputs():
    cfg = _cfg(B=512, chunked_prefill=False)
    wl = Workload(np.array([0.0]), np.array([1000]), np.array([3]))
    with pytest.raises(InputError, match="B=512"):
        simulate_disagg(cfg, wl, 1, 1, 10.0)
    with pytest.raises(InputError, match="at least|>= 1"):
        simulate_disagg(_cfg(), wl, 0, 1, 10.0)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 60),
    rate=st.floats(1.0, 200.0),
    n_p=st.integers(1, 3),
    n_d=st.integers(1, 3),
    seed=st.integers(0, 10_000),
)
def test_invariants(n, rate, n_p, n_d, seed):
    rng = np.random.default_rng(seed)
    arr = np.cumsum(rng.exponential(1 / rate, n))
    wl = Workload(arr, rng.integers(1, 2000, n), rng.integers(1, 50, n))
    res = simulate_disagg(_cfg(), wl, n_p, n_d, 25.0)
    r = res.requests
    assert r.completion_time.notna().all()
    assert (r.prefill_start >= r.arrival_time - 1e-12).all()
    assert (r.transfer_start >= r.prefill_end - 1e-12).all()
    assert r.kv_transfer_s.to_numpy() == pytest.approx(wl.prefill_tokens * 1e6 / 25e9)
    assert (r.first_token_time >= r.transfer_end + 0.01 - 1e-9).all()  # at least one decode step
    assert (r.completion_time >= r.first_token_time + 0.01 * (wl.decode_tokens - 1) - 1e-9).all()
    # one prefill step per batch, the prompts' tokens all processed once
    assert res.prefill_steps.prefill_tokens.sum() == wl.prefill_tokens.sum()
    # the link of each prefill instance carries one transfer at a time
    for _, g in r.groupby("prefill_instance"):
        g = g.sort_values("transfer_start")
        assert (g.transfer_start.to_numpy()[1:] >= g.transfer_end.to_numpy()[:-1] - 1e-12).all()
