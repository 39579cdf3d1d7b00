"""Bad input, table-driven: every case exits 2 with ONE error line naming the field/file/value.

Each row is (case id, files to write, argv, fragments the error line must contain). The
commands run in-process through ``python -m fluidserve``'s dispatcher; a case that used to hang
(alias bomb, 10^7 replicas, dt_out 1e-9) is guarded by the per-test timeout. Cases whose right
answer is not exit 2 (the fluid stage refused inside a successful run, strict JSON on disk,
``experiments list`` around a corrupt or unfinished experiment) follow the table.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from fluidserve.__main__ import main as fluidserve_main

ROOT = Path(__file__).resolve().parents[1]
# the seed's vLLM V0 config: the scheduler the fluid model follows (some cases below run it)
BASE = yaml.safe_load((ROOT / "config" / "seed_swapping.yaml").read_text())
BASE["workload"]["num_requests"] = 200


# the seed's semantics, which the scipy / jax / stepmap / quasistatic fluid backends follow
SEED_FLUID = {"system__scheduler": "vllm_v0", "system__enable_prefix_caching": False, "system__chunked_prefill": False}


def config(**patch) -> str:
    """config/seed_swapping.yaml (200 requests) with ``a__b=value`` patches, as YAML text."""
    data = json.loads(json.dumps(BASE))
    for dotted, value in patch.items():
        node = data
        keys = dotted.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return yaml.safe_dump(data)


def trace_config(path: str, **patch) -> str:
    return config(workload={"source": "trace", "trace": {"path": path, "format": "generic"}}, **patch)


def sweep(grid: dict) -> str:
    return yaml.safe_dump({"name": "s", "base": "cfg.yaml", "engines": "sim",
                           "axes": [{"field": "workload.arrival_rate", "grid": grid}]})


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")
)
PROFILE = "phase,batch_size,prefill_tokens,decode_tokens,kv_tokens,time_ms\n"
TRACE = "arrival_time,prefill_length,decode_length\n"
RUN = ["run", "--config", "cfg.yaml", "--no-figures", "--quiet", "--output-dir", "out"]

# (id, {file: text or bytes}, argv, fragments of the error line)
CASES = [
    ("seed-negative", {"cfg.yaml": config(seed=-1)}, RUN, ["seed", "-1"]),
    ("gen-seed-negative", {}, ["generate-requests", "--seed", "-1", "--output", "x.csv"], ["--seed", "-1"]),
    ("non-utf8-config", {"cfg.yaml": config().encode().replace(b"name: seed_swapping", b"name: s\xff")}, RUN,
     ["cfg.yaml", "not UTF-8", "0xff"]),
    ("num-requests-1e9", {"cfg.yaml": config(workload__num_requests=10**9)}, RUN,
     ["workload.num_requests", "1,000,000,000", "GiB", "limit is 10,000,000"]),
    ("num-requests-1e18", {"cfg.yaml": config(workload__num_requests=10**18)}, RUN,
     ["workload.num_requests", "GiB", "limit is 10,000,000"]),
    ("gen-num-requests-1e9", {}, ["generate-requests", "--num_requests", "1000000000", "--output", "x.csv"],
     ["workload.num_requests", "GiB", "limit is 10,000,000"]),
    ("sweep-grid-num-1e9", {"cfg.yaml": config(), "sw.yaml": sweep({"start": 10, "stop": 100, "num": 10**9})},
     ["sweep", "--config", "sw.yaml", "--dry-run"], ["workload.arrival_rate", "1,000,000,000", "limit is 100,000"]),
    ("sweep-grid-nan", {"cfg.yaml": config(), "sw.yaml": sweep({"start": float("nan"), "stop": 100, "num": 3})},
     ["sweep", "--config", "sw.yaml", "--dry-run"], ["workload.arrival_rate", "finite", "nan"]),
    ("fluid-bin-1e-9", {"cfg.yaml": config(fluid__bin_s=1e-9)}, RUN, ["fluid.bin_s", "1e-09", "GiB", "limit"]),
    ("fluid-dt-out-1e-9", {"cfg.yaml": config(fluid__dt_out_s=1e-9)}, RUN, ["fluid.dt_out_s", "1e-09", "limit"]),
    ("fluid-method-bogus", {"cfg.yaml": config(fluid__method="BOGUS")}, RUN, ["fluid.method", "BOGUS", "RK45"]),
    ("crosscheck-dt-out-negative", {"cfg.yaml": config()},
     ["crosscheck", "--config", "cfg.yaml", "--dt-out", "-1", "--scales", "1"], ["--dt-out", "-1"]),
    ("fit-out-is-dir", {"p.csv": PROFILE + "decode,1,0,1,100,5\n", "d/x": ""},
     ["calibrate", "fit", "p.csv", "--out", "d"], ["--out", "d", "directory"]),
    ("gen-output-is-dir", {"d/x": ""}, ["generate-requests", "--num_requests", "5", "--output", "d"],
     ["--output", "d", "directory"]),
    ("yaml-alias-bomb", {"cfg.yaml": ALIAS_BOMB}, RUN, ["cfg.yaml", "alias", "limit"]),
    ("yaml-deep-nesting", {"cfg.yaml": "a: " + "[" * 100_000}, RUN, ["cfg.yaml", "nested too deeply"]),
    ("yaml-duplicate-key", {"cfg.yaml": config() + "seed: 3\n"}, RUN, ["cfg.yaml", "duplicate key 'seed'", "line"]),
    ("replicas-1e7", {"cfg.yaml": config(cluster__replicas=10**7)}, RUN, ["cluster.replicas", "10,000,000", "4,096"]),
    ("m-total-bool", {"cfg.yaml": config(system__M_total=True)}, RUN, ["system.M_total", "boolean"]),
    ("m-total-below-block", {"cfg.yaml": config(system__M_total=8)}, RUN, ["system.M_total", "8", "block"]),
    ("m-total-below-every-request", {"t.csv": TRACE + "0,100,20\n1,200,30\n",
                                     "cfg.yaml": trace_config("t.csv", system__M_total=64)}, RUN,
     ["system.M_total", "64", "smallest request", "120"]),
    ("weights-nan", {"cfg.yaml": config(cluster={"replicas": 2, "router": "weighted", "weights": [float("nan"), 1.0]})},
     RUN, ["cluster.weights", "nan"]),
    ("weights-inf", {"cfg.yaml": config(cluster={"replicas": 2, "router": "weighted", "weights": [float("inf"), 1.0]})},
     RUN, ["cluster.weights", "inf"]),
    ("arrival-rate-1e-300", {"cfg.yaml": config(workload__arrival_rate=1e-300)}, RUN,
     ["workload.arrival_rate", "1e-300", "limit"]),
    ("fit-phase-bogus", {"p.csv": PROFILE + "decode,1,0,1,100,5\nbogus,1,0,1,100,5\n"},
     ["calibrate", "fit", "p.csv"], ["p.csv", "row 2", "phase", "bogus"]),
    ("trace-prefill-1e30", {"t.csv": TRACE + "0,10,10\n1,1e30,5\n", "cfg.yaml": trace_config("t.csv")}, RUN,
     ["t.csv", "row 2", "prefill_length", "limit"]),
    ("set-num-requests-on-trace", {"t.csv": TRACE + "0,10,10\n1,20,5\n", "cfg.yaml": trace_config("t.csv")},
     RUN + ["--set", "workload.num_requests=100"], ["workload.num_requests", "workload.trace.max_requests"]),
]


def write_files(tmp_path: Path, files: dict) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())


def run_cli(argv: list[str]) -> int:
    try:
        return fluidserve_main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("files", "argv", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_naming_it(tmp_path, monkeypatch, capsys, files, argv, fragments):
    write_files(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert len(errors[0]) < 600  # one readable line, not a dump of the input


def run_json(tmp_path, monkeypatch, capsys, files: dict, *extra) -> tuple[dict, str]:
    write_files(tmp_path, files)
    monkeypatch.chdir(tmp_path)
    assert run_cli(RUN + ["--json", *extra]) == 0
    cap = capsys.readouterr()
    return json.loads(cap.out), cap.err


@pytest.mark.parametrize(
    ("patch", "named"),
    [
        # 200 requests arrive in ~1 s: one 10 s rate bin would spread them over 10 s (the fluid
        # model then gave the same E2E at any rate); refused, the simulator's results are kept
        ({}, "fluid.bin_s"),
        # a horizon before the last arrival made throughput_rel_err read 1.5e15
        ({"fluid__bin_s": 0.1, "fluid__horizon_s": 1e-6}, "fluid.horizon_s"),
    ],
)
def test_fluid_stage_refuses_windows_it_cannot_model(tmp_path, monkeypatch, capsys, patch, named):
    # the binned (seed-semantics) scipy backend; the step-clock backend uses the arrivals themselves
    cfg = config(**patch, **SEED_FLUID, fluid__backend="scipy")
    summary, err = run_json(tmp_path, monkeypatch, capsys, {"cfg.yaml": cfg})
    assert summary["completed"] == 200 and summary["status"] == "complete"
    assert summary["fluid"]["status"] == "skipped"
    assert named in summary["fluid"]["reason"] and named in err


def test_fluid_runs_when_bins_fit_the_window(tmp_path, monkeypatch, capsys):
    # system.scheduler vllm_v0: the fluid backends of this test follow the seed's semantics
    cfg = config(fluid__bin_s=0.1, **SEED_FLUID)
    summary, _ = run_json(tmp_path, monkeypatch, capsys, {"cfg.yaml": cfg})
    assert summary["fluid"]["status"] == "ok"


def test_one_request_trace_writes_strict_json(tmp_path, monkeypatch, capsys):
    files = {"t.csv": TRACE + "0,10,10\n", "cfg.yaml": trace_config("t.csv")}
    summary, _ = run_json(tmp_path, monkeypatch, capsys, files)

    def refuse(constant):
        raise AssertionError(f"summary.json holds a bare {constant}")

    on_disk = json.loads((Path(summary["experiment_dir"]) / "summary.json").read_text(), parse_constant=refuse)
    assert on_disk["completed"] == 1 and on_disk["status"] == "complete"


def test_some_requests_too_large_warns_with_the_count(tmp_path, monkeypatch, capsys):
    files = {"t.csv": TRACE + "0,10,10\n1,100,100\n2,10,20\n", "cfg.yaml": trace_config("t.csv", system__M_total=160)}
    summary, err = run_json(tmp_path, monkeypatch, capsys, files, "--no-fluid")
    assert summary["rejected"] == 1 and summary["completed"] == 2
    assert "warning: 1 of 3 requests will be rejected" in err and "system.M_total = 160" in err and "largest request 200" in err


def test_experiments_list_marks_corrupt_and_incomplete(tmp_path, capsys):
    out = tmp_path / "res"
    good, bad, stopped = (out / f"20260101-00000{i}_{n}" for i, n in enumerate(("good", "bad", "stopped")))
    for d in (good, bad, stopped):
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(f"name: {d.name.split('_')[1]}\n")
    (good / "summary.json").write_text(json.dumps({"arrived": 5, "status": "complete"}))
    (bad / "summary.json").write_text('{"arrived": 5,')  # torn by hand
    (stopped / "summary.json").write_text(json.dumps({"arrived": 7, "status": "incomplete"}))
    assert run_cli(["experiments", "list", "--output-dir", str(out), "--json"]) == 0
    rows = {r["config"]: r for r in json.loads(capsys.readouterr().out)["experiments"]}
    assert rows["good"]["status"] == "complete" and rows["good"]["requests"] == 5
    assert rows["bad"]["status"].startswith("corrupt") and "summary.json" in rows["bad"]["status"]
    assert rows["stopped"]["status"] == "incomplete" and rows["stopped"]["requests"] == 7
    assert run_cli(["experiments", "list", "--output-dir", str(out)]) == 0
    cap = capsys.readouterr()
    assert "[corrupt]" in cap.out and "[incomplete]" in cap.out and "good" in cap.out
    assert "warning:" in cap.err and "summary.json" in cap.err


def test_crosscheck_uses_the_configs_stepmap_backend(tmp_path):
    """The README says crosscheck uses the config's backend; a stepmap config used to be refused."""
    from fluidserve.config import config_from_dict
    from fluidserve.fluid import crosscheck, scaling
    from fluidserve.workload import make_workload

    cfg = config_from_dict(yaml.safe_load(config(fluid__backend="stepmap", **SEED_FLUID)))
    scenario = crosscheck.scenario_config(cfg, "underloaded")
    reference = scaling.reference_workload(scenario, make_workload(scenario))
    fres = crosscheck.solve_reference(scenario, reference, None)
    assert fres.summary["backend"] == "stepmap"
