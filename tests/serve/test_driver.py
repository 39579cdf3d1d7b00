"""Token release follows the engine: offline replay, and the asyncio driver on a fast clock."""

from __future__ import annotations

import asyncio
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fluidserve.batch_time import BatchTimeModel
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.simulator import collect
from fluidserve.serve.driver import SimClock, SimDriver, token_times_offline

BT = BatchTimeModel(0.005, 1e-4, 1e-4, 1e-7)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.floats(0, 0.5), st.integers(1, 120), st.integers(1, 40)), min_size=1, max_size=40),
    st.sampled_from(["v1", "swapping", "recompute"]),
    st.sampled_from(["LIFO", "FIFO", "LRU"]),
    st.integers(40, 400),
    st.booleans(),
)
def test_token_times_match_engine_records(reqs, mode, victim, m_total, chunked):
    """Token j of every request comes once, in order; first/last agree with the engine's records,
    also under preemption (tiny KV caches) and chunked prefill, for both schedulers."""
    reqs = sorted(reqs)
    if mode == "v1":
        engine = ReplicaEngine(BT, scheduler="vllm_v1", M_total=m_total, block_size=8, B=128, max_num_seqs=16,
                               chunked_prefill=True)  # without chunking B=128 would reject most requests
    else:
        engine = ReplicaEngine(BT, scheduler="vllm_v0", M_total=m_total, block_size=8, B=128, max_num_seqs=16,
                               mode=mode, victim_policy=victim, chunked_prefill=chunked)
    for i, (a, p, d) in enumerate(reqs):
        engine.submit(i, a, p, d)
    times = token_times_offline(engine)
    res = collect([engine])
    done = res.requests.set_index("req_id")
    assert set(times) == set(done.index)
    for gid, ts in times.items():
        row = done.loc[gid]
        assert len(ts) == row["decode_length"]
        assert all(b > a for a, b in zip(ts, ts[1:]))
        assert math.isclose(ts[0], row["first_token_time"], abs_tol=1e-12)
        assert math.isclose(ts[-1], row["completion_time"], abs_tol=1e-12)


def test_async_driver_releases_at_step_ends():
    """With the clock 200x faster than the wall, streams get every token, released no earlier
    than the simulated step end, and the engine's records equal the released times."""

    async def scenario():
        engine = ReplicaEngine(BT, M_total=10000, block_size=16, B=512, max_num_seqs=8)
        clock = SimClock(time_scale=200.0)
        steps = []
        driver = SimDriver(engine, clock, observer=lambda snap, rel, lag: steps.append((snap, len(rel), lag)))
        task = asyncio.create_task(driver.run())
        streams, seen = [], []
        for k in range(6):
            streams.append(driver.submit(20 + 10 * k, 5 + k))
            await asyncio.sleep(0.0005)

        async def consume(s):
            got, n = [], 0
            while n < s.decode_tokens:
                n = await s.wait_beyond(n)
                got.append((n, clock.now_s()))
            return got

        seen = await asyncio.gather(*(consume(s) for s in streams))
        task.cancel()
        return engine, streams, seen, steps

    engine, streams, seen, steps = asyncio.run(scenario())
    rec = collect([engine]).requests.set_index("req_id")
    for s, got in zip(streams, seen):
        assert got[-1][0] == s.decode_tokens
        assert s.first_token_s == rec.loc[s.gid, "first_token_time"]
        assert s.completion_s == rec.loc[s.gid, "completion_time"]
        assert all(t_seen >= s.first_token_s for _, t_seen in got)
    assert len(steps) == engine.num_steps  # one observer call per engine step
    assert all(snap is not None for snap, _, _ in steps)
    assert np.sum([n for _, n, _ in steps]) >= len(streams)
