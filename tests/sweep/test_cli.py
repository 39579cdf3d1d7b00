"""The sweep command: one JSON object on stdout, figures and tables, dry run, exit codes."""

from __future__ import annotations

import argparse
import json

import pytest

from fluidserve.__main__ import main as fluidserve_main
from fluidserve.export.latex import tex_available
from fluidserve.sweep import cli, load_results


def run(argv):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.main(parser.parse_args(argv))


def test_json_report_figures_and_tables(write_sweep, tmp_path, capsys):
    path = write_sweep()
    out = tmp_path / "out"
    assert run(["--config", str(path), "--output-dir", str(out), "--json", "--latex", "--quiet", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    info = json.loads(captured.out)  # exactly one JSON object
    assert info["points"] == 6 and info["computed"] == 6 and info["skipped"] == 0 and info["errors"] == []
    assert info["dataset_dir"] == str(out / "t" / "results")
    names = {p.rsplit("/", 1)[1] for p in info["figures"]}
    assert {"vs_workload_arrival_rate.png", "vs_system_M_total.png", "heatmap_mean_e2e_sim.png",
            "vs_workload_arrival_rate_column.pdf", "vs_workload_arrival_rate_text.pdf"} <= names
    assert ("vs_system_M_total_column.pgf" in names) == tex_available()
    table = (out / "t" / "tables" / "points.tex").read_text()
    assert table.count(r"\\") == 7  # header + 6 points
    assert "mean E2E (s)" in table and r"\toprule" in table
    df = load_results(out / "t")
    assert len(df) == 6 and df.attrs["fields"] == ["workload.arrival_rate", "system.M_total"]
    # through the dispatcher, the same sweep is already complete
    assert fluidserve_main(["sweep", "--config", str(path), "--output-dir", str(out), "--json", "--quiet",
                            "--no-figures"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["computed"], again["skipped"]) == (0, 6)


def test_dry_run_lists_points_and_runs_nothing(write_sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["--config", str(write_sweep()), "--output-dir", str(out), "--dry-run", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["points"] == 6 and info["engines"] == ["sim"]
    assert not out.exists()


@pytest.mark.parametrize("argv, needle", [
    (["--executor", "local", "--address", "tcp://127.0.0.1:1"], "--address is only used with --executor dask"),
    (["--workers", "0"], "--workers must be >= 1"),
])
def test_bad_flags_exit_2(write_sweep, tmp_path, capsys, argv, needle):
    rc = run(["--config", str(write_sweep()), "--output-dir", str(tmp_path / "o"), "--quiet", *argv])
    assert rc == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_missing_sweep_file_exits_2(tmp_path, capsys):
    assert run(["--config", str(tmp_path / "none.yaml")]) == 2
    assert "sweep file not found" in capsys.readouterr().err
