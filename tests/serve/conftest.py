"""Fixtures for the simulated endpoint: servers run as subprocesses on 127.0.0.1, free port."""

from __future__ import annotations

import contextlib

import pytest
import yaml

for _mod in ("fastapi", "uvicorn", "prometheus_client", "httpx"):
    pytest.importorskip(_mod)

from fluidserve.serve.launch import ServerProcess  # noqa: E402

# Coefficients of the functional tests: a lone request with prompt P and D tokens has
# TTFT = (d0 + d1p*P) + (d0 + d1d + d2*P) and TPOT = d0 + d1d + d2*(P + j) per step.
FUNCTIONAL_CONFIG = {
    "name": "serve-test",
    "seed": 5,
    "system": {"M_total": 100000, "block_size": 16, "B": 4096, "max_num_seqs": 64, "chunked_prefill": False},
    "batch_time": {"d0_s": 0.004, "d1_prefill_s": 1.0e-5, "d1_decode_s": 2.0e-4, "d2_kv_s": 1.0e-7},
    "workload": {"scenario": "normal", "num_requests": 200},
}


@pytest.fixture
def start_server(tmp_path):
    """``start_server(config_dict, time_scale=1.0, extra_args=[...])`` -> a started ServerProcess;
    every server started through it is stopped when the test ends."""
    servers = []

    def _start(config=FUNCTIONAL_CONFIG, time_scale=1.0, extra_args=None):
        path = tmp_path / f"serve_{len(servers)}.yaml"
        path.write_text(yaml.safe_dump(config))
        srv = ServerProcess(path, time_scale=time_scale, extra_args=extra_args)
        servers.append(srv)
        return srv.start()

    yield _start
    for srv in servers:
        with contextlib.suppress(Exception):
            srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory):
    """One functional-test server for a whole module (stopped at module teardown)."""
    path = tmp_path_factory.mktemp("serve") / "serve.yaml"
    path.write_text(yaml.safe_dump(FUNCTIONAL_CONFIG))
    with ServerProcess(path, time_scale=1.0) as srv:
        yield srv


@pytest.fixture
def functional_config():
    """A deep copy of FUNCTIONAL_CONFIG to modify."""
    import copy

    return copy.deepcopy(FUNCTIONAL_CONFIG)
