"""Command lines of the servers the harness starts: real vLLM, or fluidserve's simulated stand-ins.

vLLM (``python -m vllm.entrypoints.openai.api_server``, the V1 engine; supported: vLLM >=
0.10, where both KV connectors below exist with these flags; checked against the flags of
vLLM's own examples ``examples/online_serving/disaggregated_serving_p2p_nccl_xpyd`` and
``docs/features/nixl_connector_usage.md``). Every instance gets ``CUDA_VISIBLE_DEVICES`` = its
GPU (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, so it is the GPU that NVML's PowerMonitor watches under
the same index), ``--seed 0``, prefix caching off (each prompt is computed, as the simulator assumes),
and, from the fluidserve config when one is given, ``--max-num-seqs``,
``--max-num-batched-tokens`` (= ``system.B``) and ``--block-size``. The disaggregated pair adds
``--kv-transfer-config``:

* ``p2p-nccl`` (P2pNcclConnector, KV pushed over NCCL, as the seed test bench did):
  ``{"kv_connector": "P2pNcclConnector", "kv_role": "kv_producer" | "kv_consumer",
  "kv_buffer_size": "1e1" | "8e9", "kv_port": PORT, "kv_connector_extra_config": {"proxy_ip",
  "proxy_port", "http_port", "send_type": "PUT_ASYNC", "nccl_num_channels": "16"}}``, with
  ``VLLM_HOST_IP=127.0.0.1`` so the KV (ZMQ) address of each instance is ``127.0.0.1:kv_port``,
  which the proxy writes into the request id. (``proxy_port`` is the connector's service-discovery
  port; the harness's proxy pairs the instances through the request id instead and leaves that
  port unused.)
* ``nixl`` (NixlConnector, KV pulled by the decode instance over NIXL/UCX):
  ``{"kv_connector": "NixlConnector", "kv_role": "kv_both"}`` with a distinct
  ``VLLM_NIXL_SIDE_CHANNEL_PORT`` per instance.

The stand-ins are ``python -m fluidserve serve --role single|prefill|decode`` with the same
config, ``--time-scale`` and (prefill) ``--kv-link-GBps``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from fluidserve.errors import InputError, MissingDependencyError
from fluidserve.harness.processes import ServerSpec

MIN_VLLM = (0, 10)
CONNECTORS = ("p2p-nccl", "nixl")
HOST = "127.0.0.1"


def installed_vllm_version() -> str:
    """The installed vLLM's version string; MissingDependencyError (naming the extra) without it."""
    from importlib import metadata

    try:
        return metadata.version("vllm")
    except metadata.PackageNotFoundError:
        raise MissingDependencyError(
            "vLLM is not installed: pip install 'fluidserve[vllm]' (the harness starts 'vllm' servers)"
        ) from None


def check_vllm_version(version: str) -> tuple[int, int]:
    """(major, minor) of ``version``; InputError when older than MIN_VLLM or unreadable."""
    m = re.match(r"(\d+)\.(\d+)", version)
    if not m:
        raise InputError(f"cannot read the vLLM version '{version}'")
    mm = (int(m.group(1)), int(m.group(2)))
    if mm < MIN_VLLM:
        raise InputError(f"vLLM {version} is too old for the harness: need >= {MIN_VLLM[0]}.{MIN_VLLM[1]} "
                         "(V1 engine with P2pNcclConnector / NixlConnector)")
    return mm


@dataclass(frozen=True)
class VllmOptions:
    """Engine flags shared by every vLLM instance of a run."""

    model: str
    served_model_name: str | None = None
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    block_size: int | None = None
    enforce_eager: bool = False
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.model:
            raise InputError("--model is required (a Hugging Face name or a local model directory)")
        if not 0 < self.gpu_memory_utilization <= 1:
            raise InputError(f"--gpu-memory-utilization must be in (0, 1], got {self.gpu_memory_utilization}")


