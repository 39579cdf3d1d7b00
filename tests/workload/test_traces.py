"""Trace loaders: Azure (shipped copy), BurstGPT, generic CSV, options and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fluidserve.errors import InputError
from fluidserve.workload import (
    AZURE_CONV_SAMPLE,
    Workload,
    load_azure,
    load_burstgpt,
    load_generic,
    read_requests_csv,
    read_trace,
    write_requests_csv,
)

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "azure_llm_2023_conv.csv"


def write(tmp_path: Path, text: str, name: str = "trace.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------ Azure
def test_azure_shipped_copy():
    loaded = read_trace(AZURE_CONV_SAMPLE, "azure")
    w = loaded.workload
    assert loaded.rows == 19_366 and len(w) == 19_366
    assert loaded.dropped == {"zero_decode": 0, "zero_prefill": 0, "outside_window": 0}
    assert w.prefill_tokens.mean() == pytest.approx(1154.6974078, abs=1e-6)
    assert w.decode_tokens.mean() == pytest.approx(211.1259424, abs=1e-6)
    assert (w.prefill_tokens.min(), w.prefill_tokens.max()) == (2, 14050)
    assert (w.decode_tokens.min(), w.decode_tokens.max()) == (7, 1000)
    # 18:15:46.6805900 -> 18:15:50.9951690 -> 18:15:51.2224670 ... 19:14:08.4025270, 100 ns exact
    assert w.arrival_time_s[:3] == pytest.approx([0.0, 4.314579, 4.541877], abs=1e-9)
    assert w.duration_s == pytest.approx(3501.721937, abs=1e-9)
    assert np.all(w.priority == 0)


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data not present")
def test_shipped_copy_equals_shared_data():
    assert AZURE_CONV_SAMPLE.read_bytes() == SHARED.read_bytes()


def test_azure_options_on_real_data():
    ts = pd.to_datetime(pd.read_csv(AZURE_CONV_SAMPLE)["TIMESTAMP"])
    rel = (ts - ts.iloc[0]).dt.total_seconds().to_numpy()
    raw = pd.read_csv(AZURE_CONV_SAMPLE)
    in_window = (rel >= 600) & (rel < 1200)
    ok = in_window & (raw.ContextTokens + raw.GeneratedTokens <= 2000).to_numpy()
    loaded = read_trace(AZURE_CONV_SAMPLE, "azure", start_s=600, end_s=1200, rate_scale=2.0, L_filter=2000)
    w = loaded.workload
    assert len(w) == ok.sum()
    assert loaded.dropped["outside_window"] == (~in_window).sum()
    assert loaded.dropped["over_L_filter"] == (in_window & ~ok).sum()
    assert np.max(w.prefill_tokens + w.decode_tokens) <= 2000
    np.testing.assert_allclose(w.arrival_time_s, (rel[ok] - 600) / 2.0, atol=1e-9)
    assert w.arrival_time_s[-1] < 300.0
    # max_requests keeps the first ones
    assert len(load_azure(max_requests=100)) == 100


def test_azure_small_file_drops_zero_outputs_and_keeps_100ns(tmp_path):
    path = write(
        tmp_path,
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.6805900,374,44\n"
        "2023-11-16 18:15:46.6805901,10,0\n"
        "2023-11-16 18:15:46.6805903,12,3\n"
        "2023-11-16 18:16:46.6805900,0,3\n",
    )
    loaded = read_trace(path, "azure")
    assert loaded.dropped["zero_decode"] == 1 and loaded.dropped["zero_prefill"] == 1
    assert loaded.workload.arrival_time_s.tolist() == pytest.approx([0.0, 3e-7], abs=1e-12)
    assert loaded.workload.decode_tokens.tolist() == [44, 3]


# ------------------------------------------------------------------------------ BurstGPT
BURST = (
    "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
    "5,ChatGPT,472,18,490,Conversation log\n"
    "45,ChatGPT,1087,0,1087,Conversation log\n"
    "118,GPT-4,417,276,693,Conversation log\n"
    "129,ChatGPT,1360,0,1360,API log\n"
    "130,ChatGPT,59,120,179,API log\n"
)


def test_burstgpt_drops_failures(tmp_path):
    loaded = read_trace(write(tmp_path, BURST), "burstgpt")
    w = loaded.workload
    assert loaded.rows == 5 and loaded.dropped["failed"] == 2
    assert w.arrival_time_s.tolist() == [0.0, 113.0, 125.0]
    assert w.prefill_tokens.tolist() == [472, 417, 59]
    assert w.decode_tokens.tolist() == [18, 276, 120]
    assert len(load_burstgpt(write(tmp_path, BURST), L_filter=600)) == 2  # 472+18, 59+120


# ------------------------------------------------------------------------------ generic
GENERIC = "arrival_time,prefill_length,decode_length,priority\n" + "".join(
    f"{t},{10 * (t + 1)},{t + 1},{t % 2}\n" for t in range(10)
)


def test_generic_with_priority_and_options(tmp_path):
    path = write(tmp_path, GENERIC)
    w = load_generic(path)
    assert w.arrival_time_s.tolist() == list(map(float, range(10)))
    assert w.priority.tolist() == [0, 1] * 5
    w = load_generic(path, start_s=2, end_s=6, rate_scale=2.0)
    assert w.arrival_time_s.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert w.prefill_tokens.tolist() == [30, 40, 50, 60]
    # L_filter: prefill + decode = 11*(t+1) <= 44 keeps t = 0..3
    loaded = read_trace(path, "generic", L_filter=44, max_requests=3)
    assert loaded.workload.decode_tokens.tolist() == [1, 2, 3]
    assert loaded.dropped == {"outside_window": 0, "over_L_filter": 6, "over_max_requests": 1}


def test_generic_unsorted_without_priority_and_spacing(tmp_path):
    path = write(tmp_path, " arrival_time , Prefill_Length ,decode_length\n12.5, 7 ,2\n10.0,3,1\n")
    w = load_generic(path)
    assert w.arrival_time_s.tolist() == [0.0, 2.5]
    assert w.prefill_tokens.tolist() == [3, 7] and w.priority.tolist() == [0, 0]


def test_large_trace_names_a_late_bad_row(tmp_path):
    n = 200_000
    df = pd.DataFrame({"arrival_time": np.arange(n) * 0.01, "prefill_length": 5, "decode_length": 3})
    df["decode_length"] = df["decode_length"].astype(str)
    df.loc[n - 7, "decode_length"] = "3x"
    path = tmp_path / "big.csv"
    df.to_csv(path, index=False)
    with pytest.raises(InputError, match=rf"big.csv row {n - 6}: decode_length is '3x', not a number"):
        load_generic(path)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    arrivals=hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1e7, allow_subnormal=True)),
    data=st.data(),
)
def test_requests_csv_round_trip_is_exact(tmp_path_factory, arrivals, data):
    n = len(arrivals)
    ints = hnp.arrays(np.int64, n, elements=st.integers(1, 10**6))
    w = Workload(np.sort(arrivals), data.draw(ints), data.draw(ints), data.draw(hnp.arrays(np.int64, n, elements=st.integers(0, 3))))
    path = write_requests_csv(w, tmp_path_factory.mktemp("rt") / "sub" / "r.csv")
    back = read_requests_csv(path)
    for name in ("arrival_time_s", "prefill_tokens", "decode_tokens", "priority"):
        assert np.array_equal(getattr(back, name), getattr(w, name)), name


# ------------------------------------------------------------------------------ bad input
HEAD = "arrival_time,prefill_length,decode_length\n"


@pytest.mark.parametrize(
    "text, message",
    [
        (HEAD + "0,10,5\n1,abc,5\n", r"trace.csv row 2: prefill_length is 'abc', not a number"),
        (HEAD + "0,10,5\n1,10,5\n2,10,-3\n", r"trace.csv row 3: decode_length is -3, must be >= 1"),
        (HEAD + "0,10,5\n1,,5\n", r"trace.csv row 2: prefill_length is missing"),
        (HEAD + "0,10,5\n\n1,10,5\n", r"trace.csv row 2: arrival_time is missing"),
        (HEAD + "-1,10,5\n", r"trace.csv row 1: arrival_time is -1, must be >= 0"),
        (HEAD + "0,10.5,5\n", r"trace.csv row 1: prefill_length is 10.5, not a whole number of tokens"),
        (HEAD + "0,10,0\n", r"trace.csv row 1: decode_length is 0, must be >= 1"),
        (HEAD + "inf,10,3\n", r"trace.csv row 1: arrival_time is inf, not a finite number"),
        (HEAD, r"trace.csv: trace has a header but no data rows"),
        ("", r"trace.csv: trace file is empty"),
        ("arrival_time,prefill_length\n0,10\n", r"trace.csv: missing column 'decode_length' \(found: arrival_time, prefill_length\)"),
        (HEAD + "0,10,5\n", None),  # control: valid
    ],
)
def test_generic_bad_input(tmp_path, text, message):
    path = write(tmp_path, text)
    if message is None:
        assert len(load_generic(path)) == 1
        return
    with pytest.raises(InputError, match=message) as info:
        load_generic(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "fmt, text, message",
    [
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,4\nyesterday,3,4\n",
         r"row 2: TIMESTAMP is 'yesterday', not a date-time"),
        ("azure", "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.68,3\n", r"missing column 'GeneratedTokens'"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,-4\n",
         r"row 1: GeneratedTokens is -4, must be >= 0"),
        ("azure", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,3,0\n",
         r"no requests left after filtering 1 rows \(zero_decode=1\)"),
        ("burstgpt", "Timestamp,Model,Request tokens,Response tokens\n1,x,5,3\n2,x,five,3\n",
         r"row 2: Request tokens is 'five', not a number"),
        ("burstgpt", "Timestamp,Model,Response tokens\n1,x,3\n", r"missing column 'Request tokens'"),
    ],
)
def test_azure_and_burstgpt_bad_input(tmp_path, fmt, text, message):
    with pytest.raises(InputError, match=message):
        read_trace(write(tmp_path, text), fmt)


def test_missing_file_directory_and_format(tmp_path):
    with pytest.raises(InputError, match=r"trace file not found: .*nope.csv"):
        load_generic(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="not a file"):
        load_generic(tmp_path)
    with pytest.raises(InputError, match="unknown trace format 'parquet'"):
        read_trace(write(tmp_path, GENERIC), "parquet")


def test_window_leaving_nothing_and_bad_options(tmp_path):
    path = write(tmp_path, GENERIC)
    with pytest.raises(InputError, match=r"no requests left after filtering 10 rows \(outside_window=10\)"):
        load_generic(path, start_s=100)
    with pytest.raises(InputError, match=r"end_s \(1\) must be > start_s \(2\)"):
        load_generic(path, start_s=2, end_s=1)
    with pytest.raises(InputError, match="rate_scale must be > 0"):
        load_generic(path, rate_scale=0)
