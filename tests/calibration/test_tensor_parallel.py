"""Tensor-parallel torch decoder: TP=2 and TP=4 over gloo compute what TP=1 computes.

The reference is the unsharded decoder in one process (the same seeded full-size weights):
sharding the QKV, gate/up and LM-head projections by columns and the output/down projections by
rows, with an all-reduce after each row-parallel projection, must not change the logits beyond
fp32 rounding. Also the lock-step profile over gloo and the all-reduce sweep on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend  # noqa: E402
from fluidserve.calibration import tp_profile  # noqa: E402
from fluidserve.errors import InputError  # noqa: E402

TINY = {"layers": 2, "hidden": 64, "heads": 8, "kv_heads": 4, "head_dim": 16, "intermediate": 96, "vocab": 128}
# (prompt tokens T, decoding sequences B, context C): a prefill, a decode, a mixed step
STEPS = [(12, 0, 0), (0, 3, 20), (5, 2, 9)]
ROOT = Path(__file__).resolve().parents[2]


def _reference(steps):
    b = TorchBackend(DecoderShape.from_spec(TINY), device="cpu", dtype="float32", kv_capacity_tokens=4096,
                     max_positions=1024, seed=3, reference_init=True)
    gen = torch.Generator().manual_seed(11)
    outs = []
    for T, B, C in steps:
        ids = torch.randint(0, TINY["vocab"], (T + B,), generator=gen)
        positions = torch.cat([torch.arange(T), torch.full((B,), max(C - 1, 0), dtype=torch.long)])
        b.kv_cache.zero_()  # each step on an empty cache: the flat cache layout depends on the TP degree
        outs.append(b.forward(ids, positions, T, B, C))
    return outs


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_decoder_matches_unsharded(tmp_path, world):
    ref = _reference(STEPS)
    out = tmp_path / "tp.pt"
    tp_profile.spawn_reference(world, TINY, STEPS, str(out))
    got = torch.load(out)
    assert len(got) == len(ref)
    for (T, B, C), r, g in zip(STEPS, ref, got):
        assert g.shape == r.shape == ((1 if T else 0) + B, TINY["vocab"])
        rel = ((g - r).norm() / r.norm()).item()
        assert rel < 1e-5, f"step T={T} B={B} C={C}: relative error {rel:.2e}"
        # and the computation is not trivially zero / constant
        assert r.std().item() > 1e-3


def test_shard_dimensions_and_refusal():
    shape = DecoderShape.from_spec(TINY)
    local = shape.shard(4)
    assert (local.heads, local.kv_heads, local.intermediate, local.vocab, local.hidden) == (2, 1, 24, 32, 64)
    with pytest.raises(InputError, match="kv_heads"):
        shape.shard(8)
    assert not tp_profile.shard_feasible(TINY, 8)
    # Llama-3.1-70B: 64 heads, 8 KV heads, 28672 intermediate, 128256 vocab -> TP 2, 4, 8 all shard
    l70 = {"layers": 80, "hidden": 8192, "heads": 64, "kv_heads": 8, "intermediate": 28672, "vocab": 128256}
    assert all(tp_profile.shard_feasible(l70, tp) for tp in (2, 4, 8))
    # one rank's weights at TP=4 are a quarter of the layer weights (embedding aside)
    per_rank = DecoderShape.from_spec(l70).shard(4)
    full_layer = 8192 * (64 + 16) * 128 + 64 * 128 * 8192 + 3 * 8192 * 28672
    rank_layer = 8192 * (16 + 4) * 128 + 16 * 128 * 8192 + 3 * 8192 * 7168
    assert rank_layer * 4 == full_layer
    assert per_rank.heads * 4 == 64


def test_no_multicast_env():
    env = tp_profile.set_no_multicast_env({})
    assert env == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def test_tp_profile_cli_on_cpu_gloo(tmp_path):
    """The profiler's --tensor-parallel 2 path end to end on the CPU: rows, the TP column, the sweep."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    cmd = [sys.executable, "-m", "fluidserve", "calibrate", "profile", "--backend", "torch", "--model-spec", str(spec),
           "--device", "cpu", "--dtype", "float32", "--tensor-parallel", "2", "--batch-sizes", "1,4",
           "--contexts", "16", "--prefill-tokens", "8", "--mixed", "4:2:8", "--warmup", "1", "--min-reps", "2",
           "--max-reps", "3", "--min-time-s", "0", "--allreduce-tokens", "1,16", "--output-dir", str(tmp_path),
           "--out", "tp2.csv", "--json", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["rows"] == 4 and summary["tensor_parallel"] == 2
    df = pd.read_csv(tmp_path / "tp2.csv")
    assert list(df["phase"]) == ["decode", "decode", "prefill", "mixed"]
    assert (df["tensor_parallel"] == 2).all() and (df["time_ms"] > 0).all()
    ar = pd.read_csv(tmp_path / "allreduce.csv")
    assert list(ar["tokens"]) == [1, 16]
    assert list(ar["bytes"]) == [1 * 64 * 4, 16 * 64 * 4]  # float32 activations of hidden 64
    assert (ar["time_us"] > 0).all()


def test_tp_profile_bad_degree_is_one_line(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(TINY))
    cmd = [sys.executable, "-m", "fluidserve", "calibrate", "profile", "--backend", "torch", "--model-spec", str(spec),
           "--device", "cpu", "--tensor-parallel", "3", "--batch-sizes", "1", "--contexts", "8", "--prefill-tokens", ""]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "tensor_parallel=3" in lines[0] and "heads" in lines[0]
