"""The real-vLLM launch: command lines and environments the harness builds, version checks, the
missing-vLLM error, and the proxy's request shaping (checked against vLLM's example scripts and
toy proxy: examples/online_serving/disaggregated_serving_p2p_nccl_xpyd, NixlConnector usage guide)."""

from __future__ import annotations

import json
import sys

import pytest

from fluidserve.__main__ import main as fluidserve_main

from fluidserve.errors import InputError, MissingDependencyError
from fluidserve.harness import commands as C
from fluidserve.harness.proxy import ProxyState, prefill_request


OPTS = C.VllmOptions(model="meta-llama/Llama-3.1-8B-Instruct", max_model_len=4096, max_num_seqs=256,
                     max_num_batched_tokens=2048, block_size=16)


def _flag(argv, name):
    return argv[argv.index(name) + 1]


def test_single_instance_command_line():
    spec = C.vllm_server(OPTS, "single", gpu=3, port=8123)
    a = spec.argv
    assert a[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(a, "--model") == "meta-llama/Llama-3.1-8B-Instruct"
    assert (_flag(a, "--host"), _flag(a, "--port")) == ("127.0.0.1", "8123")
    assert (_flag(a, "--max-num-seqs"), _flag(a, "--max-num-batched-tokens"), _flag(a, "--block-size"), _flag(a, "--max-model-len")) == \
        ("256", "2048", "16", "4096")
    assert "--no-enable-prefix-caching" in a and "--kv-transfer-config" not in a
    assert spec.env == {"CUDA_VISIBLE_DEVICES": "3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert spec.url == "http://127.0.0.1:8123"


def test_p2p_nccl_pair_command_lines():
    pre = C.vllm_server(OPTS, "prefill", gpu=0, port=20003, connector="p2p-nccl", kv_port=21001, proxy_port=30001)
    dec = C.vllm_server(OPTS, "decode", gpu=1, port=20005, connector="p2p-nccl", kv_port=22001, proxy_port=30001)
    p = json.loads(_flag(pre.argv, "--kv-transfer-config"))
    d = json.loads(_flag(dec.argv, "--kv-transfer-config"))
    # as in vLLM's disagg_example_p2p_nccl_xpyd.sh
    assert p == {"kv_connector": "P2pNcclConnector", "kv_role": "kv_producer", "kv_buffer_size": "1e1", "kv_port": "21001",
                 "kv_connector_extra_config": {"proxy_ip": "127.0.0.1", "proxy_port": "30001", "http_port": "20003",
                                               "send_type": "PUT_ASYNC", "nccl_num_channels": "16"}}
    assert (d["kv_role"], d["kv_buffer_size"], d["kv_port"], d["kv_connector_extra_config"]["http_port"]) == ("kv_consumer", "8e9", "22001", "20005")
    assert pre.env == {"CUDA_VISIBLE_DEVICES": "0", "CUDA_DEVICE_ORDER": "PCI_BUS_ID", "VLLM_HOST_IP": "127.0.0.1"}
    assert dec.env["CUDA_VISIBLE_DEVICES"] == "1"
    proxy = C.proxy_server(pre, dec, 30001, "p2p-nccl", "/tmp/x", 21001, 22001)
    assert _flag(proxy.argv, "--prefill-kv-addr") == "127.0.0.1:21001" and _flag(proxy.argv, "--decode-kv-addr") == "127.0.0.1:22001"


def test_nixl_pair_command_lines():
    pre = C.vllm_server(OPTS, "prefill", gpu=0, port=8100, connector="nixl", kv_port=5600)
    dec = C.vllm_server(OPTS, "decode", gpu=1, port=8200, connector="nixl", kv_port=5601)
    assert json.loads(_flag(pre.argv, "--kv-transfer-config")) == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert pre.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5600" and dec.env["VLLM_NIXL_SIDE_CHANNEL_PORT"] == "5601"


def test_vllm_version_check():
    assert C.check_vllm_version("0.11.0") == (0, 11)
    assert C.check_vllm_version("1.2.3rc1") == (1, 2)
    with pytest.raises(InputError, match=r"0\.8\.5 is too old"):
        C.check_vllm_version("0.8.5")


def test_missing_vllm_is_one_line_naming_the_extra(tmp_path, capsys):
    try:
        C.installed_vllm_version()
        pytest.skip("vllm is installed here")
    except MissingDependencyError:
        pass
    rc = fluidserve_main(["harness", "vllm", "single", "--model", "m", "--requests", "x.csv", "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and "fluidserve[vllm]" in err


def test_dry_run_prints_the_pair_without_starting_anything(tmp_path, capsys):
    req = tmp_path / "r.csv"
    req.write_text("arrival_time,prefill_length,decode_length\n0,100,20\n0.5,3000,50\n")
    rc = fluidserve_main(["harness", "vllm", "disagg", "--model", "m", "--requests", str(req), "--output-dir", str(tmp_path / "o"),
                          "--vllm-version", "0.11.0", "--connector", "nixl", "--dry-run"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    servers = json.loads(out.out)["servers"]
    assert [s["name"] for s in servers] == ["prefill", "decode", "proxy"]
    assert _flag(servers[0]["argv"], "--max-model-len") == str(3050 + 16)
    assert not (tmp_path / "o").exists()


def test_proxy_shapes_the_prefill_request_like_vllms_toy_proxy():
    body = {"model": "m", "prompt": [1, 2, 3], "max_tokens": 50, "stream": True, "stream_options": {"include_usage": True}, "min_tokens": 5}
    pre = prefill_request(body, "nixl")
    assert (pre["max_tokens"], pre["stream"]) == (1, False)
    assert "stream_options" not in pre and "min_tokens" not in pre
    assert pre["kv_transfer_params"]["do_remote_decode"] is True and pre["kv_transfer_params"]["do_remote_prefill"] is False
    assert body["max_tokens"] == 50  # the decode request keeps the original
    assert "kv_transfer_params" not in prefill_request(body, "p2p-nccl")
    state = ProxyState("http://a:1", "http://b:2", "p2p-nccl", "127.0.0.1:21001", "127.0.0.1:22001")
    assert state.request_id("abc") == "___prefill_addr_127.0.0.1:21001___decode_addr_127.0.0.1:22001_abc"


@pytest.mark.parametrize(("args", "named"), [
    (["sim", "single", "--time-scale", "-1"], "--time-scale"),
    (["sim", "single", "--num-requests", "0"], "--num-requests"),
    (["sim", "disagg", "--kv-link-GBps", "0"], "--kv-link-GBps"),
    (["vllm", "disagg", "--model", "m", "--vllm-version", "0.11", "--prefill-gpu", "1", "--decode-gpu", "1"], "--decode-gpu"),
    (["vllm", "single", "--model", "m", "--vllm-version", "0.6.3"], "too old"),
])
def test_bad_flags_exit_2_with_one_line(harness_files, capsys, args, named):
    rc = fluidserve_main(["harness", *args, "--config", str(harness_files["config"]), "--output-dir", str(harness_files["tmp"] / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and named in err and err.count("\n") == 1, err


def test_report_of_a_missing_folder_exits_2(tmp_path, capsys):
    assert fluidserve_main(["harness", "report", str(tmp_path / "nothing")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_p2p_nccl_dry_run_keeps_the_discovery_port_off_the_proxy(tmp_path, capsys):
    req = tmp_path / "r.csv"
    req.write_text("arrival_time,prefill_length,decode_length\n0,100,20\n")
    assert fluidserve_main(["harness", "vllm", "disagg", "--model", "m", "--requests", str(req), "--output-dir", str(tmp_path / "o"),
                            "--vllm-version", "0.11.0", "--dry-run"]) == 0
    pre, dec, proxy = json.loads(capsys.readouterr().out)["servers"]
    kv = json.loads(_flag(pre["argv"], "--kv-transfer-config"))
    assert kv["kv_connector"] == "P2pNcclConnector"  # the default, as the seed test bench
    assert kv["kv_connector_extra_config"]["proxy_port"] != _flag(proxy["argv"], "--port")
    assert _flag(proxy["argv"], "--prefill-kv-addr") == f"127.0.0.1:{kv['kv_port']}"
    assert (pre["gpu"], dec["gpu"]) == (0, 1)
