"""The simulated endpoint over HTTP: the real openai client, error handling, limits, metrics."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest

from fluidserve.serve.tokens import count_text_tokens

openai = pytest.importorskip("openai")

MODEL = "fluidserve-sim"
D0, D1P, D1D, D2 = 0.004, 1.0e-5, 2.0e-4, 1.0e-7


def client_for(srv, api_key="none"):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=api_key, max_retries=0, timeout=30)


def post(srv, path, body, **kw):
    return httpx.post(srv.url + path, content=body if isinstance(body, (bytes, str)) else json.dumps(body),
                      headers={"content-type": "application/json", **kw.pop("headers", {})}, timeout=30, **kw)


def wait_idle(srv, timeout_s=60.0):
    """Until the server's engine has no request running or waiting (polls /metrics)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = httpx.get(srv.url + "/metrics", timeout=10).text
        busy = [line for line in text.splitlines()
                if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))
                and float(line.rsplit(" ", 1)[1]) > 0]
        if not busy:
            return
        time.sleep(0.05)
    raise AssertionError(f"server still busy after {timeout_s} s")


def assert_openai_error(resp, status):
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


def test_openai_client_streams_a_completion_with_usage(shared_server):
    client = client_for(shared_server)
    prompt = "one two three four five six seven eight nine ten, eleven!"  # 10 words + ',' + '!' + 1 = 13
    stream = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=17, stream=True, stream_options={"include_usage": True}
    )
    texts, usage, finish = [], None, []
    for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].text)
            finish.append(chunk.choices[0].finish_reason)
        if chunk.usage:
            usage = chunk.usage
    assert len(texts) == 17
    assert count_text_tokens("".join(texts)) == 17
    assert finish[:-1] == [None] * 16 and finish[-1] == "length"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (13, 17, 30)


def test_openai_client_streams_a_chat_completion_with_usage(shared_server):
    client = client_for(shared_server)
    messages = [
        {"role": "system", "content": "You are terse."},  # 4 tokens
        {"role": "user", "content": [{"type": "text", "text": "Count to three, please."}]},  # 6 tokens
    ]
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=9, stream=True, stream_options={"include_usage": True}
    )
    contents, roles, usage = [], [], None
    for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            contents.append(delta.content)
            roles.append(delta.role)
        if chunk.usage:
            usage = chunk.usage
    assert len(contents) == 9 and all(contents)
    assert roles[0] == "assistant"
    assert count_text_tokens("".join(contents)) == 9
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (10, 9, 19)


def test_openai_client_non_streaming_and_models(shared_server):
    client = client_for(shared_server)
    comp = client.completions.create(model=MODEL, prompt=[5, 6, 7, 8], max_tokens=3)
    assert comp.usage.prompt_tokens == 4 and comp.usage.completion_tokens == 3
    assert count_text_tokens(comp.choices[0].text) == 3 and comp.choices[0].finish_reason == "length"
    chat = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_completion_tokens=4)
    assert chat.usage.prompt_tokens == 1 and chat.usage.completion_tokens == 4
    assert chat.choices[0].message.role == "assistant"
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_lone_request_timing_matches_the_batch_time_model(shared_server):
    """Simulator records of a request on an idle server (vllm_v1): the prefill step samples token 1,
    then one decode step per further token."""
    client = client_for(shared_server)
    wait_idle(shared_server)  # earlier tests' requests would share its steps
    P, D = 300, 6
    resp = client.completions.create(model=MODEL, prompt=list(range(P)), max_tokens=D)
    gid = int(resp.id.rsplit("-", 1)[1])
    recs = httpx.get(shared_server.url + "/sim/requests", timeout=10).json()["requests"]
    rec = next(r for r in recs if r["req_id"] == gid)
    ttft = D0 + D1P * P
    tpot = sum(D0 + D1D + D2 * (P + j) for j in range(D - 1)) / (D - 1)
    assert rec["ttft"] == pytest.approx(ttft, abs=1e-9)
    assert rec["tpot"] == pytest.approx(tpot, abs=1e-9)


