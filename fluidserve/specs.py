"""Hardware and model presets: GPU datasheet numbers and model shapes, and what follows from them.

The presets live in ``fluidserve/data/gpu_specs.yaml`` and ``fluidserve/data/model_specs.yaml``;
every entry names its source (a vendor datasheet, a model's ``config.json``). Names are looked up
case-insensitively, with spaces, underscores and dashes treated alike, and through aliases (e.g.
``"h100 sxm"``, ``"NVIDIA H100 80GB HBM3"`` as nvidia-smi prints it, ``"meta-llama/Llama-3.1-8B"``).

From a model spec: :func:`param_count` (exact, from the architecture), :func:`weight_bytes`,
:func:`kv_bytes_per_token`; with a GPU spec: :func:`derive_m_total`, the KV-cache capacity in
tokens that a vLLM-like engine gets. Roofline batch-time predictions are in
``fluidserve.calibration.roofline``.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fluidserve.errors import InputError

DATA_DIR = Path(__file__).resolve().parent / "data"
GPU_SPECS_FILE = DATA_DIR / "gpu_specs.yaml"
MODEL_SPECS_FILE = DATA_DIR / "model_specs.yaml"

#: Default fraction of GPU memory held back from the KV cache for activations, CUDA graphs,
#: NCCL buffers and non-PyTorch allocations (vLLM measures this with a profiling forward pass;
#: for 7-8B models at the default token budget it is a few GiB on an 80 GiB GPU).
ACTIVATION_RESERVE_FRAC = 0.03


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model's datasheet numbers, in SI units.

    Attributes:
        name: preset name.
        peak_flops: peak dense FP16/BF16 tensor throughput, FP32 accumulate, no sparsity [FLOP/s].
        mem_bandwidth_Bps: peak memory bandwidth [bytes/s].
        memory_bytes: memory size [bytes] (the datasheet's "GB" of GPU memory are GiB).
        tdp_w: maximum board power [W].
        max_sm_clock_mhz: boost SM clock [MHz].
        interconnect: GPU-to-GPU link name (NVLink generation, or PCIe).
        interconnect_Bps: GPU-to-GPU bandwidth per direction [bytes/s].
        source: the datasheet or whitepaper the numbers come from.
    """

    name: str
    peak_flops: float
    mem_bandwidth_Bps: float
    memory_bytes: int
    tdp_w: float
    max_sm_clock_mhz: float | None
    interconnect: str
    interconnect_Bps: float
    source: str
    aliases: tuple[str, ...] = field(default=(), repr=False)

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity where the roofline turns from memory- to compute-bound [FLOP/byte]."""
        return self.peak_flops / self.mem_bandwidth_Bps


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer's shape (from its ``config.json``) and architecture flags.

    ``params`` is the published parameter count; :func:`param_count` computes it exactly.
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied_embeddings: bool
    max_position: int
    params: float
    source: str
    gated_mlp: bool = True
    linear_bias: bool = False
    norm: str = "rmsnorm"
    qk_norm: bool = False
    learned_positions: int = 0
    rope_theta: float | None = None
    norm_eps: float = 1e-5
    qkv_bias: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    moe_intermediate: int = 0
    dtype_bytes: int = 2
    aliases: tuple[str, ...] = field(default=(), repr=False)

    @property
    def is_moe(self) -> bool:
        """True for a mixture-of-experts model (``num_experts`` routed experts per MoE layer)."""
        return self.num_experts > 0

    @property
    def rms_eps(self) -> float:
        """The normalisation epsilon (name used by the torch profiler backend)."""
        return self.norm_eps


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "-", str(name).strip().lower())


def _load_yaml(path: Path) -> dict[str, dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict):  # pragma: no cover - shipped data
        raise InputError(f"{path}: expected a mapping of presets")
    return data


@functools.lru_cache(maxsize=1)
def _gpus() -> tuple[dict[str, GpuSpec], dict[str, str]]:
    specs: dict[str, GpuSpec] = {}
    index: dict[str, str] = {}
    for name, d in _load_yaml(GPU_SPECS_FILE).items():
        spec = GpuSpec(
            name=name,
            peak_flops=float(d["peak_tflops"]) * 1e12,
            mem_bandwidth_Bps=float(d["mem_bandwidth_gbps"]) * 1e9,
            memory_bytes=int(round(float(d["memory_gib"]) * 2**30)),
            tdp_w=float(d["tdp_w"]),
            max_sm_clock_mhz=float(d["max_sm_clock_mhz"]) if d.get("max_sm_clock_mhz") else None,
            interconnect=str(d["interconnect"]),
            interconnect_Bps=float(d["interconnect_gbps"]) * 1e9,
            source=str(d["source"]),
            aliases=tuple(d.get("aliases", ())),
        )
        specs[name] = spec
        for alias in (name, *spec.aliases):
            index[_key(alias)] = name
    return specs, index


@functools.lru_cache(maxsize=1)
def _models() -> tuple[dict[str, ModelSpec], dict[str, str]]:
    specs: dict[str, ModelSpec] = {}
    index: dict[str, str] = {}
    for name, d in _load_yaml(MODEL_SPECS_FILE).items():
        d = dict(d)
        aliases = tuple(d.pop("aliases", ()))
        for key in ("params", "rope_theta", "norm_eps"):  # YAML 1.1 reads "8.03e9" as a string
            if d.get(key) is not None:
                d[key] = float(d[key])
        spec = ModelSpec(name=name, aliases=aliases, **d)
        specs[name] = spec
        for alias in (name, *aliases):
            index[_key(alias)] = name
    return specs, index


def gpu_names() -> list[str]:
    """The GPU preset names."""
    return list(_gpus()[0])


def model_names() -> list[str]:
    """The model preset names."""
    return list(_models()[0])


def gpu(name: str | GpuSpec) -> GpuSpec:
    """The GPU preset called ``name`` (case-insensitive, aliases allowed); a GpuSpec passes through."""
    if isinstance(name, GpuSpec):
        return name
    specs, index = _gpus()
    found = index.get(_key(name))
    if found is None:
        raise InputError(f"unknown GPU preset '{name}'; known GPUs: {', '.join(specs)}")
    return specs[found]


def model(name: str | ModelSpec, models_dir: str | Path | None = None) -> ModelSpec:
    """The model called ``name``: a preset (case-insensitive, aliases allowed), a path to a Hugging
    Face ``config.json`` (or to its folder), or with ``models_dir`` a model id ``org/<name>`` found
    as ``models_dir/<name>/config.json``. A ModelSpec passes through.
    """
    if isinstance(name, ModelSpec):
        return name
    from fluidserve import hf_config

    path = hf_config.find_config(str(name), models_dir)
    if path is not None:
        return hf_config.load(path)
    specs, index = _models()
    found = index.get(_key(name))
    if found is None:
        where = f" and no {Path(models_dir) / str(name).split('/')[-1] / 'config.json'}" if models_dir else ""
        raise InputError(
            f"unknown model preset '{name}'{where}; give a path to a Hugging Face config.json or one of the "
            f"presets: {', '.join(specs)}"
        )
    return specs[found]


def expert_params(m: str | ModelSpec) -> int:
    """Parameters of one MLP: a routed expert of a MoE layer, or the dense MLP of a dense model."""
    m = model(m)
    inter = m.moe_intermediate if m.is_moe else m.intermediate
    mlp = (3 if m.gated_mlp else 2) * m.hidden * inter
    if m.linear_bias:
        mlp += (2 if m.gated_mlp else 1) * inter + m.hidden
    return mlp


def attention_params(m: str | ModelSpec) -> int:
    """Parameters of one layer's attention projections (q, k, v, o and their biases)."""
    m = model(m)
    q = m.hidden * m.heads * m.head_dim
    kv = 2 * m.hidden * m.kv_heads * m.head_dim
    o = m.heads * m.head_dim * m.hidden
    attn = q + kv + o
    if m.linear_bias:
        attn += m.heads * m.head_dim + 2 * m.kv_heads * m.head_dim + m.hidden
    elif m.qkv_bias:
        attn += m.heads * m.head_dim + 2 * m.kv_heads * m.head_dim
    return attn


