"""experiments list/show/compare/archive/export on directories made in tmp_path.

Ages for ``archive`` come from the timestamp in the directory name (make_experiment_dir's
``now``), which is what the command uses; mtimes are left alone.
"""

import argparse
import json
import tarfile
import time

import pytest

from fluidserve.errors import InputError
from fluidserve.outputs import experiments as ex
from fluidserve.outputs.writer import make_experiment_dir, write_result

DAY = 86400.0


def parse(*argv):
    parser = argparse.ArgumentParser()
    ex.add_arguments(parser)
    return parser.parse_args(list(argv))


def run(capsys, *argv):
    rc = ex.main(parse(*argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def out_dir(tmp_path, result, make_config):
    """Three experiments: 'old' (10 days ago), 'fast' and 'slow' (now); 'slow' has its
    requests' completion times doubled, so its throughput halves relative to 'fast'."""
    root = tmp_path / "results"
    now = time.time()
    for name, age_days in (("old", 10), ("fast", 0), ("slow", 0)):
        res = result
        if name == "slow":
            res = type(result)(**{**result.__dict__})
            req = result.requests.copy()
            req["completion_time"] = req["arrival_time"] + 2 * req["total_delay"]
            req["total_delay"] = 2 * req["total_delay"]
            res.requests = req
        exp = make_experiment_dir(root, name, now=now - age_days * DAY)
        cfg = make_config(name, arrival_rate=5.0 if name != "slow" else 7.5)
        write_result(res, exp, cfg)
    return root


def names(root):
    return sorted(p.name for p in root.iterdir())


def test_list_table_and_json(out_dir, capsys):
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "list")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "date", "config", "requests"]
    assert len(lines) == 2 + 3
    assert lines[2].split("_", 1)[1].startswith("old")  # oldest first
    rc, out, _ = run(capsys, "list", "--output-dir", str(out_dir), "--json")
    data = json.loads(out)
    rows = {r["config"]: r for r in data["experiments"]}
    assert set(rows) == {"old", "fast", "slow"}
    assert rows["fast"]["requests"] == 6
    assert rows["fast"]["throughput_rps"] == pytest.approx(1.2)
    assert rows["fast"]["total_delay_p95_s"] == pytest.approx(1.95)
    assert rows["slow"]["total_delay_p95_s"] == pytest.approx(3.9)


def test_show_text_json_prefix_and_latest(out_dir, capsys):
    fast = next(n for n in names(out_dir) if n.endswith("_fast"))
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "show", fast)
    assert rc == 0 and out == (out_dir / fast / "summary.txt").read_text()
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "--json", "show", fast)
    s = json.loads(out)
    assert s["experiment"] == fast and s["completed"] == 3 and s["config_name"] == "fast"
    # a unique prefix, a path and 'latest' resolve too
    assert ex.resolve(out_dir, fast[:-1]).name == fast
    assert ex.resolve(out_dir, str(out_dir / fast)).name == fast
    assert ex.resolve(out_dir, "latest").name.split("_", 1)[1] in ("fast", "slow")


def test_compare_relative_differences_and_config_diff(out_dir, capsys):
    fast = next(n for n in names(out_dir) if n.endswith("_fast"))
    slow = next(n for n in names(out_dir) if n.endswith("_slow"))
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "compare", fast, slow, "--json")
    assert rc == 0
    cmp = json.loads(out)
    m = cmp["metrics"]
    # last completion moves from 2.5 s to 0.5 + 2 x 2.0 = 4.5 s: 3 / 4.5 req/s
    assert m["throughput_rps"]["a"] == pytest.approx(1.2)
    assert m["throughput_rps"]["b"] == pytest.approx(3 / 4.5)
    assert m["throughput_rps"]["rel_diff"] == pytest.approx(-4 / 9)
    assert m["total_delay_mean"]["diff"] == pytest.approx(1.5)
    assert m["total_delay_mean"]["rel_diff"] == pytest.approx(1.0)
    assert m["completed"]["rel_diff"] == 0.0
    assert cmp["config_diff"] == {
        "name": {"a": "fast", "b": "slow"},
        "workload.arrival_rate": {"a": 5.0, "b": 7.5},
    }
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "compare", fast, slow)
    row = next(l for l in out.splitlines() if l.startswith("throughput_rps"))
    assert row.split()[-1] == "-44.4%"
    assert "workload.arrival_rate: 5.0 -> 7.5" in out