def test_unset_max_tokens_draws_from_the_workload(shared_server):
    client = client_for(shared_server)
    lengths = []
    for _ in range(5):
        comp = client.completions.create(model=MODEL, prompt="x")
        assert comp.choices[0].finish_reason == "stop"
        lengths.append(comp.usage.completion_tokens)
    assert all(10 <= n <= 100 for n in lengths)  # 'normal' scenario decode lengths: 10-40 and 80-100


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b'{"model": "fluidserve-sim", "prompt": "hi"', 400, None),  # malformed JSON
        (b"[1, 2, 3]", 400, None),  # not an object
        ({"prompt": "hi", "max_tokens": 3}, 400, "model"),  # missing model
        ({"model": MODEL, "prompt": "hi", "max_tokens": -4}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": "7"}, 400, "max_tokens"),
        ({"model": MODEL}, 400, "prompt"),
        ({"model": MODEL, "prompt": "hi", "n": 2}, 400, "n"),
        ({"model": MODEL, "prompt": ["a", "b"], "max_tokens": 2}, 400, "prompt"),
        ({"model": MODEL, "prompt": "hi", "max_tokens": 200000}, 400, "max_tokens"),  # beyond the KV cache
        ({"model": MODEL, "prompt": list(range(5000)), "max_tokens": 2}, 400, "prompt"),  # > B without chunking
        ({"model": "gpt-9", "prompt": "hi"}, 404, "model"),
    ],
)
def test_bad_completion_requests_get_openai_errors(shared_server, body, status, param):
    err = assert_openai_error(post(shared_server, "/v1/completions", body), status)
    assert err["param"] == param


def test_bad_chat_requests_and_server_keeps_serving(shared_server):
    err = assert_openai_error(post(shared_server, "/v1/chat/completions", {"model": MODEL, "messages": []}), 400)
    assert err["param"] == "messages"
    err = assert_openai_error(post(shared_server, "/v1/chat/completions", {"model": MODEL, "messages": [{"content": "x"}]}), 400)
    assert "role" in err["message"]
    big = json.dumps({"model": MODEL, "prompt": "word " * 300000, "max_tokens": 1})  # 1.5 MB > 1 MiB
    err = assert_openai_error(post(shared_server, "/v1/completions", big), 413)
    assert "exceeds" in err["message"]
    # chunked upload without content-length is counted as it arrives
    chunks = (big[i:i + 65536].encode() for i in range(0, len(big), 65536))
    resp = httpx.post(shared_server.url + "/v1/completions", content=chunks, headers={"content-type": "application/json"}, timeout=30)
    assert_openai_error(resp, 413)
    assert_openai_error(httpx.get(shared_server.url + "/v1/nothing", timeout=10), 404)
    # still serving
    assert httpx.get(shared_server.url + "/health", timeout=10).status_code == 200
    comp = client_for(shared_server).completions.create(model=MODEL, prompt="still there", max_tokens=2)
    assert comp.usage.completion_tokens == 2


def test_metrics_have_vllm_names_and_count_tokens(shared_server):
    from prometheus_client.parser import text_string_to_metric_families

    client = client_for(shared_server)
    before = _samples(text_string_to_metric_families, shared_server)
    for _ in range(3):
        client.completions.create(model=MODEL, prompt="a b c", max_tokens=5)
    after = _samples(text_string_to_metric_families, shared_server)
    for name in ("vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:num_requests_swapped",
                 "vllm:gpu_cache_usage_perc", "vllm:iteration_tokens_total_count"):
        assert name in after, name
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == 15
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == 9
    assert after["vllm:num_requests_running"] == 0 and after["vllm:gpu_cache_usage_perc"] == 0
    assert after["vllm:time_to_first_token_seconds_count"] - before["vllm:time_to_first_token_seconds_count"] == 3


def _samples(parse, srv):
    text = httpx.get(srv.url + "/metrics", timeout=10).text
    return {s.name: s.value for fam in parse(text) for s in fam.samples if "le" not in s.labels}


