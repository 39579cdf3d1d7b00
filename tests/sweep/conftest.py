from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "config" / "seed_swapping.yaml"

# small, fast points: the simulator takes a few ms per point at these settings
SMALL = {"workload.num_requests": 120, "fluid.num_classes": 2, "fluid.stages": 4, "fluid.bin_s": 0.5}


def sweep_dict(**overrides) -> dict:
    data = {
        "name": "t",
        "base": str(BASE),
        "set": dict(SMALL),
        "engines": "sim",
        "axes": [
            {"field": "workload.arrival_rate", "values": [100, 200]},
            {"field": "system.M_total", "grid": {"start": 4000, "stop": 16000, "num": 3, "scale": "log"}},
        ],
    }
    data.update(overrides)
    return data


@pytest.fixture
def write_sweep(tmp_path):
    def write(name: str = "sweep.yaml", **overrides) -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(sweep_dict(**overrides)))
        return path

    return write