def layer_params(m: str | ModelSpec, active_only: bool = False) -> int:
    """Parameters of one decoder layer (attention, MLP or experts + router, norms).

    ``active_only``: for a MoE model count only the ``experts_per_token`` experts one token uses.
    """
    m = model(m)
    if m.is_moe:
        experts = m.experts_per_token if active_only else m.num_experts
        mlp = experts * expert_params(m) + m.hidden * m.num_experts  # router: hidden x E, no bias
    else:
        mlp = expert_params(m)
    per_norm = m.hidden * (2 if m.norm == "layernorm" else 1)
    norms = 2 * per_norm + (2 * m.head_dim if m.qk_norm else 0)
    return attention_params(m) + mlp + norms


def embedding_params(m: str | ModelSpec) -> int:
    """Input embedding table (plus a learned position table, OPT) parameters."""
    m = model(m)
    return (m.vocab + m.learned_positions) * m.hidden


def lm_head_params(m: str | ModelSpec) -> int:
    """Output projection parameters: the vocab x hidden matrix (shared with the embedding if tied)."""
    m = model(m)
    return m.vocab * m.hidden


def param_count(m: str | ModelSpec, active_only: bool = False) -> int:
    """Exact parameter count from the architecture: layers, final norm, embeddings, untied LM head.

    ``active_only``: a MoE model's parameters used per token (``experts_per_token`` experts).
    """
    m = model(m)
    final_norm = m.hidden * (2 if m.norm == "layernorm" else 1)
    head = 0 if m.tied_embeddings else lm_head_params(m)
    return m.layers * layer_params(m, active_only) + final_norm + embedding_params(m) + head


