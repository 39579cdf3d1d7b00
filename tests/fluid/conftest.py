from pathlib import Path

import pytest

from fluidserve.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def default_cfg():
    return load_config(ROOT / "config" / "seed_swapping.yaml")


def cfg_with(**overrides):
    return load_config(ROOT / "config" / "seed_swapping.yaml", overrides)
