"""Step profiler: grid, timing loop with energy, CSV, and the torch backend on CPU."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from fake_nvml import FakeNVML  # noqa: E402

from fluidserve.calibration import profiler  # noqa: E402
from fluidserve.calibration.power import PowerMonitor  # noqa: E402
from fluidserve.calibration.profiler import (  # noqa: E402
    PROFILE_COLUMNS, GridPoint, TimingSettings, build_grid, measure_point, run_profile, write_profile,
)
from fluidserve.errors import InputError, MissingDependencyError  # noqa: E402

TINY = {"layers": 2, "hidden": 64, "heads": 4, "kv_heads": 2, "intermediate": 128, "vocab": 100}


class SleepBackend:
    """A backend whose step sleeps a known time; fits points up to a KV capacity."""

    name = "sleep"
    meta = {"model": "m", "gpu": "g", "dtype": "d", "backend": "sleep", "layers": 1}

    def __init__(self, step_s=0.002, capacity=10_000):
        self.step_s, self.capacity, self.prepared, self.released = step_s, capacity, [], 0

    def fits(self, point):
        return point.kv_capacity_tokens <= self.capacity

    def prepare(self, point):
        self.prepared.append(point)
        return lambda: time.sleep(self.step_s)

    def release(self):
        self.released += 1

    def synchronize(self):
        pass

    def time_reps(self, step, reps):
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            step()
            out.append((time.perf_counter() - t0) * 1e3)
        return np.array(out)


@given(
    batch=st.lists(st.integers(1, 256), min_size=1, max_size=5, unique=True),
    ctx=st.lists(st.integers(1, 8192), min_size=1, max_size=5, unique=True),
    pre=st.lists(st.integers(1, 8192), max_size=4, unique=True),
)
@settings(max_examples=50, deadline=None)
def test_grid_rows_follow_the_batch_time_variables(batch, ctx, pre):
    points = build_grid(batch, ctx, pre)
    assert len(points) == len(batch) * len(ctx) + len(pre)
    for p in points:
        if p.phase == "decode":
            assert (p.prefill_tokens, p.decode_tokens, p.batch_size) == (0, p.decode_batch, p.decode_batch)
            assert p.kv_tokens == p.decode_batch * p.context_tokens
        else:
            assert (p.decode_tokens, p.kv_tokens, p.batch_size) == (0, 0, 1)


def test_grid_mixed_and_bad_values():
    (m,) = build_grid([], [], [], mixed=[(512, 8, 1024)])
    assert (m.phase, m.batch_size, m.prefill_tokens, m.decode_tokens, m.kv_tokens) == ("mixed", 9, 512, 8, 8192)
    assert m.kv_capacity_tokens == 8192 + 512
    with pytest.raises(InputError, match="batch size"):
        build_grid([0], [1], [])
    with pytest.raises(InputError, match="empty"):
        build_grid([], [], [])
    assert profiler.parse_mixed("512:8:1024, 256:2:64") == [(512, 8, 1024), (256, 2, 64)]
    with pytest.raises(InputError, match="--mixed"):
        profiler.parse_mixed("512:8")
    with pytest.raises(InputError, match="--batch-sizes"):
        profiler.parse_int_list("1,x", "--batch-sizes")


def test_measure_point_reps_time_and_energy_from_counter():
    nv = FakeNVML(power_w=(400.0,), sm_clock_mhz=1755)
    backend = SleepBackend(step_s=0.004)
    with PowerMonitor(0, period_s=0.01, nvml=nv) as pm:
        row = measure_point(backend, GridPoint("decode", 0, 8, 512), TimingSettings(2, 5, 100, 0.2), pm)
    assert row["kv_tokens"] == 8 * 512 and row["decode_tokens"] == 8 and row["prefill_tokens"] == 0
    assert row["time_ms"] == pytest.approx(4.0, abs=2.5)  # sleep() overshoots a little, never undershoots
    assert row["time_ms"] >= 4.0
    # reps chosen to fill min_time_s: 0.2 s / ~4 ms
    assert 20 <= row["reps"] <= 55
    # energy per step = counter difference / reps = 400 W x window / reps
    window = row["window_end_s"] - row["window_start_s"]
    assert row["avg_power_w"] == pytest.approx(400.0, rel=0.01)
    assert row["energy_j"] == pytest.approx(400.0 * window / row["reps"], rel=0.01)
    assert row["energy_j"] == pytest.approx(0.4 * row["time_ms"], rel=0.3)
    assert row["sm_clock_mhz"] == 1755
    assert backend.released == 1


def test_run_profile_skips_points_that_do_not_fit_and_writes_csv(tmp_path):
    points = build_grid([1, 4], [100, 1000], [64, 2048])
    df, skipped = run_profile(SleepBackend(0.0005, capacity=1000), points, TimingSettings(1, 2, 3, 0.0), progress=False)
    # 4 x 1000 decode and nothing else exceeds 1000 KV tokens... and the 2048-token prefill
    assert {(p.phase, p.decode_batch, p.context_tokens, p.prefill_tokens) for p in skipped} == {
        ("decode", 4, 1000, 0), ("prefill", 0, 0, 2048)
    }
    assert len(df) == len(points) - 2
    assert df["energy_j"].isna().all() and (df["reps"] == 2).all()
    path = write_profile(df, tmp_path / "p.csv")
    back = pd.read_csv(path)
    assert list(back.columns[: len(PROFILE_COLUMNS)]) == PROFILE_COLUMNS
    assert {"model", "gpu", "dtype", "context_tokens"} <= set(back.columns)
    dec = back[back["phase"] == "decode"]
    assert (dec["kv_tokens"] == dec["batch_size"] * dec["context_tokens"]).all()


def test_torch_backend_cpu_decode_matches_prefill():
    torch = pytest.importorskip("torch")
    from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend

    shape = DecoderShape.from_spec(TINY)
    assert shape.head_dim == 16 and shape.kv_bytes_per_token(2) == 2 * 2 * 2 * 16 * 2
    b = TorchBackend(shape, device="cpu", dtype="float32", kv_capacity_tokens=512)
    c = 12
    ids = torch.randint(0, 100, (c,))
    # prefill C tokens writes K/V of positions 0..C-1; decoding the last token against that
    # cache must give the same logits (RoPE, GQA grouping and cache layout agree)
    full = b.forward(ids, torch.arange(c), c, 0, 0)
    dec = b.forward(ids[-1:], torch.tensor([c - 1]), 0, 1, c)
    assert full.shape == (1, 100) and dec.shape == (1, 100)
    assert torch.allclose(full, dec, atol=1e-4)
    mixed = b.forward(torch.cat([ids[:5], ids[-1:]]), torch.cat([torch.arange(5), torch.tensor([c - 1])]), 5, 1, c)
    assert mixed.shape == (2, 100) and torch.allclose(mixed[1:], dec, atol=1e-4)


def test_torch_backend_rope_is_standard_rotate_half():
    torch = pytest.importorskip("torch")
    from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend

    b = TorchBackend(DecoderShape.from_spec(TINY), device="cpu", dtype="float32", kv_capacity_tokens=64)
    pos = torch.tensor([0, 3, 17])
    x = torch.randn(3, 6, 16)
    half = 8
    inv = 1.0 / (500000.0 ** (torch.arange(0, 16, 2).float() / 16))
    ang = pos[:, None].float() * inv[None, :]
    c, s_ = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    ref = torch.cat((x1 * c - x2 * s_, x2 * c + x1 * s_), dim=-1)
    got = b._rope(x, b.rope_cos[pos], b.rope_sin[pos])
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.allclose(got[0], x[0])  # position 0 is not rotated


def test_profile_cli_torch_cpu(tmp_path, capsys):
    pytest.importorskip("torch")
    parser = argparse.ArgumentParser()
    profiler.add_arguments(parser)
    args = parser.parse_args([
        "--model-spec", json.dumps(TINY), "--model", "tiny", "--device", "cpu", "--dtype", "float32",
        "--batch-sizes", "1,2,64", "--contexts", "8,16", "--prefill-tokens", "8,32", "--mixed", "8:2:16",
        "--warmup", "1", "--min-reps", "2", "--max-reps", "2", "--min-time-s", "0",
        "--output-dir", str(tmp_path), "--out", "prof.csv", "--json", "--no-progress",
    ])
    assert profiler.main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    df = pd.read_csv(tmp_path / "prof.csv")
    assert summary["rows"] == len(df) == 3 * 2 + 2 + 1
    assert summary["layers"] == 2 and summary["gpu"] == "cpu" and "power" not in summary
    assert list(df.columns[: len(PROFILE_COLUMNS)]) == PROFILE_COLUMNS
    assert (df["time_ms"] > 0).all() and (df["model"] == "tiny").all()
    dec = df[df["phase"] == "decode"]
    assert sorted(dec["kv_tokens"]) == sorted(b * c for b in (1, 2, 64) for c in (8, 16))
    pre = df[df["phase"] == "prefill"]
    assert (pre["kv_tokens"] == 0).all() and sorted(pre["prefill_tokens"]) == [8, 32]
    mix = df[df["phase"] == "mixed"].iloc[0]
    assert (mix["prefill_tokens"], mix["decode_tokens"], mix["kv_tokens"], mix["batch_size"]) == (8, 2, 32, 3)


def test_profile_cli_errors(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    profiler.add_arguments(parser)
    assert profiler.main(parser.parse_args(["--model-spec", "{not json", "--device", "cpu"])) == 2
    assert "--model-spec" in capsys.readouterr().err
    assert profiler.main(parser.parse_args(["--model-spec", '{"layers": 2}', "--device", "cpu"])) == 2
    assert "missing field" in capsys.readouterr().err
    assert profiler.main(parser.parse_args(["--batch-sizes", "0", "--model-spec", "{}"])) == 2


def test_vllm_backend_without_vllm_is_clear_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        from fluidserve.calibration.vllm_backend import VllmBackend

        with pytest.raises(MissingDependencyError, match="vllm"):
            VllmBackend("meta-llama/Llama-3.1-8B", build_grid([1], [16], []))
    else:
        pytest.skip("vllm is installed")
