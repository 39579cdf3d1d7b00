"""Shared LP configs for the policy tests."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "lp_example.yaml"

H100 = {
    "name": "h100", "count": 2, "cost_per_hour": 4.0, "clocks_mhz": [1200, 1980], "power": {"gpu": "H100-SXM"},
    "system": {"scheduler": "vllm_v0", "M_total": 380000, "block_size": 16, "B": 4096, "max_num_seqs": 256},
    "batch_time": {"d0_s": 0.0068, "d1_prefill_s": 3.5e-5, "d1_decode_s": 3.0e-5, "d2_kv_s": 3.8e-8},
}
A100 = {
    "name": "a100", "count": 2, "cost_per_hour": 1.8, "clocks_mhz": [810, 1410], "power": {"gpu": "A100-SXM"},
    "system": {"scheduler": "vllm_v0", "M_total": 130000, "block_size": 16, "B": 4096, "max_num_seqs": 256},
    "batch_time": {"d0_s": 0.0115, "d1_prefill_s": 9.5e-5, "d1_decode_s": 8.0e-5, "d2_kv_s": 8.2e-8},
}
CHAT = {"name": "chat", "rate": 10.0, "prefill_tokens": [100, 100], "decode_tokens": [50, 50], "ttft_s": 1.0, "tpot_s": 0.1}


def example_data() -> dict:
    """The example config as a dict, its preset paths made absolute (so a copy can live elsewhere)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    for pool in data["pools"]:
        for section in ("batch_time", "energy"):
            sec = pool.get(section) or {}
            if "preset" in sec:
                sec["preset"] = str((EXAMPLE.parent / sec["preset"]).resolve())
    return data


@pytest.fixture
def small():
    """A factory of small LP config dicts: pools and classes deep-copied, overrides merged."""

    def make(pools=(H100,), classes=(CHAT,), **top):
        data = {"name": "t", "pools": copy.deepcopy(list(pools)), "classes": copy.deepcopy(list(classes))}
        data.update(top)
        return data

    return make
