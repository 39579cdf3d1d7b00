"""`calibrate fit` and `calibrate roofline` commands."""

import argparse
import json

import pytest

from fluidserve.__main__ import main as fluidserve_main
from fluidserve.batch_time import BatchTimeModel
from fluidserve.calibration import cli, fit, roofline

from .test_fit import TRUE, synthetic_profile


def run(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return module.main(parser.parse_args(argv))


@pytest.fixture
def profile_csv(tmp_path):
    path = tmp_path / "profile.csv"
    synthetic_profile(noise=0.01, seed=11).to_csv(path, index=False)
    return path


def test_fit_json_is_one_object(profile_csv, tmp_path, capsys):
    rc = run(fit, [str(profile_csv), "--json", "--output-dir", str(tmp_path / "out"), "--out", str(tmp_path / "p.yaml")])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("\n") == 1
    data = json.loads(out)
    for key in ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s", "mape", "ci", "max_error", "two_param"):
        assert key in data
    assert data["d2_kv_s"] == pytest.approx(TRUE.d2_kv_s, rel=0.2)
    assert data["ci"]["d0_s"][0] < TRUE.d0_s < data["ci"]["d0_s"][1]
    assert 0 < data["mape"] < 0.02
    assert set(data["two_param"]) >= {"d0_s", "d1_s", "mape", "max_error"}
    assert data["two_param"]["mape"] > 3 * data["mape"]
    assert (tmp_path / "out" / "fit_residuals.png").stat().st_size > 10_000
    assert BatchTimeModel.from_yaml(tmp_path / "p.yaml").d0_s == pytest.approx(data["d0_s"])


def test_fit_table_output(profile_csv, capsys):
    assert run(fit, [str(profile_csv)]) == 0
    out = capsys.readouterr().out
    assert "four-coefficient model" in out and "two-parameter model" in out and "MAPE" in out


def test_decode_only_profile_fills_prefill_from_roofline(tmp_path, capsys):
    path = tmp_path / "decode.csv"
    synthetic_profile(noise=0.01, seed=2, prefill=False, mixed=False).to_csv(path, index=False)
    assert run(fit, [str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["d1_prefill_s"] is None and data["unidentified"] == ["d1_prefill_s"]
    assert data["ci"]["d1_prefill_s"] is None
    assert any("d1_prefill_s not identified" in n for n in data["notes"])
    # without a fill the preset is refused; with --gpu/--model it comes from the roofline
    assert run(fit, [str(path), "--json", "--out", str(tmp_path / "p.yaml")]) == 2
    capsys.readouterr()
    assert run(fit, [str(path), "--json", "--gpu", "H100", "--model", "Llama-3.1-8B", "--out", str(tmp_path / "p.yaml")]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = roofline.predict_batch_time("H100", "Llama-3.1-8B").d1_prefill_s
    assert data["d1_prefill_s"] == pytest.approx(expected)
    assert data["filled"] == {"d1_prefill_s": pytest.approx(expected)}
    assert BatchTimeModel.from_yaml(tmp_path / "p.yaml").d1_prefill_s == pytest.approx(expected)


def test_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    df = synthetic_profile()
    df.drop(columns=["time_ms"]).to_csv(bad, index=False)
    assert run(fit, [str(bad), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "missing column(s) time_ms" in err and err.count("\n") == 1
    assert run(fit, [str(tmp_path / "missing.csv")]) == 2
    assert fluidserve_main(["calibrate", "fit", str(bad)]) == 2
    with pytest.raises(SystemExit) as exc:  # bad flag value: argparse exits 2
        fluidserve_main(["calibrate", "fit", str(bad), "--phase", "warmup"])
    assert exc.value.code == 2


def test_dispatcher_runs_fit_and_roofline(profile_csv, tmp_path, capsys):
    assert fluidserve_main(["calibrate", "fit", str(profile_csv), "--phase", "decode", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["phase"] == "decode" and data["rows"] == 40
    rc = fluidserve_main(["calibrate", "roofline", "--gpu", "H100-SXM", "--model", "Llama-3.1-8B", "--json",
                          "--output-dir", str(tmp_path), "--profile", str(profile_csv)])
    assert rc == 0
    data = json.loads(capsys.readouterr().out)
    assert 4e-3 < data["d0_s"] < 8e-3 and data["m_total_tokens"] == 447_631
    assert (tmp_path / "roofline.png").is_file() and (tmp_path / "roofline.pdf").is_file()


def test_roofline_table_and_errors(capsys):
    assert run(roofline, ["--gpu", "a100-80gb", "--model", "opt-6.7b", "--tp", "2"]) == 0
    out = capsys.readouterr().out
    assert "OPT-6.7B on 2 x A100-80GB" in out and "M_total" in out
    assert run(roofline, ["--gpu", "B300", "--model", "Llama-3.1-8B"]) == 2
    assert "unknown GPU preset 'B300'" in capsys.readouterr().err


def test_action_registry_is_one_line_per_action():
    names = [a for a, _, _ in cli.ACTIONS]
    assert names[:2] == ["fit", "roofline"]
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["fit", "x.csv", "--json"])
    assert args.action == "fit" and args.profile == "x.csv" and args.json
