"""Configs the fluid model cannot represent fail loudly, naming what is unsupported."""

import numpy as np
import pytest

from fluidserve import fluid
from fluidserve.errors import UnsupportedError
from fluidserve.workload.base import Workload

from .conftest import cfg_with

WL = Workload(np.linspace(0, 1, 20), np.full(20, 50), np.full(20, 10))


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"policy.victim_policy": "FIFO"}, "victim_policy=FIFO"),
        ({"policy.victim_policy": "random"}, "victim_policy=random"),
        ({"policy.victim_policy": "LRU"}, "victim_policy=LRU"),
        ({"policy.queue_policy": "priority"}, "queue_policy=priority"),
        ({"system.scheduler": "vllm_v0", "system.chunked_prefill": True, "system.enable_prefix_caching": False,
          "fluid.backend": "scipy"}, "chunked_prefill"),
        ({"cluster.replicas": 2, "cluster.router": "least_loaded", "fluid.backend": "scipy"}, "least_loaded"),
    ],
)
def test_unsupported_configs_raise(overrides, needle):
    with pytest.raises(UnsupportedError, match=needle):
        fluid.solve(cfg_with(**{"fluid.bin_s": 0.1, **overrides}), WL)


def test_round_robin_replicas_split_the_rate():
    one = fluid.solve(cfg_with(**{"fluid.bin_s": 1.0}), WL)
    two = fluid.solve(cfg_with(**{"fluid.bin_s": 1.0, "cluster.replicas": 2}), WL)
    assert two.summary["replicas"] == 2
    assert two.summary["completed"] == pytest.approx(one.summary["completed"], rel=1e-4)
    # two half-loaded replicas have shorter steps than one
    assert two.summary["mean_step_time_s"] < one.summary["mean_step_time_s"]


def test_all_rejected_workload_is_an_input_error():
    from fluidserve.errors import InputError

    wl = Workload(np.linspace(0, 1, 3), np.full(3, 5000), np.full(3, 10))
    with pytest.raises(InputError, match="rejected"):
        fluid.solve(cfg_with(**{"fluid.bin_s": 0.1}), wl)