def test_archive_moves_only_old_experiments(out_dir, capsys):
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "archive", "--older-than", "5", "--dry-run")
    assert rc == 0 and "would move" in out and not (out_dir / "archive").exists()
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "--json", "archive", "--older-than", "5")
    moved = json.loads(out)["archived"]
    assert [m["name"].split("_", 1)[1] for m in moved] == ["old"]
    assert sorted(n.split("_", 1)[-1] for n in names(out_dir)) == ["archive", "fast", "slow"]
    assert [p.name.split("_", 1)[1] for p in (out_dir / "archive").iterdir()] == ["old"]
    # archived ones still resolve, and 'list --all' shows them
    assert ex.resolve(out_dir, moved[0]["name"]).archived
    rows = ex.list_experiments(out_dir, include_archive=True)
    assert sum(r["archived"] for r in rows) == 1 and len(rows) == 3
    # nothing left that is older than 5 days; a negative age is refused
    assert ex.archive_experiments(out_dir, 5) == []
    rc, _, err = run(capsys, "--output-dir", str(out_dir), "archive", "--older-than", "-1")
    assert rc == 2 and err.count("\n") == 1 and "--older-than" in err


def test_archive_falls_back_to_mtime_for_unstamped_dirs(out_dir):
    import os

    legacy = out_dir / "handmade"
    legacy.mkdir()
    (legacy / "summary.json").write_text("{}")
    os.utime(legacy, (time.time() - 30 * DAY, time.time() - 30 * DAY))
    moved = ex.archive_experiments(out_dir, 20)
    assert [m["name"] for m in moved] == ["handmade"]


def test_export_tarball(out_dir, tmp_path, capsys):
    fast = next(n for n in names(out_dir) if n.endswith("_fast"))
    dest = tmp_path / "exp.tar.gz"
    rc, out, _ = run(capsys, "--output-dir", str(out_dir), "export", fast, str(dest), "--json")
    assert rc == 0 and json.loads(out)["file"] == str(dest)
    with tarfile.open(dest, "r:gz") as tar:
        members = set(tar.getnames())
        assert f"{fast}/summary.json" in members and f"{fast}/request_traces.csv" in members
        assert json.load(tar.extractfile(f"{fast}/summary.json"))["config_name"] == "fast"
    # refusing to overwrite, and a wrong suffix, are one-line errors
    rc, _, err = run(capsys, "--output-dir", str(out_dir), "export", fast, str(dest))
    assert rc == 2 and "exists" in err
    rc, _, err = run(capsys, "--output-dir", str(out_dir), "export", fast, str(tmp_path / "x.zip"))
    assert rc == 2 and ".tar.gz" in err


def test_unknown_name_lists_nearest(out_dir, capsys):
    fast = next(n for n in names(out_dir) if n.endswith("_fast"))
    typo = fast.replace("fast", "fats")
    with pytest.raises(InputError, match=f"not found.*nearest: {fast}"):
        ex.resolve(out_dir, typo)
    rc, out, err = run(capsys, "--output-dir", str(out_dir), "show", typo)
    assert rc == 2 and out == "" and err.startswith("error: experiment") and err.count("\n") == 1
    with pytest.raises(InputError, match="ambiguous"):
        ex.resolve(out_dir, fast[:8])


def test_missing_output_dir_is_input_error(tmp_path, capsys):
    rc, _, err = run(capsys, "--output-dir", str(tmp_path / "nope"), "list")
    assert rc == 2 and "does not exist" in err


def test_dispatcher_knows_the_command(out_dir, capsys):
    from fluidserve.__main__ import main

    assert main(["experiments", "--output-dir", str(out_dir), "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["experiments"]) == 3
