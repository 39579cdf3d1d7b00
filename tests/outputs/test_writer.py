import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fluidserve.config import config_from_dict
from fluidserve.errors import InputError
from fluidserve.outputs import writer
from fluidserve.outputs.metrics import summarize
from fluidserve.outputs.writer import TABLES, make_experiment_dir, write_result

FILES = ["config.yaml", *TABLES, "summary.json", "summary.txt"]


def test_experiment_dir_name_and_uniqueness(tmp_path):
    now = time.mktime((2025, 3, 4, 5, 6, 7, 0, 0, -1))
    a = make_experiment_dir(tmp_path / "out", "my config/1", now=now)
    b = make_experiment_dir(tmp_path / "out", "my config/1", now=now)
    assert a.name == "20250304-050607_my_config_1"
    assert b.name == "20250304-050607_my_config_1-2"
    assert a.is_dir() and b.is_dir()
    m = writer.DIR_NAME_RE.match(b.name)
    assert m.group("stamp") == "20250304-050607" and m.group("name") == "my_config_1" and m.group("n") == "2"


def test_experiment_dirs_unique_under_concurrency(tmp_path):
    made, now = [], time.time()

    def work():
        made.append(make_experiment_dir(tmp_path, "same", now=now))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in made}) == 8


def test_output_dir_that_is_a_file_is_input_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        make_experiment_dir(f, "x")


def test_write_result_files_columns_and_roundtrip(tmp_path, result, make_config):
    cfg = make_config("hand")
    exp = make_experiment_dir(tmp_path, cfg.name)
    summary = write_result(result, exp, cfg)
    assert sorted(p.name for p in exp.iterdir()) == sorted(FILES)  # no temp files left
    for fname, (attr, columns) in TABLES.items():
        df = pd.read_csv(exp / fname)
        assert list(df.columns) == columns, fname
        assert len(df) == len(getattr(result, attr)), fname
    req = pd.read_csv(exp / "request_traces.csv")
    pd.testing.assert_frame_equal(req, result.requests, check_dtype=False)
    rej = pd.read_csv(exp / "rejected.csv")
    assert rej["reason"].tolist() == result.rejected["reason"].tolist()  # commas/quotes survive
    loaded = json.loads((exp / "summary.json").read_text())
    assert loaded == summary == {**summarize(result), "config_name": "hand", "status": "complete"}
    back = config_from_dict(yaml.safe_load((exp / "config.yaml").read_text()))
    assert back.to_yaml_dict() == cfg.to_yaml_dict()
    txt = (exp / "summary.txt").read_text()
    assert exp.name in txt and "completed 3" in txt


def test_write_without_pyarrow_matches(tmp_path, result, monkeypatch):
    fast = tmp_path / "fast"
    slow = tmp_path / "slow"
    fast.mkdir()
    slow.mkdir()
    write_result(result, fast)
    monkeypatch.setattr(writer, "_write_csv_arrow", lambda df, path: False)
    write_result(result, slow)
    assert not (slow / "config.yaml").exists()
    for fname in TABLES:
        pd.testing.assert_frame_equal(pd.read_csv(fast / fname), pd.read_csv(slow / fname), check_dtype=False)


def test_crash_while_writing_leaves_no_partial_file(tmp_path, monkeypatch):
    df = pd.DataFrame({"a": np.arange(1000)})
    target = tmp_path / "t.csv"
    target.write_text("old complete content\n")

    def half_then_crash(frame, path):
        Path(path).write_text("a\n1\n2\n")
        raise OSError("disk full")

    monkeypatch.setattr(writer, "_write_csv_arrow", half_then_crash)
    with pytest.raises(OSError, match="disk full"):
        writer.write_csv_atomic(df, target)
    assert target.read_text() == "old complete content\n"
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_write_result_with_the_real_simulator(tmp_path, make_config):
    from fluidserve.sim import simulate
    from fluidserve.workload import make_workload

    cfg = config_from_dict(
        {
            "name": "realsim",
            "seed": 3,
            "system": {"scheduler": "vllm_v0", "M_total": 512, "block_size": 16, "B": 256, "max_num_seqs": 16},
            "batch_time": {"d0_s": 0.005, "d1_prefill_s": 2e-5, "d1_decode_s": 3e-5, "d2_kv_s": 1e-7},
            "workload": {"scenario": "normal", "num_requests": 400, "arrival_rate": 40.0},
        }
    )
    res = simulate(cfg, make_workload(cfg))
    exp = make_experiment_dir(tmp_path, cfg.name)
    s = write_result(res, exp, cfg)
    assert s["arrived"] == 400
    assert s["completed"] + s["in_system"] + s["rejected"] == 400
    # tight memory: swapping happens and the two counts agree
    assert s["swap_count"] > 0
    assert s["swap_count"] == s["events_swap_out"] == len(pd.read_csv(exp / "events.csv").query("event == 'swap_out'"))
    snaps = pd.read_csv(exp / "batch_snapshots.csv")
    assert len(snaps) == res.num_steps == s["num_steps"]
    assert snaps["gpu_memory_used"].max() <= 512
    assert s["memory_utilization_max"] == pytest.approx(snaps["memory_utilization"].max())
    assert s["step_time_mean_s"] == pytest.approx(snaps["batch_duration"].mean())
    # throughput over first arrival -> last completion
    req = pd.read_csv(exp / "request_traces.csv")
    span = req["completion_time"].max() - req["arrival_time"].min()
    assert s["throughput_rps"] == pytest.approx(s["completed"] / span)