def kv_transfer_config(connector: str, role: str, kv_port: int, proxy_port: int, http_port: int) -> dict[str, Any]:
    """The ``--kv-transfer-config`` object of a prefill (``role='prefill'``) or decode instance."""
    if connector == "nixl":
        return {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    if connector != "p2p-nccl":
        raise InputError(f"--connector must be one of {', '.join(CONNECTORS)}, got '{connector}'")
    producer = role == "prefill"
    return {
        "kv_connector": "P2pNcclConnector",
        "kv_role": "kv_producer" if producer else "kv_consumer",
        "kv_buffer_size": "1e1" if producer else "8e9",
        "kv_port": str(kv_port),
        "kv_connector_extra_config": {
            "proxy_ip": HOST, "proxy_port": str(proxy_port), "http_port": str(http_port),
            "send_type": "PUT_ASYNC", "nccl_num_channels": "16",
        },
    }


def vllm_server(opts: VllmOptions, name: str, gpu: int, port: int, connector: str | None = None,
                kv_port: int | None = None, proxy_port: int | None = None) -> ServerSpec:
    """A vLLM instance: ``name`` is ``single``, ``prefill`` or ``decode`` (the last two need ``connector``)."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", opts.model,
            "--host", HOST, "--port", str(port), "--dtype", opts.dtype,
            "--gpu-memory-utilization", repr(float(opts.gpu_memory_utilization)), "--seed", "0",
            "--no-enable-prefix-caching"]
    if opts.served_model_name:
        argv += ["--served-model-name", opts.served_model_name]
    for flag, value in (("--max-model-len", opts.max_model_len), ("--max-num-seqs", opts.max_num_seqs),
                        ("--max-num-batched-tokens", opts.max_num_batched_tokens), ("--block-size", opts.block_size)):
        if value is not None:
            argv += [flag, str(int(value))]
    if opts.enforce_eager:
        argv.append("--enforce-eager")
    env = {"CUDA_VISIBLE_DEVICES": str(gpu), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # CUDA index = NVML index
    if name in ("prefill", "decode"):
        if connector is None or kv_port is None:
            raise InputError(f"{name} instance needs a KV connector and a KV port")
        cfg = kv_transfer_config(connector, name, kv_port, proxy_port or 0, port)
        argv += ["--kv-transfer-config", json.dumps(cfg, separators=(",", ":"))]
        if connector == "p2p-nccl":
            env["VLLM_HOST_IP"] = HOST
        else:
            env["VLLM_NIXL_SIDE_CHANNEL_PORT"] = str(kv_port)
            env["VLLM_NIXL_SIDE_CHANNEL_HOST"] = HOST
    elif name != "single":
        raise InputError(f"unknown vLLM instance role '{name}'")
    argv += list(opts.extra_args)
    return ServerSpec(name=name, argv=argv, url=f"http://{HOST}:{port}", env=env, gpu=gpu)


def standin_server(config_path: str, name: str, port: int, time_scale: float, model_name: str,
                   kv_link_GBps: float | None = None, gpu: int | None = None) -> ServerSpec:
    """A ``fluidserve serve`` stand-in with role ``name`` (single, prefill or decode)."""
    argv = [sys.executable, "-m", "fluidserve", "serve", "--config", str(config_path), "--host", HOST,
            "--port", str(port), "--time-scale", repr(float(time_scale)), "--role", name, "--model-name", model_name,
            "--shutdown-grace-s", "2"]
    if name == "prefill" and kv_link_GBps is not None:
        argv += ["--kv-link-GBps", repr(float(kv_link_GBps))]
    return ServerSpec(name=name, argv=argv, url=f"http://{HOST}:{port}", gpu=gpu)


def proxy_server(prefill: ServerSpec, decode: ServerSpec, port: int, connector: str, output_dir: str,
                 prefill_kv_port: int | None = None, decode_kv_port: int | None = None) -> ServerSpec:
    """The proxy (fluidserve/harness/proxy.py) in front of a prefill and a decode instance."""
    argv = [sys.executable, "-m", "fluidserve.harness.proxy", "--prefill-url", prefill.url, "--decode-url", decode.url,
            "--connector", connector, "--host", HOST, "--port", str(port), "--output-dir", str(output_dir)]
    if connector == "p2p-nccl":
        argv += ["--prefill-kv-addr", f"{HOST}:{prefill_kv_port}", "--decode-kv-addr", f"{HOST}:{decode_kv_port}"]
    return ServerSpec(name="proxy", argv=argv, url=f"http://{HOST}:{port}")
