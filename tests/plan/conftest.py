"""Small plan configs for the planner tests (fast: about a minute of simulated traffic)."""

from __future__ import annotations

import copy

import pytest
import yaml

from fluidserve.plan.config import plan_config_from_dict

# a deliberately slow GPU (explicit coefficients) so that the answer needs several replicas
SLOW_GPU = {
    "type": "H100-SXM", "cost_per_hour": 4.0, "count": 6,
    "batch_time": {"d0_s": 0.01, "d1_prefill_s": 2.0e-4, "d1_decode_s": 1.0e-4, "d2_kv_s": 0.0},
}
CHAT = {"name": "chat", "rate": 40.0, "prefill_tokens": [50, 400], "decode_tokens": [20, 100],
        "slo": {"ttft_p99_s": 0.3}}


def plan_dict(gpus=(SLOW_GPU,), classes=(CHAT,), **top) -> dict:
    data = {
        "name": "t", "seed": 3,
        "traffic": {"duration_s": 40.0, "classes": copy.deepcopy(list(classes))},
        "candidates": {"model": "Llama-3.1-8B", "gpus": copy.deepcopy(list(gpus)),
                       "scheduler": {"max_num_batched_tokens": [512, 2048], "max_num_seqs": [256],
                                     "chunked_prefill": [True]}},
        "search": {"verify_top": 2, "heterogeneous": False},
    }
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    return data


@pytest.fixture
def make_plan():
    def make(**kw):
        return plan_config_from_dict(plan_dict(**kw), "<test>")

    return make


@pytest.fixture
def write_plan(tmp_path):
    def write(name="plan.yaml", **kw):
        path = tmp_path / name
        path.write_text(yaml.safe_dump(plan_dict(**kw)))
        return path

    return write
