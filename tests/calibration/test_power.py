"""PowerMonitor against a fake NVML: energy from the counter, sampling cadence, outputs, errors."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_nvml import FakeNVML  # noqa: E402

from fluidserve.calibration.power import SAMPLE_COLUMNS, PowerMonitor  # noqa: E402
from fluidserve.errors import InputError, MissingDependencyError  # noqa: E402


def test_energy_is_counter_difference_and_average_power():
    nv = FakeNVML(power_w=(300.0,))
    with PowerMonitor(0, period_s=0.02, nvml=nv) as pm:
        time.sleep(0.4)
    # counter grows at exactly 300 W of wall time, and start/stop bracket the block
    assert pm.duration_s == pytest.approx(0.4, abs=0.08)
    assert pm.energy_j == pytest.approx(300.0 * pm.duration_s, rel=0.01)
    assert pm.avg_power_w == pytest.approx(300.0, rel=0.01)
    assert pm.energy_source == "counter"
    assert nv.initialised == 0  # NVML released on exit


def test_sample_count_tracks_period_and_columns():
    nv = FakeNVML(power_w=(250.0,))
    pm = PowerMonitor([0], period_s=0.05, nvml=nv, energy_every=1)
    pm.start()
    time.sleep(0.5)
    pm.stop()
    df = pm.samples
    assert list(df.columns) == SAMPLE_COLUMNS
    expected = pm.duration_s / 0.05
    assert expected - 3 <= len(df) <= expected + 2
    assert (df["power_w"] == 250.0).all()
    assert (df["sm_clock_mhz"] == 1980).all()
    assert df["time_s"].is_monotonic_increasing
    # counter samples increase at the drawn power
    slope = (df["energy_j"].iloc[-1] - df["energy_j"].iloc[0]) / (df["time_s"].iloc[-1] - df["time_s"].iloc[0])
    assert slope == pytest.approx(250.0, rel=0.02)
    assert 0 <= pm.sampler_cpu_s < pm.duration_s


def test_energy_counter_read_every_n_ticks_and_field_subset():
    nv = FakeNVML(power_w=(300.0,))
    with PowerMonitor(0, period_s=0.02, nvml=nv, energy_every=5, fields=["energy", "sm_clock"]) as pm:
        time.sleep(0.4)
    df = pm.samples
    read = df["energy_j"].notna()
    assert read.iloc[0] and read.sum() == pytest.approx(len(df) / 5, abs=1)
    assert df["power_w"].isna().all() and df["temperature_c"].isna().all()
    assert (df["sm_clock_mhz"] == 1980).all()
    # energy accounting still comes from the counter at start/stop
    assert pm.energy_j == pytest.approx(300.0 * pm.duration_s, rel=0.01)
    with pytest.raises(InputError, match="unknown field"):
        PowerMonitor(0, nvml=FakeNVML(), fields=["volts"])
    with pytest.raises(InputError, match="energy_every"):
        PowerMonitor(0, nvml=FakeNVML(), energy_every=0)


def test_several_gpus_per_gpu_energy():
    nv = FakeNVML(power_w=(100.0, 400.0))
    with PowerMonitor([0, 1], period_s=0.05, nvml=nv) as pm:
        time.sleep(0.3)
    per = pm.energy_j_per_gpu
    assert per[1] / per[0] == pytest.approx(4.0, rel=0.02)
    assert pm.energy_j == pytest.approx(per[0] + per[1])
    assert pm.avg_power_w == pytest.approx(500.0, rel=0.02)
    assert set(pm.samples["gpu"]) == {0, 1}
    assert pm.avg_power_w_per_gpu[0] == pytest.approx(100.0, rel=0.02)


def test_integrates_power_without_energy_counter():
    nv = FakeNVML(power_w=(200.0,), energy_counter=False)
    with PowerMonitor(0, period_s=0.02, nvml=nv) as pm:
        time.sleep(0.3)
    assert pm.energy_source == "integrated-power"
    assert pm.energy_j == pytest.approx(200.0 * pm.duration_s, rel=0.01)
    assert pm.samples["energy_j"].isna().all()


def test_measure_returns_result_and_writes_csv_json(tmp_path):
    nv = FakeNVML(power_w=(320.0,))
    pm = PowerMonitor(0, period_s=0.02, nvml=nv)
    result = pm.measure(lambda x: (time.sleep(0.15), x * 2)[1], 21)
    assert result == 42
    assert pm.energy_j == pytest.approx(320.0 * pm.duration_s, rel=0.01)
    csv = pd.read_csv(pm.to_csv(tmp_path / "trace.csv"))
    assert list(csv.columns) == SAMPLE_COLUMNS and len(csv) == len(pm.samples)
    summary = json.loads(pm.to_json(tmp_path / "power.json").read_text())
    assert summary["energy_j"] == pytest.approx(pm.energy_j)
    assert summary["gpus"][0]["name"] == "Fake GPU 0"
    assert summary["num_samples"] == len(csv)


def test_no_nvml_is_one_clear_error():
    with pytest.raises(MissingDependencyError, match="NVML is not available"):
        PowerMonitor(0, nvml=FakeNVML(init_fails=True))


def test_real_pynvml_without_driver_is_clear_error():
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        with pytest.raises(MissingDependencyError, match="NVML is not available"):
            PowerMonitor(0)
    else:  # a machine with a GPU: the real path must work
        pynvml.nvmlShutdown()
        with PowerMonitor(0, period_s=0.05) as pm:
            time.sleep(0.2)
        assert pm.energy_j >= 0 and len(pm.samples) >= 2


@pytest.mark.parametrize("kwargs, match", [
    ({"gpu_indices": []}, "gpu_indices"),
    ({"gpu_indices": [3]}, "out of range"),
    ({"period_s": 0.0}, "period_s"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        PowerMonitor(nvml=FakeNVML(), **{"gpu_indices": 0, **kwargs})


def test_stop_before_start_is_an_error():
    pm = PowerMonitor(0, nvml=FakeNVML())
    with pytest.raises(RuntimeError):
        pm.stop()
    with pytest.raises(RuntimeError):
        pm.duration_s


def _power_cli(argv):
    import argparse

    from fluidserve.calibration import power

    parser = argparse.ArgumentParser()
    power.add_arguments(parser)
    return power.main(parser.parse_args(argv))


def test_cli_meters_a_command_with_fake_nvml(tmp_path, monkeypatch, capsys):
    from fluidserve.calibration import power

    monkeypatch.setattr(power, "require", lambda module, extra: FakeNVML(power_w=(150.0,)))
    rc = _power_cli(["--output-dir", str(tmp_path), "--period-s", "0.02", "--json", "--",
                     sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["duration_s"] >= 0.3 and summary["avg_power_w"] == pytest.approx(150.0, rel=0.01)
    assert summary["command_rc"] == 0
    assert len(pd.read_csv(tmp_path / "power_trace.csv")) == summary["num_samples"]
    assert json.loads((tmp_path / "power.json").read_text())["energy_j"] == pytest.approx(summary["energy_j"])
    # the metered command's exit code is passed on
    assert _power_cli(["--output-dir", str(tmp_path), "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3


def test_cli_errors(tmp_path, monkeypatch, capsys):
    from fluidserve.calibration import power

    assert _power_cli(["--output-dir", str(tmp_path)]) == 2  # neither duration nor command
    assert "--duration-s" in capsys.readouterr().err
    monkeypatch.setattr(power, "require", lambda module, extra: FakeNVML(init_fails=True))
    assert _power_cli(["--output-dir", str(tmp_path), "--duration-s", "0.1"]) == 2
    assert "NVML is not available" in capsys.readouterr().err
