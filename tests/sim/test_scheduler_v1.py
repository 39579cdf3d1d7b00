"""The vllm_v1 scheduler: hand-checked traces of vLLM V1's rules, prefix caching, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidserve.batch_time import BatchTimeModel
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.simulator import collect

UNIT = BatchTimeModel(0.01, 0.0, 0.0, 0.0)  # every step lasts 10 ms: times are step counts


def engine(reqs, *, bt=UNIT, **kw):
    """reqs: (arrival_s, prompt, max_tokens[, priority[, prefix_group, prefix_length]])."""
    kw.setdefault("B", 1000)
    kw.setdefault("max_num_seqs", 64)
    kw.setdefault("enable_prefix_caching", False)
    e = ReplicaEngine(bt, scheduler="vllm_v1", **kw)
    for i, r in enumerate(reqs):
        a, p, d = r[:3]
        pr = r[3] if len(r) > 3 else 0
        g, L = (r[4], r[5]) if len(r) > 5 else (-1, 0)
        e.submit(i, a, p, d, pr, prefix_group=g, prefix_length=L)
    return e


def records(e):
    out = []
    while (rec := e.step()) is not None:
        out.append(rec)
    return out


def test_lone_request_first_token_in_the_prefill_step():
    bt = BatchTimeModel(0.0068, 3.5e-5, 3.0e-5, 3.8e-8)
    P, D = 120, 37
    e = engine([(10.0 * k, P, D) for k in range(5)], bt=bt, num_gpu_blocks=1000, block_size=16)
    e.run()
    r = collect([e]).requests
    ttft = bt.step_time(P, 0, 0)
    e2e = ttft + sum(bt.step_time(0, 1, P + j) for j in range(D - 1))  # D - 1 decode steps
    np.testing.assert_allclose(r["ttft"], ttft, rtol=1e-12)
    np.testing.assert_allclose(r["total_delay"], e2e, rtol=1e-12)
    assert e.num_steps == 5 * D


def test_max_tokens_one_finishes_with_its_prefill():
    e = engine([(0.0, 30, 1)], num_gpu_blocks=10, block_size=16)
    recs = records(e)
    assert len(recs) == 1 and recs[0].finished == [0] and recs[0].first_token == [0]


def test_null_block_leaves_n_minus_one_usable_blocks():
    # 4-token blocks, num_gpu_blocks=6: 5 hold KV. P + D - 1 tokens must fit (the last token is never stored)
    e = engine([(0.0, 16, 5), (0.0, 16, 6)], num_gpu_blocks=6, block_size=4)
    e.run()
    res = collect([e])
    assert list(res.rejected["req_id"]) == [1] and "6 KV blocks" in res.rejected["reason"].iloc[0]
    assert e.kv_blocks_total == 5 and res.snapshots["gpu_memory_used"].max() == 20


def test_recompute_preemption_hand_checked():
    # 1-token blocks, 8 usable. Step 0 prefills all three (6 blocks). Step 1: R0, R1 take the last two
    # blocks, R2 cannot grow and is the last in running: it preempts itself. Step 2: R0, R1 fill the
    # cache (R2 would need its whole 3 tokens: no). Step 3: R0 needs a block, R1 (tail) is preempted;
    # R0 samples its 4th token and finishes. Step 4 (no preemption, so admission): R1 re-prefills
    # 2 + 3 tokens and R2 2 + 1, both sample in that step: R1 is done without a decode step.
    e = engine([(0.0, 2, 4)] * 3, num_gpu_blocks=9, block_size=1)
    recs = records(e)
    assert [r.preempted for r in recs] == [[], [2], [], [1], [], [], []]
    assert [r.admitted for r in recs] == [[0, 1, 2], [], [], [], [1, 2], [], []]
    assert [r.finished for r in recs] == [[], [], [], [0], [1], [], [2]]
    assert [r.prefill_tokens for r in recs] == [6, 0, 0, 0, 8, 0, 0]
    assert [r.decode_tokens for r in recs] == [0, 2, 2, 1, 0, 1, 1]
    assert [r.kv_tokens for r in recs] == [0, 4, 6, 4, 0, 3, 4]
    req = collect([e]).requests.set_index("req_id")
    assert list(req["preempt_count"]) == [0, 1, 1]
    assert list(req["completion_time"].round(9)) == [0.04, 0.05, 0.07]
    assert list(req["first_token_time"].round(9)) == [0.01, 0.01, 0.01]


def test_chunked_prefill_allocates_per_chunk_and_admits_only_whole_prompts():
    # 16-token blocks, 10 usable, B = 64. R0 (100 tokens) takes 64 in step 0: 4 blocks, not 7. In
    # step 1 it takes the other 36 (3 more blocks); R1 (60 tokens, 4 blocks) does not fit the 3 left
    # although its first chunk would: it waits until R0 finishes (end of step 2).
    e = engine([(0.0, 100, 2), (0.0, 60, 2)], num_gpu_blocks=11, block_size=16, B=64)
    recs = records(e)
    assert [r.kv_blocks_used for r in recs][:2] == [4, 7]
    assert [r.prefill_tokens for r in recs] == [64, 36, 0, 60, 0]
    assert [r.admitted for r in recs] == [[0], [], [], [1], []]
    assert [r.first_token for r in recs] == [[], [0], [], [1], []]
    assert [r.prefill_attention_tokens for r in recs][:2] == [64 * 64, 36 * 100]


def test_priority_preempts_the_lowest_priority_first():
    # R0 (priority 1) runs alone from step 0; R1, R2 (priority 0) join in step 1. In step 2 the three
    # need 3 blocks and 2 are free: FCFS preempts the last to enter running (R2), priority the
    # request with the largest priority value (R0), after giving back its already scheduled token.
    reqs = [(0.0, 2, 6, 1), (0.005, 2, 6, 0), (0.005, 2, 6, 0)]
    fcfs = records(engine(reqs, num_gpu_blocks=10, block_size=1))
    prio = records(engine(reqs, num_gpu_blocks=10, block_size=1, policy="priority"))
    assert fcfs[2].preempted == [2] and sorted(fcfs[2].emitted) == [0, 1]
    assert prio[2].preempted == [0] and sorted(prio[2].emitted) == [1, 2]
    assert prio[2].decode_tokens == 2 and prio[2].kv_tokens == 4


def test_prefix_cache_hit_skips_the_shared_blocks():
    bt = BatchTimeModel(0.01, 1e-4, 0.0, 0.0)
    # prompts of 100 tokens sharing a 64-token system prompt (4 blocks); R1 arrives after R0 finished
    reqs = [(0.0, 100, 2, 0, 7, 64), (1.0, 100, 2, 0, 7, 64), (2.0, 100, 2, 0, 8, 64)]
    e = engine(reqs, bt=bt, num_gpu_blocks=100, block_size=16, enable_prefix_caching=True)
    recs = records(e)
    prefill = [r.prefill_tokens for r in recs if r.prefill_tokens]
    assert prefill == [100, 36, 100]  # group 7 hits its 4 freed-but-cached blocks; group 8 misses
    assert [r.prefill_attention_tokens for r in recs if r.prefill_tokens][1] == 36 * 100
    res = collect([e])
    ttft = res.requests["ttft"].to_numpy()
    np.testing.assert_allclose(ttft, [bt.step_time(100, 0), bt.step_time(36, 0), bt.step_time(100, 0)], rtol=1e-12)
    assert res.meta["prefix_cache_hit_rate"] == pytest.approx(64 / 300)


def test_freed_cached_blocks_are_evicted_lru():
    # 10 usable blocks. R0 (group 0, 64 shared tokens) finishes; R1 (no group, 128 tokens = 8 blocks)
    # then takes 8 free blocks from the head of the free queue: the never-used ones first, then R0's
    # blocks, tail first. R0's first 2 prefix blocks survive, so R2 (group 0) hits 32 tokens.
    reqs = [(0.0, 64 + 16, 1, 0, 0, 64), (1.0, 128, 1), (2.0, 80, 1, 0, 0, 64)]
    e = engine(reqs, num_gpu_blocks=11, block_size=16, enable_prefix_caching=True)
    recs = records(e)
    assert [r.prefill_tokens for r in recs] == [80, 128, 80 - 32]


# ---------------------------------------------------------------- invariants (hypothesis)
@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 25))
    bs = draw(st.sampled_from([1, 4, 16]))
    reqs, t = [], 0.0
    for _ in range(n):
        t += draw(st.floats(0.0, 0.05))
        p = draw(st.integers(1, 80))
        g = draw(st.integers(-1, 2))
        reqs.append((t, p, draw(st.integers(1, 40)), draw(st.integers(0, 2)), g, draw(st.integers(0, p))))
    kw = dict(
        num_gpu_blocks=draw(st.integers(max(2, 120 // bs), 600 // bs + 2)),
        block_size=bs,
        B=draw(st.integers(8, 400)),
        max_num_seqs=draw(st.integers(1, 20)),
        policy=draw(st.sampled_from(["FCFS", "priority"])),
        chunked_prefill=draw(st.booleans()),
        enable_prefix_caching=draw(st.booleans()),
    )
    return reqs, kw


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants(scenario):
    reqs, kw = scenario
    bt = BatchTimeModel(0.005, 1e-4, 2e-4, 1e-6)
    e = engine(reqs, bt=bt, max_steps=100_000, record_events=True, **kw)
    e.run()
    r = collect([e])
    walked = engine(reqs, bt=bt, max_steps=100_000, **kw)
    walked._walk_always = True  # vLLM's request-by-request loop in every step
    walked.run()
    w = collect([walked])
    # the fast path is exactly vLLM's loop
    pd_cols = ["first_token_time", "completion_time", "preempt_count"]
    assert w.requests[pd_cols].equals(r.requests[pd_cols]) and w.num_steps == r.num_steps
    snap = r.snapshots
    assert (snap["gpu_memory_used"] <= e.kv_blocks_total * kw["block_size"]).all()
    assert e.kv_blocks_used == 0  # everything freed at the end (cached blocks are free)
    arrivals = np.array([a for a, *_ in reqs])
    rej_arr = np.sort(r.rejected["arrival_time"].to_numpy())
    arrived = np.searchsorted(arrivals, snap["time"].to_numpy(), side="right")
    rejected = np.searchsorted(rej_arr, snap["time"].to_numpy(), side="right")
    np.testing.assert_array_equal((snap["waiting"] + snap["running"] + snap["completed"] + rejected).to_numpy(), arrived)
    req = r.requests
    assert len(req) + len(r.rejected) == len(reqs)  # each request completes or is rejected, once
    assert req["completion_time"].notna().all() and (req["waiting_time"] >= 0).all()
    # max_tokens = D: a prefill step and D - 1 decode steps at least, each >= d0
    assert (req["total_delay"] >= req["decode_length"] * bt.d0_s - 1e-12).all()
    assert (req["first_token_time"] <= req["completion_time"]).all()
    assert (snap["decode_tokens"] + snap["prefill_tokens"] <= kw["B"]).all()
    assert (snap["running"] <= kw["max_num_seqs"]).all()
    if kw["policy"] == "FCFS":  # first admissions in arrival order
        ev = r.events
        first = ev[ev["event"] == "admit"].drop_duplicates("req_id")
        assert list(first["req_id"]) == sorted(first["req_id"])
    assert (req["swap_count"] == 0).all()


@pytest.mark.parametrize("scheduler", ["vllm_v1", "vllm_v0"])
def test_abort_frees_the_request_and_the_rest_completes(scheduler):
    kw = {"num_gpu_blocks": 100} if scheduler == "vllm_v1" else {"M_total": 1600}
    e = ReplicaEngine(UNIT, scheduler=scheduler, block_size=16, B=1000, **kw)
    h = [e.submit(i, 0.0, 40, 10) for i in range(3)] + [e.submit(3, 5.0, 40, 10)]
    for _ in range(3):
        e.step()
    used = e.kv_blocks_used
    assert e.request_state(h[1]) == "decoding" and e.output_tokens(h[1]) == (3 if scheduler == "vllm_v1" else 2)
    assert e.abort(h[1]) and e.abort(h[3]) and not e.abort(h[1])
    assert e.kv_blocks_used == used - 3  # ceil((40 + 2) / 16) blocks freed at once
    e.run()
    assert [e.request_state(x) for x in h] == ["done", "aborted", "done", "aborted"]
    assert e.kv_blocks_used == 0 and e.num_pending == 0