def test_api_key_and_concurrency_limit(start_server):
    # ~0.2 s wall steps: 20 tokens keep both streams open ~4 s, the margin for the 429 request on a busy machine
    srv = start_server(time_scale=0.02, extra_args=["--api-key", "s3cret", "--max-concurrency", "2"])
    assert_openai_error(httpx.get(srv.url + "/v1/models", timeout=10), 401)
    with pytest.raises(openai.AuthenticationError):
        client_for(srv, "wrong").completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert httpx.get(srv.url + "/health", timeout=10).status_code == 200  # open without a key
    client = client_for(srv, "s3cret")
    streams = [client.completions.create(model=MODEL, prompt="x", max_tokens=20, stream=True) for _ in range(2)]
    first = [next(iter(s)) for s in streams]  # both are in flight
    assert all(c.choices for c in first)
    resp = post(srv, "/v1/completions", {"model": MODEL, "prompt": "x", "max_tokens": 1},
                headers={"authorization": "Bearer s3cret"})
    assert_openai_error(resp, 429)
    for s in streams:
        assert len([c for c in s if c.choices]) == 19  # the rest of each stream
    comp = client.completions.create(model=MODEL, prompt="x", max_tokens=1)
    assert comp.usage.completion_tokens == 1


def _read_stream(srv, body, out):
    out["started"] = threading.Event()
    out["events"] = []
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=60) as resp:
        out["status"] = resp.status_code
        for line in resp.iter_lines():
            if line.startswith("data: "):
                out["events"].append(line)
                out["started"].set()


def test_sigint_drains_streams(start_server):
    """A stream that can finish within the grace period does; one that cannot ends with an error event."""
    # ~45 ms wall per step: the short stream needs ~0.5 s of the 3 s grace (margin for a busy machine),
    # the long one ~18 s
    srv = start_server(time_scale=0.1, extra_args=["--shutdown-grace-s", "3"])
    short, long_ = {}, {}
    readers = [
        threading.Thread(target=_read_stream, args=(srv, {"model": MODEL, "prompt": "x", "max_tokens": 10, "stream": True}, short)),
        threading.Thread(target=_read_stream, args=(srv, {"model": MODEL, "prompt": "x", "max_tokens": 400, "stream": True}, long_)),
    ]
    for r in readers:
        r.start()
    deadline = time.monotonic() + 30
    while not all("started" in o and o["started"].is_set() for o in (short, long_)) and time.monotonic() < deadline:
        time.sleep(0.01)  # both streams are running
    srv.proc.send_signal(signal.SIGINT)
    for r in readers:
        r.join(30)
    assert srv.proc.wait(30) == 0
    for out in (short, long_):
        assert out["status"] == 200 and out["events"][-1] == "data: [DONE]"
    assert len([e for e in short["events"] if '"choices":[{' in e]) == 10
    n_long = len([e for e in long_["events"] if '"choices":[{' in e])
    assert 0 < n_long < 400
    err = json.loads(long_["events"][-2][6:])["error"]
    assert "shutting down" in err["message"]


def test_cli_bad_input_exits_2(tmp_path, functional_config, capsys):
    import argparse

    import yaml

    from fluidserve.serve import cli

    def run(*argv):
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        return cli.main(parser.parse_args(list(argv)))

    bad = tmp_path / "bad.yaml"
    functional_config["batch_time"]["d0_s"] = -1
    bad.write_text(yaml.safe_dump(functional_config))
    assert run("--config", str(bad), "--port", "0") == 2
    err = capsys.readouterr().err
    assert "d0_s" in err and len(err.strip().splitlines()) == 1
    good = tmp_path / "good.yaml"
    functional_config["batch_time"]["d0_s"] = 0.004
    good.write_text(yaml.safe_dump(functional_config))
    assert run("--config", str(good), "--time-scale", "0") == 2
    assert "--time-scale" in capsys.readouterr().err
    assert run("--config", str(good), "--port", "70000") == 2
    assert run("--config", str(tmp_path / "missing.yaml")) == 2
