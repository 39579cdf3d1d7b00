"""The ``torch`` step-profiler backend: a Llama-family decoder stack with random weights.

The stack is built from a model spec (layers, hidden, heads, kv_heads, head_dim, intermediate,
vocab): token embedding, per layer RMSNorm -> fused QKV projection -> RoPE -> grouped-query
attention over a preallocated KV cache -> output projection, RMSNorm -> fused gate/up
projection -> SwiGLU -> down projection, then a final RMSNorm and the LM head over the rows
that produce a token (the last prompt token and every decoding sequence), as serving engines
do. Weights are random (shapes real, nothing downloaded), so step times are those of the real
model's kernels, not its outputs.

One engine step is ``step(prefill_tokens=T, decode_batch=B, context_tokens=C)``: T prompt
tokens of one new sequence (causal attention over themselves, their K/V written to the cache)
and B decoding sequences, each attending over C KV tokens (C - 1 cached + its own new token).
Decode attention runs grouped-query attention as ``[B, kv_heads, heads/kv_heads, head_dim]``
queries against ``[B, kv_heads, C, head_dim]`` keys, so each K/V head is read once. On CUDA
each step is captured once as a CUDA graph per (T, B, C) and replayed (``cuda_graph=False``
times eager forwards instead); on CPU it runs eagerly (tests use a tiny float32 model).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

from fluidserve.errors import InputError, require

_SPEC_FIELDS = ("layers", "hidden", "heads", "kv_heads", "intermediate", "vocab")


@dataclass(frozen=True)
class DecoderShape:
    """Dimensions of a Llama-family decoder (counts; ``rope_theta`` is RoPE's base)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rope_theta: float = 500000.0
    rms_eps: float = 1e-5

    @classmethod
    def from_spec(cls, spec: Any, layers: int | None = None) -> "DecoderShape":
        """From a mapping or an object with the spec fields (e.g. ``fluidserve.specs.model(name)``).

        ``head_dim`` defaults to hidden // heads; ``layers`` overrides the spec's layer count.
        """
        get = spec.get if isinstance(spec, Mapping) else (lambda k, d=None: getattr(spec, k, d))
        missing = [f for f in _SPEC_FIELDS if get(f) is None]
        if missing:
            raise InputError(f"model spec is missing field(s) {', '.join(missing)}")
        try:
            values = {f: int(get(f)) for f in _SPEC_FIELDS}
            values["head_dim"] = int(get("head_dim") or values["hidden"] // values["heads"])
            if layers is not None:
                values["layers"] = int(layers)
            extra = {k: float(get(k)) for k in ("rope_theta", "rms_eps") if get(k) is not None}
        except (TypeError, ValueError) as exc:
            raise InputError(f"model spec fields must be integers ({exc})") from exc
        bad = [k for k, v in values.items() if v < 1]
        if bad:
            raise InputError(f"model spec field {bad[0]} must be >= 1, got {values[bad[0]]}")
        if values["heads"] % values["kv_heads"]:
            raise InputError(f"model spec: heads ({values['heads']}) must be a multiple of kv_heads ({values['kv_heads']})")
        return cls(**values, **extra)

    def shard(self, tensor_parallel: int) -> "DecoderShape":
        """The per-GPU shape under Megatron-style tensor parallelism of degree ``tensor_parallel``.

        Query heads, K/V heads, the MLP's intermediate size and the LM head's vocabulary rows are
        split evenly over the GPUs (column-parallel QKV, gate/up and LM head; row-parallel output
        and down projections); ``hidden`` stays whole. Raises InputError when a dimension does not
        divide (vLLM refuses such a configuration too).
        """
        tp = int(tensor_parallel)
        if tp < 1:
            raise InputError(f"tensor_parallel must be >= 1, got {tensor_parallel}")
        for name in ("heads", "kv_heads", "intermediate", "vocab"):
            if getattr(self, name) % tp:
                raise InputError(f"tensor_parallel={tp} does not divide the model's {name} ({getattr(self, name)})")
        return replace(self, heads=self.heads // tp, kv_heads=self.kv_heads // tp,
                       intermediate=self.intermediate // tp, vocab=self.vocab // tp)

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes one token occupies over all layers (K and V)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes

    @property
    def num_params(self) -> int:
        """Parameter count (embedding and LM head untied)."""
        qkv = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim
        per_layer = qkv + self.heads * self.head_dim * self.hidden + 3 * self.hidden * self.intermediate + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


class TorchBackend:
    """Random-weight decoder stack on one device, with a KV cache of ``kv_capacity_tokens``.

    Args:
        shape: model dimensions.
        model_name: recorded in the profile's ``model`` column.
        device: a torch device string ("cuda", "cuda:1", "cpu").
        dtype: torch dtype name ("bfloat16", "float16", "float32").
        kv_capacity_tokens: KV-cache tokens to preallocate (all layers); clamped to the free
            device memory minus ``memory_reserve_gib`` on CUDA.
        cuda_graph: capture each step as a CUDA graph (CUDA only; default True there).
        seed: weight and cache initialisation seed.
        tensor_parallel: number of GPUs the model is sharded over (Megatron-style, see
            :meth:`DecoderShape.shard`); this object is one rank's shard. With
            ``tensor_parallel > 1`` a ``torch.distributed`` process group must be initialised:
            the forward all-reduces after the attention output projection and after the MLP's
            down projection of every layer, and all-gathers the LM head's vocabulary shards.
        tp_rank: this rank's index in ``0..tensor_parallel-1``.
        reference_init: draw every weight at its full (unsharded) size on the CPU from ``seed``
            and keep this rank's slice, and start the KV cache at zero, so that all TP degrees
            compute the same function (for tests on small models; the profiler draws the shards
            directly, which is what a large model's memory allows).
    """

    name = "torch"

    def __init__(
        self,
        shape: DecoderShape,
        model_name: str = "custom",
        device: str = "cuda",
        dtype: str = "bfloat16",
        kv_capacity_tokens: int = 4096,
        cuda_graph: bool | None = None,
        memory_reserve_gib: float = 4.0,
        max_positions: int | None = None,
        seed: int = 0,
        tensor_parallel: int = 1,
        tp_rank: int = 0,
        reference_init: bool = False,
    ):
        torch = require("torch", "torch")
        self.torch = torch
        self.F = torch.nn.functional
        self.shape = shape
        self.model_name = model_name
        try:
            self.device = torch.device(device)
            self.dtype = getattr(torch, dtype)
        except (RuntimeError, AttributeError) as exc:
            raise InputError(f"torch backend: bad device/dtype '{device}'/'{dtype}' ({exc})") from exc
        if not isinstance(self.dtype, torch.dtype):
            raise InputError(f"torch backend: '{dtype}' is not a torch dtype")
        self.is_cuda = self.device.type == "cuda"
        if self.is_cuda and not torch.cuda.is_available():
            raise InputError("torch backend: device 'cuda' requested but torch sees no CUDA GPU (use --device cpu)")
        self.cuda_graph = self.is_cuda if cuda_graph is None else (bool(cuda_graph) and self.is_cuda)
        self.dtype_name = dtype
        gen = torch.Generator(device=self.device).manual_seed(seed)
        self._gen = gen
        self.tensor_parallel, self.tp_rank = int(tensor_parallel), int(tp_rank)
        if not 0 <= self.tp_rank < self.tensor_parallel:
            raise InputError(f"tp_rank must be in 0..{self.tensor_parallel - 1}, got {tp_rank}")
        self.local = s = shape.shard(self.tensor_parallel)  # this rank's dimensions
        if self.tensor_parallel > 1 and not torch.distributed.is_initialized():
            raise InputError("torch backend: tensor_parallel > 1 needs an initialised torch.distributed process group")
        self.reference_init = bool(reference_init)
        self._cpu_gen = torch.Generator().manual_seed(seed)
        self.embed = self._weight(shape.vocab, shape.hidden, std=1.0)  # replicated on every rank
        self.layers = []
        for _ in range(shape.layers):
            q = self._weight(shape.heads * shape.head_dim, shape.hidden, shard_dim=0)
            k = self._weight(shape.kv_heads * shape.head_dim, shape.hidden, shard_dim=0)
            v = self._weight(shape.kv_heads * shape.head_dim, shape.hidden, shard_dim=0)
            w_o = self._weight(shape.hidden, shape.heads * shape.head_dim, shard_dim=1)
            gate = self._weight(shape.intermediate, shape.hidden, shard_dim=0)
            up = self._weight(shape.intermediate, shape.hidden, shard_dim=0)
            w_down = self._weight(shape.hidden, shape.intermediate, shard_dim=1)
            self.layers.append({
                "attn_norm": torch.ones(s.hidden, dtype=self.dtype, device=self.device),
                "w_qkv": torch.cat([q, k, v], dim=0),  # fused, per rank: [q | k | v] of its heads
                "w_o": w_o,
                "mlp_norm": torch.ones(s.hidden, dtype=self.dtype, device=self.device),
                "w_gate_up": torch.cat([gate, up], dim=0),
                "w_down": w_down,
            })
        self.final_norm = torch.ones(s.hidden, dtype=self.dtype, device=self.device)
        self.lm_head = self._weight(shape.vocab, shape.hidden, shard_dim=0)
        self.kv_bytes_per_token = s.kv_bytes_per_token(self.dtype.itemsize)
        cap = int(kv_capacity_tokens)
        if self.is_cuda:
            free_b, _ = torch.cuda.mem_get_info(self.device)
            cap = min(cap, int((free_b - memory_reserve_gib * 2**30) // self.kv_bytes_per_token))
        if cap < 1:
            raise InputError("torch backend: no device memory left for a KV cache after the weights")
        self.kv_capacity_tokens = cap
        per_layer = cap * s.kv_heads * s.head_dim
        self.kv_cache = torch.empty(s.layers, 2, per_layer, dtype=self.dtype, device=self.device)
        if self.reference_init:
            self.kv_cache.zero_()
        else:
            self.kv_cache.normal_(0.0, 1.0, generator=gen)
        self.max_positions = int(max_positions or cap)
        inv_freq = 1.0 / (s.rope_theta ** (torch.arange(0, s.head_dim, 2, device=self.device, dtype=torch.float32) / s.head_dim))
        ang = torch.arange(self.max_positions, device=self.device, dtype=torch.float32)[:, None] * inv_freq[None, :]
        self.rope_cos = ang.cos().repeat(1, 2).to(self.dtype)
        self.rope_sin = torch.cat((-ang.sin(), ang.sin()), dim=-1).to(self.dtype)
        self.attention = self._choose_prefill_attention()
        self._graph = self.graph_output = None

    # -- construction helpers --------------------------------------------------------------

    def _weight(self, rows: int, cols: int, std: float | None = None, shard_dim: int | None = None):
        """A random [rows, cols] weight of the full model, or this rank's slice along ``shard_dim``."""
        tp, r = self.tensor_parallel, self.tp_rank
        if shard_dim is None or tp == 1:
            if self.reference_init:
                full = self.torch.empty(rows, cols).normal_(0.0, std or 1.0 / math.sqrt(cols), generator=self._cpu_gen)
                return full.to(device=self.device, dtype=self.dtype)
            return self._rand(rows, cols, std)
        if self.reference_init:
            full = self.torch.empty(rows, cols).normal_(0.0, std or 1.0 / math.sqrt(cols), generator=self._cpu_gen)
            part = full.chunk(tp, dim=shard_dim)[r].contiguous()
            return part.to(device=self.device, dtype=self.dtype)
        shard_rows, shard_cols = (rows // tp, cols) if shard_dim == 0 else (rows, cols // tp)
        return self._rand(shard_rows, shard_cols, std or 1.0 / math.sqrt(cols))

    def _all_reduce(self, x):
        """Sum a row-parallel projection's partial outputs over the TP group (in place)."""
        if self.tensor_parallel > 1:
            self.torch.distributed.all_reduce(x)
        return x

    def _gather_vocab(self, logits):
        """Concatenate every rank's vocabulary shard of the logits (column-parallel LM head)."""
        if self.tensor_parallel == 1:
            return logits
        torch = self.torch
        parts = [torch.empty_like(logits) for _ in range(self.tensor_parallel)]
        torch.distributed.all_gather(parts, logits.contiguous())
        return torch.cat(parts, dim=-1)

    def _rand(self, rows: int, cols: int, std: float | None = None):
        std = 1.0 / math.sqrt(cols) if std is None else std
        t = self.torch.empty(rows, cols, dtype=self.dtype, device=self.device)
        return t.normal_(0.0, std, generator=self._gen)

    def _sdpa_context(self):
        """On CUDA, forbid the unfused math attention so a slow fallback cannot hide."""
        if not self.is_cuda:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])

    def _choose_prefill_attention(self) -> str:
        """'gqa' (SDPA enable_gqa: K/V heads broadcast in-kernel) when a fused kernel takes it, else 'repeat'."""
        torch, s = self.torch, self.local
        if not self.is_cuda or s.heads == s.kv_heads:
            return "repeat"
        q = torch.zeros(1, s.heads, 16, s.head_dim, dtype=self.dtype, device=self.device)
        k = torch.zeros(1, s.kv_heads, 16, s.head_dim, dtype=self.dtype, device=self.device)
        try:
            with self._sdpa_context():
                self.F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            torch.cuda.synchronize(self.device)
            return "gqa"
        except (RuntimeError, TypeError):
            return "repeat"

    # -- the model -------------------------------------------------------------------------

    def _rms_norm(self, x, weight):
        """RMSNorm (one fused kernel where torch has it, as serving engines fuse it)."""
        return self.F.rms_norm(x, (self.shape.hidden,), weight, self.shape.rms_eps)

    def _rope(self, x, cos, sin_signed):
        """Rotate-half RoPE in three kernels: x*cos + [x2, x1]*[-sin, sin].

        x [N, heads, head_dim] (query and key heads together), cos/sin_signed [N, head_dim].
        """
        x1, x2 = x.chunk(2, dim=-1)
        rotated = self.torch.cat((x2, x1), dim=-1)
        return self.torch.addcmul(x * cos[:, None, :], rotated, sin_signed[:, None, :])

    def _cache_views(self, layer: int, T: int, B: int, C: int):
        """K/V views for B decoding sequences of context C, then one prompt of T tokens."""
        s = self.local
        per_tok = s.kv_heads * s.head_dim
        k_all, v_all = self.kv_cache[layer, 0], self.kv_cache[layer, 1]
        n_dec = B * C * per_tok
        dec = (k_all[:n_dec].view(B, s.kv_heads, C, s.head_dim), v_all[:n_dec].view(B, s.kv_heads, C, s.head_dim))
        pre = (
            k_all[n_dec : n_dec + T * per_tok].view(1, s.kv_heads, T, s.head_dim),
            v_all[n_dec : n_dec + T * per_tok].view(1, s.kv_heads, T, s.head_dim),
        )
        return dec, pre

    def _attention(self, layer: int, q, k, v, T: int, B: int, C: int):
        """q [T+B, heads, hd], k/v [T+B, kv_heads, hd] -> [T+B, heads*hd]; writes K/V to the cache."""
        s, F, torch = self.local, self.F, self.torch
        group = s.heads // s.kv_heads
        (k_dec, v_dec), (k_pre, v_pre) = self._cache_views(layer, T, B, C)
        outs = []
        with self._sdpa_context():
            if T:
                kp = k[:T].transpose(0, 1).unsqueeze(0)
                vp = v[:T].transpose(0, 1).unsqueeze(0)
                k_pre.copy_(kp)
                v_pre.copy_(vp)
                qp = q[:T].transpose(0, 1).unsqueeze(0)
                if self.attention == "gqa":
                    o = F.scaled_dot_product_attention(qp, k_pre, v_pre, is_causal=True, enable_gqa=True)
                else:
                    o = F.scaled_dot_product_attention(
                        qp, k_pre.repeat_interleave(group, dim=1), v_pre.repeat_interleave(group, dim=1), is_causal=True
                    )
                outs.append(o[0].transpose(0, 1).reshape(T, s.heads * s.head_dim))
            if B:
                k_dec[:, :, C - 1, :].copy_(k[T:])
                v_dec[:, :, C - 1, :].copy_(v[T:])
                qd = q[T:].view(B, s.kv_heads, group, s.head_dim)
                o = F.scaled_dot_product_attention(qd, k_dec, v_dec)
                outs.append(o.reshape(B, s.heads * s.head_dim))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    def forward(self, token_ids, positions, T: int, B: int, C: int):
        """One engine step; returns logits [rows that emit a token, vocab] (all ranks: full vocab)."""
        s, F = self.local, self.F
        n = T + B
        x = F.embedding(token_ids, self.embed)
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        for i, w in enumerate(self.layers):
            h = self._rms_norm(x, w["attn_norm"])
            qkv = F.linear(h, w["w_qkv"])
            qk, v = qkv.split([(s.heads + s.kv_heads) * s.head_dim, s.kv_heads * s.head_dim], dim=-1)
            qk = self._rope(qk.view(n, s.heads + s.kv_heads, s.head_dim), cos, sin)
            q, k = qk[:, : s.heads], qk[:, s.heads :]
            v = v.view(n, s.kv_heads, s.head_dim)
            x = x + self._all_reduce(F.linear(self._attention(i, q, k, v, T, B, C), w["w_o"]))
            h = self._rms_norm(x, w["mlp_norm"])
            gate, up = F.linear(h, w["w_gate_up"]).chunk(2, dim=-1)
            x = x + self._all_reduce(F.linear(F.silu(gate) * up, w["w_down"]))
        rows = x[T - 1 :] if T else x
        return self._gather_vocab(F.linear(self._rms_norm(rows, self.final_norm), self.lm_head))

    # -- the profiler's backend interface -------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        torch = self.torch
        gpu = torch.cuda.get_device_name(self.device) if self.is_cuda else "cpu"
        return {
            "model": self.model_name,
            "gpu": gpu,
            "dtype": self.dtype_name,
            "backend": self.name,
            "layers": self.shape.layers,
            "tensor_parallel": self.tensor_parallel,
            "attention": self.attention,
            "cuda_graph": self.cuda_graph,
            "torch_version": torch.__version__,
        }

    def fits(self, point) -> bool:
        """Whether the point's KV (B*C + T tokens) fits the cache and its positions the RoPE table."""
        need = point.decode_batch * point.context_tokens + point.prefill_tokens
        max_pos = max(point.context_tokens, point.prefill_tokens)
        return need <= self.kv_capacity_tokens and max_pos <= self.max_positions

    def prepare(self, point, cuda_graph: bool | None = None) -> Callable[[], None]:
        """Static inputs for the point and a zero-argument callable that enqueues one step."""
        torch = self.torch
        T, B, C = point.prefill_tokens, point.decode_batch, point.context_tokens
        self.release()
        ids = torch.randint(0, self.shape.vocab, (T + B,), device=self.device, generator=self._gen)
        positions = torch.cat([
            torch.arange(T, device=self.device),
            torch.full((B,), max(C - 1, 0), device=self.device, dtype=torch.long),
        ])

        def step():
            return self.forward(ids, positions, T, B, C)

        use_graph = self.cuda_graph if cuda_graph is None else (cuda_graph and self.is_cuda)
        if not use_graph:
            return step
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.graph_output = step()  # static: refreshed by every replay
        self._graph = graph
        return graph.replay

    def release(self) -> None:
        """Drop the captured graph (and its memory pool)."""
        if self._graph is not None:
            self._graph = self.graph_output = None
            self.torch.cuda.synchronize(self.device)
            self.torch.cuda.empty_cache()

    def synchronize(self) -> None:
        if self.is_cuda:
            self.torch.cuda.synchronize(self.device)

    def time_reps(self, step: Callable[[], None], reps: int) -> np.ndarray:
        """Run ``step`` ``reps`` times back to back; per-step times in ms (CUDA events on GPU)."""
        torch = self.torch
        if not self.is_cuda:
            out = np.empty(reps)
            for i in range(reps):
                t0 = time.perf_counter()
                step()
                out[i] = (time.perf_counter() - t0) * 1e3
            return out
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(self.device)
        return np.array([s.elapsed_time(e) for s, e in events])
