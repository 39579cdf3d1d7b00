"""Bad HTTP input and stops: 400 as the OpenAI API answers, traces written on SIGTERM as on SIGINT."""

from __future__ import annotations

import json
import signal

import httpx
import pandas as pd
import pytest

MODEL = "fluidserve-sim"
CHAT = "/v1/chat/completions"


def post(srv, path, body):
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(srv.url + path, content=content, headers={"content-type": "application/json"}, timeout=30)


def chat(**extra):
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        (CHAT, {"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        (CHAT, chat(temperature="hot"), "temperature"),
        (CHAT, chat(temperature=3.5), "temperature"),
        (CHAT, chat(top_p=-1), "top_p"),
        ("/v1/completions", {"model": MODEL, "prompt": "x", "temperature": "0.5"}, "temperature"),  # a string
        ("/v1/completions", {"model": MODEL, "prompt": "x", "stop": 5}, "stop"),
        ("/v1/completions", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # a RecursionError once
        ("/v1/completions", b'{"model": "m", "prompt": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001,
         "nested too deeply"),
    ],
    ids=["role-wizard", "temperature-hot", "temperature-3.5", "top_p-negative", "temperature-string",
         "stop-int", "deep-list", "deep-object"],
)
def test_bad_requests_get_400_naming_the_parameter(shared_server, path, body, named):
    resp = post(shared_server, path, body)
    assert resp.status_code == 400, resp.text
    assert named in resp.json()["error"]["message"]


def test_valid_sampling_parameters_are_accepted(shared_server):
    resp = post(shared_server, CHAT, chat(temperature=0.7, top_p=1, seed=3, stop=["\n"], user="u"))
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 2
    assert httpx.get(shared_server.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stop_signal_writes_request_traces(start_server, tmp_path, sig):
    out = tmp_path / "out"
    srv = start_server(time_scale=50.0, extra_args=["--output-dir", str(out), "--shutdown-grace-s", "5"])
    for _ in range(3):
        assert post(srv, "/v1/completions", {"model": MODEL, "prompt": "a b", "max_tokens": 4}).status_code == 200
    srv.proc.send_signal(sig)
    assert srv.proc.wait(60) == 0, srv.log()
    traces = pd.read_csv(out / "request_traces.csv")
    assert len(traces) == 3 and (traces["decode_length"] == 4).all()


def test_public_bind_warns(start_server):
    srv = start_server(extra_args=["--host", "0.0.0.0"])
    assert "warning: --host 0.0.0.0" in srv.log() and "reachable from other machines" in srv.log()


def _metric(srv, name, **labels):
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(srv.url + "/metrics", timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def test_client_disconnect_aborts_its_request_in_the_engine(start_server):
    """vLLM aborts a request whose client goes away; so does the endpoint (KV freed, counted as abort)."""
    import time

    srv = start_server(time_scale=0.02)  # ~0.2 s wall per step: 300 tokens would take about a minute
    body = {"model": MODEL, "prompt": "a b c", "max_tokens": 300, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as resp:
        events = []
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(line)
            if len(events) == 2:
                break  # leave mid-stream: closing the response drops the connection
    deadline = time.monotonic() + 30
    while _metric(srv, "vllm:request_success_total", finished_reason="abort") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(srv, "vllm:request_success_total", finished_reason="abort") == 1
    assert _metric(srv, "vllm:request_success_total", finished_reason="length") == 0
    assert _metric(srv, "vllm:num_requests_running") == 0 and _metric(srv, "vllm:gpu_cache_usage_perc") == 0
    # the server goes on serving; the next request is not slowed by the aborted one
    done = post(srv, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1})
    assert done.status_code == 200
