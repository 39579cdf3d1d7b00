"""Model shapes from a Hugging Face ``config.json``: any Llama/Mistral/Qwen2/Qwen3/Mixtral/OPT model.

:func:`load` reads a ``config.json`` into a :class:`fluidserve.specs.ModelSpec`, so everything that
takes a model preset (parameter count, weight bytes, KV bytes per token, KV capacity, the roofline)
also takes any model of those families. Keys read (the transformers names):

* all: ``model_type``, ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
  ``num_key_value_heads`` (default: heads), ``head_dim`` (default: hidden / heads),
  ``intermediate_size``, ``vocab_size``, ``tie_word_embeddings``, ``max_position_embeddings``,
  ``rope_theta``, ``rms_norm_eps``, ``torch_dtype`` (or ``dtype``);
* ``attention_bias`` (Llama-style), always-on q/k/v biases for ``qwen2`` / ``qwen2_moe``;
  q/k RMSNorm for ``qwen3`` / ``qwen3_moe``;
* MoE: ``num_local_experts`` (Mixtral) or ``num_experts`` (Qwen-MoE), ``num_experts_per_tok``,
  ``moe_intermediate_size`` (else the expert size is ``intermediate_size``);
* OPT: ``ffn_dim``, ReLU MLP, biases everywhere, LayerNorm, learned positions (+2 offset), tied
  embeddings unless ``tie_word_embeddings`` is false.

:func:`find_config` resolves a model name: an existing file or folder path, or with ``models_dir``
a model id ``org/<name>`` as ``models_dir/<name>/config.json``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from fluidserve.errors import InputError

#: model_type values whose shape this module understands
SUPPORTED = ("llama", "mistral", "mixtral", "qwen2", "qwen3", "qwen2_moe", "qwen3_moe", "opt")
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float8_e4m3fn": 1, "float8": 1, "fp8": 1}


def find_config(name: str, models_dir: str | Path | None = None) -> Path | None:
    """The ``config.json`` that ``name`` points to, or None when it is not a path (a preset name)."""
    p = Path(name).expanduser()
    if p.is_file():
        return p
    if p.is_dir() and (p / "config.json").is_file():
        return p / "config.json"
    if models_dir is not None:
        d = Path(models_dir)
        for cand in (d / name / "config.json", d / name.split("/")[-1] / "config.json"):
            if cand.is_file():
                return cand
    if name.endswith(".json"):
        raise InputError(f"model config file not found: {name}")
    return None


def _int(cfg: dict[str, Any], key: str, path: Path, default: Any = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise InputError(f"{path}: missing key '{key}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < 0:
        raise InputError(f"{path}: '{key}' must be a non-negative integer, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=64)
def _load_cached(path: str, mtime: float):
    from fluidserve.specs import ModelSpec

    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not a readable JSON config ({exc})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{p}: expected a JSON object")
    mtype = str(cfg.get("model_type", "llama")).lower()
    if mtype not in SUPPORTED:
        raise InputError(f"{p}: model_type '{mtype}' is not supported (supported: {', '.join(SUPPORTED)})")
    opt = mtype == "opt"
    hidden = _int(cfg, "hidden_size", p)
    heads = _int(cfg, "num_attention_heads", p)
    if heads == 0 or hidden == 0:
        raise InputError(f"{p}: hidden_size and num_attention_heads must be > 0")
    kv_heads = _int(cfg, "num_key_value_heads", p, heads)
    head_dim = cfg.get("head_dim")
    head_dim = hidden // heads if head_dim is None else _int(cfg, "head_dim", p)
    layers = _int(cfg, "num_hidden_layers", p)
    inter = _int(cfg, "ffn_dim" if opt else "intermediate_size", p)
    if opt and int(cfg.get("word_embed_proj_dim", hidden)) != hidden:
        raise InputError(f"{p}: OPT with word_embed_proj_dim != hidden_size (project_in/out) is not supported")
    num_experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    top_k = int(cfg.get("num_experts_per_tok") or 0) if num_experts else 0
    if num_experts and not 1 <= top_k <= num_experts:
        raise InputError(f"{p}: num_experts_per_tok must be in 1..{num_experts}, got {cfg.get('num_experts_per_tok')!r}")
    if num_experts and (cfg.get("shared_expert_intermediate_size") or cfg.get("mlp_only_layers")):
        raise InputError(f"{p}: MoE with shared experts or dense-only layers is not supported")
    moe_inter = int(cfg.get("moe_intermediate_size") or inter) if num_experts else 0
    dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
    if dtype not in _DTYPE_BYTES:
        raise InputError(f"{p}: unknown torch_dtype '{dtype}' (known: {', '.join(_DTYPE_BYTES)})")
    max_pos = _int(cfg, "max_position_embeddings", p, 2048)
    eps = cfg.get("layer_norm_eps" if opt else "rms_norm_eps", 1e-5)
    name = p.parent.name if p.name == "config.json" else p.stem
    spec = ModelSpec(
        name=name,
        layers=layers,
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=inter,
        vocab=_int(cfg, "vocab_size", p),
        tied_embeddings=bool(cfg.get("tie_word_embeddings", opt)),
        max_position=max_pos,
        params=float("nan"),
        source=str(p),
        gated_mlp=not opt,
        linear_bias=opt and bool(cfg.get("enable_bias", True)),
        norm="layernorm" if opt else "rmsnorm",
        qk_norm=mtype in ("qwen3", "qwen3_moe"),
        learned_positions=max_pos + 2 if opt else 0,
        rope_theta=None if opt else float(cfg.get("rope_theta", 10000.0)),
        norm_eps=float(eps if eps is not None else 1e-5),
        qkv_bias=mtype in ("qwen2", "qwen2_moe") or (not opt and bool(cfg.get("attention_bias", False))),
        num_experts=num_experts,
        experts_per_token=top_k,
        moe_intermediate=moe_inter,
        dtype_bytes=_DTYPE_BYTES[dtype],
    )
    from fluidserve.specs import param_count

    return replace(spec, params=float(param_count(spec)))


def load(path: str | Path):
    """The :class:`fluidserve.specs.ModelSpec` of a Hugging Face ``config.json`` (file or folder)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise InputError(f"model config file not found: {p}")
    return _load_cached(str(p.resolve()), p.stat().st_mtime)
