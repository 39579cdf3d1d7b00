"""The generate-requests command."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from fluidserve.__main__ import main as fluidserve_main
from fluidserve.workload import read_requests_csv, synthetic_workload
from fluidserve.workload import cli


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args(argv))


def test_writes_csv_that_reads_back_identically(tmp_path, capsys):
    out = tmp_path / "req.csv"
    rc = run(["--num_requests", "500", "--arrival_rate", "4", "--scenario", "heavy", "--seed", "3",
              "--arrival-process", "gamma", "--gamma-cv", "2.5", "--output", str(out), "--json"])
    assert rc == 0
    info = json.loads(capsys.readouterr().out)
    expected = synthetic_workload("heavy", 500, seed=3, arrival_rate=4.0, arrival_process="gamma", gamma_cv=2.5)
    back = read_requests_csv(out)
    for name in ("arrival_time_s", "prefill_tokens", "decode_tokens", "priority"):
        assert np.array_equal(getattr(back, name), getattr(expected, name)), name
    assert info == {
        "path": str(out),
        "num_requests": 500,
        "mean_rate": pytest.approx(expected.mean_rate, rel=1e-12),
        "mean_prefill": pytest.approx(expected.prefill_tokens.mean()),
        "mean_decode": pytest.approx(expected.decode_tokens.mean()),
    }
    assert info["mean_rate"] == pytest.approx(4.0, rel=0.3)


def test_dash_spellings_output_dir_and_determinism(tmp_path, capsys):
    argv = ["--num-requests", "200", "--arrival-rate", "2", "--scenario", "bursty", "--seed", "5",
            "--output-dir", str(tmp_path), "--output", "a.csv"]
    assert run(argv) == 0
    assert run(argv[:-1] + ["b.csv"]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert "wrote 200 requests" in capsys.readouterr().out
    assert run(argv[:7] + ["6", "--output-dir", str(tmp_path), "--output", "c.csv"]) == 0
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_config_workload_section_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "seed: 11\nsystem: {M_total: 4096}\nbatch_time: {d0_s: 0.01, d1_s: 1.0e-4}\n"
        "workload: {scenario: heavy, num_requests: 300, arrival_rate: 7.0}\n"
    )
    out = tmp_path / "r.csv"
    assert run(["--config", str(cfg), "--num-requests", "100", "--output", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    expected = synthetic_workload("heavy", 100, seed=11, arrival_rate=7.0)
    assert info["num_requests"] == 100
    assert np.array_equal(read_requests_csv(out).arrival_time_s, expected.arrival_time_s)


def test_config_with_trace_source_converts_it(tmp_path, capsys):
    (tmp_path / "b.csv").write_text(
        "Timestamp,Model,Request tokens,Response tokens\n0,x,5,3\n1,x,6,0\n4,x,7,2\n"
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "system: {M_total: 4096}\nbatch_time: {d0_s: 0.01, d1_s: 1.0e-4}\n"
        "workload: {source: trace, trace: {path: b.csv, format: burstgpt, rate_scale: 2.0}}\n"
    )
    out = tmp_path / "r.csv"
    assert run(["--config", str(cfg), "--output", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_requests"] == 2 and info["mean_rate"] == pytest.approx(0.5)
    back = read_requests_csv(out)
    assert back.arrival_time_s.tolist() == [0.0, 2.0] and back.prefill_tokens.tolist() == [5, 7]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--arrival_rate", "-1"], "arrival_rate"),
        (["--gamma-cv", "0.5", "--arrival-process", "gamma"], "gamma_cv"),
        (["--num_requests", "0"], "num_requests"),
        (["--config", "missing.yaml"], "config file not found: missing.yaml"),
    ],
)
def test_bad_input_exit_code_2_one_line(tmp_path, capsys, argv, words):
    rc = run(argv + ["--output", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert words in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "x.csv").exists()


def test_bad_trace_through_config_exit_2(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("arrival_time,prefill_length,decode_length\n0,5,3\n1,-2,3\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "system: {M_total: 4096}\nbatch_time: {d0_s: 0.01, d1_s: 1.0e-4}\n"
        "workload: {source: trace, trace: {path: t.csv}}\n"
    )
    assert run(["--config", str(cfg), "--output", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "t.csv row 2: prefill_length is -2, must be >= 1" in err and err.count("\n") == 1


def test_dispatcher_runs_generate_requests(tmp_path, capsys):
    out = tmp_path / "d.csv"
    rc = fluidserve_main(["generate-requests", "--num_requests", "50", "--output", str(out), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["num_requests"] == 50
    assert len(read_requests_csv(out)) == 50
