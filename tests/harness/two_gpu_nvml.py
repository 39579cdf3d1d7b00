"""NVML stand-in for the harness tests: two fake GPUs drawing 300 W and 250 W (tests/calibration/fake_nvml.py)."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("fake_nvml", Path(__file__).parents[1] / "calibration" / "fake_nvml.py")
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)


def two_gpus():
    return _mod.FakeNVML(power_w=(300.0, 250.0))
