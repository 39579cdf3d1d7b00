"""The `plan` command: JSON contract, files, resume, infeasible SLO and bad input exit 2."""

from __future__ import annotations

import argparse
import json

from fluidserve.plan import cli

from .conftest import CHAT


def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    rc = cli.main(parser.parse_args(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_json_contract_files_and_resume(write_plan, tmp_path, capsys):
    path = write_plan()
    outdir = tmp_path / "out"
    argv = ["--config", str(path), "--json", "--output-dir", str(outdir), "--no-progress"]
    rc, out, err = _run(argv, capsys)
    assert rc == 0, err
    d = json.loads(out)
    rec = d["recommended"]
    for key in ("gpus", "replicas", "tensor_parallel", "gpu_type", "meets_slo"):
        assert key in rec
    assert rec["meets_slo"] is True and rec["gpus"] == rec["replicas"] * rec["tensor_parallel"]
    assert isinstance(d["candidates"], list) and d["candidates"]
    # verified holds every simulated fleet with replicas, verdict and measured percentiles ...
    for v in d["verified"]:
        assert {"replicas", "meets_slo", "percentiles"} <= set(v)
        assert v["percentiles"]["chat"]["ttft_p99_s"] is not None
    # ... including the next smaller fleet of the recommended type, shown missing the SLO
    smaller = [v for v in d["verified"] if v["key"] == rec["key"] and v["replicas"] == rec["replicas"] - 1]
    assert smaller and smaller[0]["meets_slo"] is False
    assert rec["next_smaller_fleet"]["meets_slo"] is False
    # predicted vs verified, and the screen's error, for the recommended fleet
    assert rec["predicted"]["chat"]["ttft_p99_s"] > 0 and "ttft_p99_s" in rec["screen_error"]["chat"]
    for name in ("plan.json", "plan.md", "plan.tex", "screen.csv", "pareto.png", "pareto.pdf", "verified.jsonl"):
        assert (outdir / name).is_file(), name
    assert "\\toprule" in (outdir / "plan.tex").read_text()
    n_sims = d["timing"]["simulations"]
    assert n_sims >= 2
    # a rerun resumes every simulation from verified.jsonl and gives the same answer
    rc, out, err = _run(argv, capsys)
    d2 = json.loads(out)
    assert rc == 0 and d2["timing"]["simulations"] == 0 and d2["timing"]["simulations_resumed"] == n_sims
    assert d2["recommended"]["key"] == rec["key"] and d2["recommended"]["replicas"] == rec["replicas"]


def test_infeasible_slo_reports_closest_and_exits_2(write_plan, tmp_path, capsys):
    # 1 ms p99 TTFT: below one engine step (d0 = 10 ms), no fleet can meet it
    path = write_plan(classes=[dict(CHAT, slo={"ttft_p99_s": 0.001})])
    rc, out, err = _run(["--config", str(path), "--json", "--output-dir", str(tmp_path / "o"), "--no-progress"],
                        capsys)
    assert rc == 2
    d = json.loads(out)
    assert d["status"] == "infeasible" and d["recommended"] is None
    assert d["closest"]["binding"]["constraint"] == "ttft_p99_s"
    assert d["closest"]["binding"]["value"] > 0.001
    assert "infeasible" in err and "ttft_p99_s" in err.strip().splitlines()[-1]


def test_bad_config_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("traffic: {classes: []}\ncandidates: {model: Llama-3.1-8B, gpus: []}\n")
    rc, out, err = _run(["--config", str(path)], capsys)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "traffic.classes" in lines[0]
