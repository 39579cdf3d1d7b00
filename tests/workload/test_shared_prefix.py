"""Shared-prefix workloads: synthetic system prompts and the trace columns."""

from __future__ import annotations

import numpy as np
import pytest

from fluidserve.config import config_from_dict
from fluidserve.errors import InputError
from fluidserve.sim import simulate
from fluidserve.workload import load_generic, make_workload, write_requests_csv


def cfg(**workload):
    return config_from_dict({
        "system": {"num_gpu_blocks": 4000, "block_size": 16, "B": 2048, "max_num_seqs": 256},
        "batch_time": {"d0_s": 0.0068, "d1_prefill_s": 3.5e-5, "d1_decode_s": 3e-5, "d2_kv_s": 3.8e-8},
        "workload": {"num_requests": 400, "arrival_rate": 20.0, **workload},
        "sim": {"record_events": False},
    })


def test_synthetic_system_prompts():
    c = cfg(shared_prefix={"num_groups": 3, "system_prompt_len": 500, "question_len": [20, 60]})
    w = make_workload(c)
    assert set(np.unique(w.prefix_group)) == {0, 1, 2}
    assert (w.prefix_length == 500).all()
    assert w.prefill_tokens.min() >= 520 and w.prefill_tokens.max() <= 560
    res = simulate(c, w)
    # every request but the first of each group hits the 31 full blocks (496 tokens) of its prompt
    hit = res.meta["prefix_cache_hit_rate"]
    expect = (len(w) - 3) * 496 / w.prefill_tokens.sum()
    assert hit == pytest.approx(expect, rel=1e-9)


def test_trace_columns_round_trip(tmp_path):
    c = cfg(shared_prefix={"num_groups": 2, "system_prompt_len": 100, "question_len": [1, 5]})
    w = make_workload(c)
    back = load_generic(write_requests_csv(w, tmp_path / "t.csv"))
    np.testing.assert_array_equal(back.prefix_group, w.prefix_group)
    np.testing.assert_array_equal(back.prefix_length, w.prefix_length)


def test_bad_prefix_length_names_the_row(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("arrival_time,prefill_length,decode_length,prefix_group,prefix_length\n0,10,2,0,5\n1,10,2,0,11\n")
    with pytest.raises(InputError, match="row 2: prefix_length 11"):
        load_generic(p)
