import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.outputs.metrics import format_summary, reason_key, summarize, summarize_requests


def test_summarize_hand_checked_values(result):
    s = summarize(result)
    approx = lambda x: pytest.approx(x, rel=1e-12, abs=1e-12)
    # counts: 4 in the table + 2 rejected
    assert (s["arrived"], s["completed"], s["in_system"], s["rejected"]) == (6, 3, 1, 2)
    assert s["rejected_kv_capacity"] == 1 and s["rejected_prompt_over_budget"] == 1
    # span 0 -> 2.5 s; 3 completions, 5+3+1 output and 10+20+30 prompt tokens
    assert s["span_s"] == approx(2.5)
    assert s["throughput_rps"] == approx(1.2)
    assert s["output_tokens_per_s"] == approx(3.6)
    assert s["total_tokens_per_s"] == approx(27.6)
    # ttft [0.2, 1.0, 1.5] -> linear-interpolated percentiles
    assert s["ttft_mean"] == approx(0.9)
    assert s["ttft_p50"] == approx(1.0)
    assert s["ttft_p95"] == approx(1.45)
    assert s["ttft_p99"] == approx(1.49)
    assert s["ttft_max"] == approx(1.5)
    # tpot [0.2, 0.5] (decode_length 1 has none)
    assert s["tpot_mean"] == approx(0.35)
    assert s["tpot_p95"] == approx(0.485)
    # total delay [1.0, 2.0, 1.5]
    assert s["total_delay_mean"] == approx(1.5)
    assert s["total_delay_p50"] == approx(1.5)
    assert s["total_delay_p95"] == approx(1.95)
    assert s["total_delay_p99"] == approx(1.99)
    assert s["waiting_time_mean"] == approx(0.5)
    assert s["waiting_time_p95"] == approx(0.95)
    # swaps / preemptions from the request columns, events counted separately
    assert (s["swap_count"], s["requests_swapped"], s["preempt_count"], s["requests_preempted"]) == (1, 1, 2, 1)
    assert (s["events_swap_out"], s["events_swap_in"], s["events_preempt"], s["events_complete"]) == (1, 1, 2, 3)
    # snapshots: util [0.25, 0.75, 0.5], batch sizes [1, 2, 1], durations [0.1, 0.2, 0.3]
    assert s["memory_utilization_mean"] == approx(0.5)
    assert s["memory_utilization_max"] == approx(0.75)
    assert s["memory_used_max_tokens"] == approx(48)
    assert s["num_steps"] == 3
    assert s["batch_size_mean"] == approx(4 / 3)
    assert s["step_time_mean_s"] == approx(0.2)


def test_summary_is_flat_plain_json(result):
    s = summarize(result)
    for k, v in s.items():
        assert v is None or type(v) in (int, float, bool, str), (k, type(v))
        assert not (isinstance(v, float) and not math.isfinite(v)), k
    assert json.loads(json.dumps(s, allow_nan=False)) == s


def test_summarize_requests_minimal_columns_and_horizon():
    # the load client's shape: no waiting_time / swap columns
    df = pd.DataFrame(
        {
            "arrival_time": [1.0, 2.0, 3.0],
            "decode_length": [4, 6, 8],
            "completion_time": [2.0, 5.0, np.nan],
            "ttft": [0.5, 1.0, np.nan],
        }
    )
    s = summarize_requests(df, horizon_s=11.0)
    assert (s["arrived"], s["completed"], s["in_system"]) == (3, 2, 1)
    assert s["span_s"] == pytest.approx(10.0)
    assert s["throughput_rps"] == pytest.approx(0.2)
    assert s["output_tokens_per_s"] == pytest.approx(1.0)
    assert s["total_tokens_per_s"] == pytest.approx(1.0)  # no prompt column -> 0 prompt tokens
    assert s["ttft_mean"] == pytest.approx(0.75)
    assert s["waiting_time_mean"] is None and s["tpot_p99"] is None
    assert "swap_count" not in s


def test_summarize_requests_nothing_completed_gives_none():
    df = pd.DataFrame({"arrival_time": [0.0], "decode_length": [3], "completion_time": [np.nan]})
    s = summarize_requests(df)
    assert s["completed"] == 0 and s["throughput_rps"] is None and s["total_delay_mean"] is None
    json.dumps(s, allow_nan=False)


def test_summarize_requests_requires_core_columns():
    with pytest.raises(KeyError, match="completion_time"):
        summarize_requests(pd.DataFrame({"arrival_time": [0.0], "decode_length": [1]}))


def test_reason_keys():
    assert reason_key("needs 3 KV blocks (40 tokens) > total 2 blocks") == "kv_capacity"
    assert reason_key("prompt of 9 tokens > token budget B=8 (chunked prefill off)") == "prompt_over_budget"
    assert reason_key("Deadline 12.5 s exceeded") == "deadline_s_exceeded"


def test_format_summary_mentions_key_numbers(result):
    txt = format_summary(summarize(result), "experiment x")
    assert "arrived 6, completed 3, rejected 2, still in system 1" in txt
    assert "1.20 req/s" in txt
    assert "kv_capacity=1" in txt
    # total delay p95 1.95 s shown in ms
    assert "1,950.00" in txt


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 100), st.floats(0.01, 50), st.integers(1, 200), st.booleans()),
        min_size=1,
        max_size=40,
    )
)
def test_summarize_requests_invariants(rows):
    arr = np.array([r[0] for r in rows])
    delay = np.array([r[1] for r in rows])
    done = np.array([r[3] for r in rows])
    df = pd.DataFrame(
        {
            "arrival_time": arr,
            "decode_length": [r[2] for r in rows],
            "prefill_length": [2 * r[2] for r in rows],
            "completion_time": np.where(done, arr + delay, np.nan),
            "total_delay": np.where(done, delay, np.nan),
        }
    )
    s = summarize_requests(df)
    assert s["completed"] + s["in_system"] == s["arrived"] == len(rows)
    if done.any():
        d = delay[done]
        assert d.min() - 1e-9 <= s["total_delay_p50"] <= s["total_delay_p95"] <= s["total_delay_p99"] <= d.max() + 1e-9
        assert s["total_delay_mean"] == pytest.approx(d.mean())
        # total tokens = 3x output tokens here
        assert s["total_tokens_per_s"] == pytest.approx(3 * s["output_tokens_per_s"])
        assert s["throughput_rps"] * s["span_s"] == pytest.approx(done.sum())
    json.dumps(s, allow_nan=False)
