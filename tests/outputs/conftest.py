"""A small hand-built SimResult whose summary values are worked out by hand in the tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fluidserve.config import config_from_dict
from fluidserve.sim.result import (
    EVENT_COLUMNS,
    MEMORY_EVENT_COLUMNS,
    REJECTED_COLUMNS,
    REQUEST_COLUMNS,
    SNAPSHOT_COLUMNS,
    SimResult,
)

NaN = np.nan


def hand_result() -> SimResult:
    """3 completed requests, 1 still waiting, 2 rejected; 3 steps on one replica, M_total 64.

    req  arrival  P   D   enter  first_tok  done  wait  ttft  tpot  delay  swaps  preempts
    0    0.0      10  5   0.0    0.2        1.0   0.0   0.2   0.2   1.0    0      0
    1    0.5      20  3   1.0    1.5        2.5   0.5   1.0   0.5   2.0    1      0
    2    1.0      30  1   2.0    2.5        2.5   1.0   1.5   NaN   1.5    0      2
    3    3.0      40  10  NaN    NaN        NaN   NaN   NaN   NaN   NaN    0      0
    """
    rows = [
        (0, 0.0, 10, 5, 0.0, 0.2, 1.0, 0.0, 1.0, 0, 0, 0.2, 0.2, 1.0, 0),
        (1, 0.5, 20, 3, 1.0, 1.5, 2.5, 0.5, 1.5, 1, 0, 1.0, 0.5, 2.0, 0),
        (2, 1.0, 30, 1, 2.0, 2.5, 2.5, 1.0, 0.5, 0, 2, 1.5, NaN, 1.5, 0),
        (3, 3.0, 40, 10, NaN, NaN, NaN, NaN, NaN, 0, 0, NaN, NaN, NaN, 0),
    ]
    requests = pd.DataFrame(rows, columns=REQUEST_COLUMNS)
    # time, batch_id, batch_size, batch_tokens, prefill, decode, kv, duration, W, R, S, C, used, util, replica
    snaps = pd.DataFrame(
        [
            (0.0, 0, 1, 10, 10, 0, 0, 0.1, 1, 1, 0, 0, 16, 0.25, 0),
            (1.0, 1, 2, 21, 20, 1, 14, 0.2, 1, 2, 0, 1, 48, 0.75, 0),
            (2.0, 2, 1, 31, 30, 1, 21, 0.3, 1, 1, 0, 3, 32, 0.50, 0),
        ],
        columns=SNAPSHOT_COLUMNS,
    )
    events = pd.DataFrame(
        [
            (0.0, "admit", 0, 0), (1.0, "admit", 1, 0), (1.0, "complete", 0, 0), (1.2, "swap_out", 1, 0),
            (1.4, "swap_in", 1, 0), (1.6, "preempt", 2, 0), (1.8, "preempt", 2, 0), (2.0, "admit", 2, 0),
            (2.5, "complete", 1, 0), (2.5, "complete", 2, 0),
        ],
        columns=EVENT_COLUMNS,
    )
    mem = pd.DataFrame(
        [(0.0, "allocate", 0, 0, 16, "admit", 0), (1.2, "swap_out", 1, 48, 16, "memory_full", 0)],
        columns=MEMORY_EVENT_COLUMNS,
    )
    rejected = pd.DataFrame(
        [
            (4, 3.5, 1000, 600, "needs 100 KV blocks (1600 tokens) > total 4 blocks", 0),
            (5, 3.6, 3000, 5, "prompt of 3000 tokens > token budget B=2048 (chunked prefill off)", 0),
        ],
        columns=REJECTED_COLUMNS,
    )
    return SimResult(requests, snaps, events, mem, rejected, M_total=64, replicas=1, num_steps=3, wall_time_s=0.01)


def small_config(name: str = "hand", **workload):
    return config_from_dict(
        {
            "name": name,
            "system": {"M_total": 64, "block_size": 16},
            "batch_time": {"d0_s": 0.01, "d1_s": 1e-4},
            "workload": {"num_requests": 50, "arrival_rate": 5.0, **workload},
        }
    )


@pytest.fixture
def result() -> SimResult:
    return hand_result()


@pytest.fixture
def make_config():
    return small_config