def weight_bytes(m: str | ModelSpec, dtype_bytes: int | None = None) -> int:
    """Bytes of all weights at ``dtype_bytes`` per parameter (default: the model's dtype, 2 for BF16)."""
    m = model(m)
    return param_count(m) * int(dtype_bytes or m.dtype_bytes)


def kv_heads_per_gpu(m: str | ModelSpec, tensor_parallel: int = 1) -> int:
    """KV heads one GPU holds: kv_heads / tp, replicated to 1 when tp exceeds kv_heads (as vLLM does)."""
    m = model(m)
    _check_tp(m, tensor_parallel)
    return max(1, math.ceil(m.kv_heads / tensor_parallel))


def kv_bytes_per_token(m: str | ModelSpec, dtype_bytes: int = 2, tensor_parallel: int = 1) -> int:
    """KV-cache bytes of one token: ``2 * layers * kv_heads * head_dim * dtype_bytes`` (K and V).

    With ``tensor_parallel > 1`` it is the share one GPU holds (its KV heads only).
    """
    m = model(m)
    heads = m.kv_heads if tensor_parallel == 1 else kv_heads_per_gpu(m, tensor_parallel)
    return 2 * m.layers * heads * m.head_dim * int(dtype_bytes)


def _check_tp(m: ModelSpec, tensor_parallel: int) -> None:
    if int(tensor_parallel) != tensor_parallel or tensor_parallel < 1:
        raise InputError(f"tensor_parallel must be an integer >= 1, got {tensor_parallel!r}")
    if m.heads % tensor_parallel:
        raise InputError(
            f"tensor_parallel {tensor_parallel} does not divide {m.name}'s {m.heads} attention heads"
        )


def derive_m_total(
    gpu_name: str | GpuSpec,
    model_name: str | ModelSpec,
    gpu_memory_utilization: float = 0.9,
    tensor_parallel: int = 1,
    activation_reserve_frac: float = ACTIVATION_RESERVE_FRAC,
    dtype_bytes: int = 2,
    kv_dtype_bytes: int | None = None,
) -> int:
    """KV-cache capacity in tokens of one replica (``tensor_parallel`` GPUs), the way vLLM sizes it.

    Per GPU, with ``mem`` its memory in bytes::

        kv_budget = gpu_memory_utilization * mem - weight_bytes / tp - activation_reserve_frac * mem
        M_total   = floor(kv_budget / kv_bytes_per_token(per GPU))

    vLLM lets the engine use ``gpu_memory_utilization`` of the memory, loads its weight shard,
    measures peak activation memory with a profiling pass, and gives the rest to KV blocks; the
    activation reserve stands in for that measured peak. Each GPU holds every token's KV for its
    own KV heads, so the replica's capacity is the per-GPU token count.
    """
    g, m = gpu(gpu_name), model(model_name)
    if not 0 < gpu_memory_utilization <= 1:
        raise InputError(f"gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization!r}")
    if not 0 <= activation_reserve_frac < 1:
        raise InputError(f"activation_reserve_frac must be in [0, 1), got {activation_reserve_frac!r}")
    _check_tp(m, tensor_parallel)
    budget = (
        gpu_memory_utilization * g.memory_bytes
        - weight_bytes(m, dtype_bytes) / tensor_parallel
        - activation_reserve_frac * g.memory_bytes
    )
    per_token = kv_bytes_per_token(m, kv_dtype_bytes or dtype_bytes, tensor_parallel)
    tokens = int(budget // per_token)
    if tokens < 1:
        need = weight_bytes(m, dtype_bytes) / tensor_parallel / 2**30
        raise InputError(
            f"{m.name} does not fit on {g.name} at tensor_parallel={tensor_parallel}: "
            f"{need:.1f} GiB of weights per GPU vs {gpu_memory_utilization * g.memory_bytes / 2**30:.1f} GiB usable; "
            "raise tensor_parallel or gpu_memory_utilization"
        )
    return tokens
