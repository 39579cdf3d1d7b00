"""Fixtures of the harness tests: a small config, a request trace, a two-GPU fake NVML."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

for _mod in ("fastapi", "uvicorn", "httpx"):
    pytest.importorskip(_mod)

REPO = Path(__file__).resolve().parents[2]
NVML_STANDIN = Path(__file__).with_name("two_gpu_nvml.py")

# H100-like coefficients of config/default.yaml; a KV cache that never preempts
CONFIG = {
    "name": "harness-test",
    "seed": 3,
    "system": {"M_total": 200000, "block_size": 16, "B": 4096, "max_num_seqs": 64, "kv_bytes_per_token": 131072},
    "batch_time": {"d0_s": 0.0068, "d1_prefill_s": 3.5e-5, "d1_decode_s": 3.0e-5, "d2_kv_s": 3.8e-8},
    "workload": {"source": "synthetic", "scenario": "normal", "num_requests": 20},
}


def write_requests(path: Path, n: int, seed: int, mean_gap_s: float = 0.04, decode=(4, 12)) -> Path:
    """n requests: Poisson arrivals, prompts of 600-1600 tokens (prefill steps of 28-63 ms)."""
    rng = np.random.default_rng(seed)
    a = np.cumsum(rng.exponential(mean_gap_s, n))
    pd.DataFrame({"arrival_time": a - a[0], "prefill_length": rng.integers(600, 1600, n),
                  "decode_length": rng.integers(decode[0], decode[1], n)}).to_csv(path, index=False)
    return path


@pytest.fixture
def harness_files(tmp_path):
    cfg = tmp_path / "harness.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    return {"config": cfg, "requests": write_requests(tmp_path / "requests.csv", 8, seed=2), "tmp": tmp_path}


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fluidserve", "harness", *args]


def harness_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "PYTHONUNBUFFERED": "1"}
