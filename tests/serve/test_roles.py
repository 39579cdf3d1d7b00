"""The disaggregated stand-in roles of the endpoint: ``--role prefill`` and ``--role decode``.

Hand-checked against the step-time coefficients: a lone prompt of P tokens on the prefill role
takes d0 + d1p * P; its KV (P * kv_bytes_per_token bytes) crosses a link of L GB/s in
P * kv_bytes / (L * 1e9) s; on the decode role a transferred request decodes token 1 in its first
step, d0 + d1d + d2 * P, and each further token j in d0 + d1d + d2 * (P + j).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

MODEL = "fluidserve-sim"
D0, D1P, D1D, D2 = 0.004, 1.0e-5, 2.0e-4, 1.0e-7
KV_BYTES = 100_000


def _server(tmp_path_factory, role, *extra):
    import copy

    import yaml

    from fluidserve.serve.launch import ServerProcess

    from .conftest import FUNCTIONAL_CONFIG

    cfg = copy.deepcopy(FUNCTIONAL_CONFIG)
    cfg["system"]["kv_bytes_per_token"] = KV_BYTES
    path = tmp_path_factory.mktemp(role) / "serve.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ServerProcess(path, extra_args=["--role", role, *extra])


@pytest.fixture(scope="module")
def prefill_server(tmp_path_factory):
    with _server(tmp_path_factory, "prefill", "--kv-link-GBps", "10") as srv:
        yield srv


@pytest.fixture(scope="module")
def decode_server(tmp_path_factory):
    with _server(tmp_path_factory, "decode") as srv:
        yield srv


def test_prefill_role_answers_one_token_and_models_the_kv_transfer(prefill_server):
    srv = prefill_server
    P = 1000
    resp = httpx.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": list(range(P)), "max_tokens": 50}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["usage"] == {"prompt_tokens": P, "completion_tokens": 1, "total_tokens": P + 1}
    kv = body["kv_transfer_params"]
    assert kv["prefill_end_s"] - kv["prefill_start_s"] == pytest.approx(D0 + D1P * P, abs=1e-12)
    assert kv["kv_transfer_s"] == pytest.approx(P * KV_BYTES / 10e9, abs=1e-12)  # 0.01 s
    assert kv["transfer_start_s"] == pytest.approx(kv["prefill_end_s"], abs=1e-12)  # idle link
    assert kv["kv_ready_monotonic_s"] > time.monotonic() - 5


def test_prefill_role_streams_one_token_then_the_transfer_params(prefill_server):
    srv = prefill_server
    body = {"model": MODEL, "prompt": list(range(300)), "max_tokens": 9, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as resp:
        lines = [ln for ln in resp.iter_lines() if ln.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    assert '"finish_reason":"length"' in lines[0]
    kv = json.loads(lines[1][5:])["kv_transfer_params"]
    assert kv["kv_transfer_s"] == pytest.approx(300 * KV_BYTES / 10e9, abs=1e-12)


def test_decode_role_continues_a_transferred_request(decode_server):
    srv = decode_server
    P, D = 800, 6
    ready = time.monotonic() + 0.3
    body = {"model": MODEL, "prompt": list(range(P)), "max_tokens": D, "kv_transfer_params": {"kv_ready_monotonic_s": ready}}
    resp = httpx.post(srv.url + "/v1/completions", json=body, timeout=30)
    answered = time.monotonic()
    assert resp.status_code == 200, resp.text
    assert answered >= ready
    assert resp.json()["usage"]["completion_tokens"] == D
    sim = httpx.get(srv.url + "/sim/requests", timeout=30).json()
    rec = sim["requests"][0]
    # entered the engine when the KV arrived (same host clock), or later when the request itself
    # came later (a busy machine): never before the KV, never after the answer came back
    to_sim = lambda wall: (wall - sim["t0_monotonic_s"]) * sim["time_scale"]  # noqa: E731
    assert to_sim(ready) - 1e-3 <= rec["arrival_time"] <= to_sim(answered)
    # no prefill step: token 1 comes from the first decode step
    assert rec["first_token_time"] - rec["arrival_time"] == pytest.approx(D0 + D1D + D2 * P, abs=1e-9)
    decode_steps = sum(D0 + D1D + D2 * (P + j) for j in range(1, D))
    assert rec["completion_time"] - rec["first_token_time"] == pytest.approx(decode_steps, abs=1e-9)


def test_decode_role_refuses_bad_transfer_params(decode_server):
    srv = decode_server
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, "kv_transfer_params": {"kv_ready_monotonic_s": "soon"}}
    resp = httpx.post(srv.url + "/v1/completions", json=body, timeout=30)
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "kv_transfer_params"
