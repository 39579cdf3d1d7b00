"""Step profiles rebuilt from token times equal the engine's own step records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.result import SNAPSHOT_COLUMNS
from fluidserve.serve.driver import token_times_offline
from fluidserve.serve.e2e import calibration_workload
from fluidserve.serve.streamprofile import drop_outliers, step_profile, tokens_from_times

TRUTH = BatchTimeModel(0.008, 4e-5, 3e-4, 5e-7)


def replay(n=200, seed=0):
    w = calibration_workload(n, seed=seed)
    engine = ReplicaEngine(TRUTH, scheduler="vllm_v0", M_total=10**6, block_size=16, B=8192, max_num_seqs=256)
    for i in range(n):
        engine.submit(i, w.arrival_time_s[i], w.prefill_tokens[i], w.decode_tokens[i])
    times = token_times_offline(engine)
    snaps = pd.DataFrame(engine.snapshots, columns=SNAPSHOT_COLUMNS)
    snaps["end"] = snaps["time"] + snaps["batch_duration"]
    return w, times, snaps


def test_profile_rows_equal_engine_steps():
    w, times, snaps = replay()
    prof = step_profile(tokens_from_times(times), dict(enumerate(w.prefill_tokens.tolist())))
    steps_with_tokens = snaps[snaps["decode_tokens"] > 0]
    assert len(prof) >= 0.85 * len(steps_with_tokens)
    merged = prof.merge(snaps, left_on=prof["step_end_s"].round(9), right_on=snaps["end"].round(9), suffixes=("", "_eng"))
    assert len(merged) == len(prof)  # every row is a real step end
    for col in ("prefill_tokens", "decode_tokens", "kv_tokens"):
        assert (merged[col] == merged[f"{col}_eng"]).all(), col
    assert np.allclose(merged["time_ms"], merged["batch_duration"] * 1000, atol=1e-9)
    assert set(prof["phase"]) == {"decode", "mixed"}


def test_noise_and_hiccups_are_handled():
    """Per-token jitter plus a few late step ends: outliers dropped, the fit stays within 3%."""
    from fluidserve.calibration.fit import fit_batch_time

    w, times, _ = replay(300, seed=2)
    rng = np.random.default_rng(0)
    ends = sorted({t for ts in times.values() for t in ts})
    late = {t: 0.05 for t in rng.choice(ends, 6, replace=False)}  # 50 ms stalls
    noisy = {r: [t + late.get(t, 0.0) + abs(rng.normal(0, 3e-4)) for t in ts] for r, ts in times.items()}
    prof = step_profile(tokens_from_times(noisy), dict(enumerate(w.prefill_tokens.tolist())))
    kept, dropped = drop_outliers(prof)
    assert dropped >= 6
    fitted = fit_batch_time(kept[["phase", "batch_size", "prefill_tokens", "decode_tokens", "kv_tokens", "time_ms"]]).model
    for name, true in TRUTH.to_dict().items():
        assert getattr(fitted, name) == pytest.approx(true, rel=0.03), name


def test_bad_token_tables():
    with pytest.raises(InputError, match="missing column"):
        step_profile(pd.DataFrame({"req_id": [0], "time": [0.0]}), {0: 5})
    with pytest.raises(InputError, match="no prompt length"):
        step_profile(pd.DataFrame({"req_id": [0, 0], "token_index": [0, 1], "time": [0.0, 0.01]}), {1: 5})
