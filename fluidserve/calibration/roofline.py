"""Roofline presets: batch-time coefficients from datasheet numbers, and the roofline plot.

For a model on ``tp`` GPUs (each GPU holds 1/tp of the weights and of the KV heads)::

    d0_s         = streamed_weight_bytes / tp / (bandwidth * eff.memory)
                   + eff.step_overhead_s + layers * eff.layer_overhead_s
                   + 2 * layers * eff.all_reduce_latency_s                      (tp > 1)
    d1_prefill_s = 2 * stack_params / tp / (peak_flops * eff.compute) + all_reduce_per_token_s
    d1_decode_s  = eff.decode_compute_exposed * 2 * (stack_params + lm_head_params) / tp
                   / (peak_flops * eff.compute) + all_reduce_per_token_s
    d2_kv_s      = kv_bytes_per_token(per GPU) / (bandwidth * (eff.kv_memory or eff.memory))
    d3_prefill_attn_s = 2 * layers * heads * head_dim / tp / (peak_flops * eff.compute)
    moe_expert_s = layers * expert_params * dtype_bytes / tp / (bandwidth * eff.memory)  (MoE only)

* ``streamed_weight_bytes``: every weight a decode step reads, i.e. all parameters except the
  input embedding table, of which a step reads only its tokens' rows (a tied table is read
  whole, as the LM head).
* ``stack_params = layers * layer_params`` (the decoder layers, no embeddings or LM head).
* A prompt token costs 2 FLOPs per (active) layer parameter (one multiply-add). Prefill
  attention costs 4 FLOPs per head dimension per query x key pair (QK^T and PV); a causal chunk
  of ``c`` tokens after ``k`` cached ones has about ``c*k + c^2/2`` pairs, i.e. 2 FLOPs per head
  dimension per unit of the step's ``prefill_attention_tokens = c * (k + c)``.
* MoE: the streamed weights exclude the routed experts; ``moe_expert_s`` streams one expert's
  weights in all layers, for each of the ``E (1 - (1 - k/E)^n)`` distinct experts a batch of
  ``n`` tokens activates (``BatchTimeModel.expected_experts``). Compute uses the active
  parameters (``specs.param_count(active_only=True)``).
* A decode token costs 2 FLOPs per layer and LM-head parameter, but below the ridge point those
  GEMMs run while the weights stream in; ``decode_compute_exposed`` is the part of that compute
  time that is not hidden (a small-M GEMM overlaps its tile loads and MMAs only partly).
* Tensor parallelism: two all-reduces per layer (after attention and after the MLP) of
  ``tokens * hidden * dtype_bytes`` bytes each; a ring all-reduce moves ``2 (tp-1)/tp`` of the
  message over each GPU's link: ``all_reduce_per_token_s = 2 * layers * 2 (tp-1)/tp * hidden *
  dtype_bytes / (interconnect_Bps * eff.interconnect)``, plus a fixed latency per all-reduce in d0
  and ``tp_step_overhead_s`` per step (broadcasting the scheduler output to the workers, waiting
  for the slowest GPU).

Efficiency defaults (:class:`Efficiency`) and where they come from:

* ``memory = 0.80``: achieved / peak memory bandwidth of large streaming reads. Serving stacks
  reach roughly 60-85% "model bandwidth utilization" in decode (e.g. the MBU entry of
  open-source-ai.tech's glossary); on this project's H100 profile
  (``calibration/data/h100_llama31_8b_profile.csv``) the decode-only fit's d2_kv_s implies about 0.78 of
  3.35 TB/s for KV reads.
* ``kv_memory = None`` (same as ``memory``): the bandwidth fraction that decode attention's
  paged KV reads reach, which can differ from streaming the weights (many small blocks).
* ``compute = 0.60``: prefill GEMM model-FLOPs utilisation; the H100 profile's 4096-token
  prefill runs at about 52% of 989 TFLOP/s including attention
  (:func:`step_flops_and_bytes`).
* ``interconnect = 0.80``: NCCL's effective NVLink bandwidth is about 80% of line rate
  (370 of 450 GB/s on H100; S. Jeaugey in NVIDIA/nccl-tests issue #212).
* ``all_reduce_latency_s = 10e-6``: small-message NCCL all-reduce latency within an NVLink node
  is of the order of 10 us.
* ``step_overhead_s = 1e-4`` and ``layer_overhead_s = 25e-6``: a CUDA-graph replay, sampling
  and host sync per step, and about ten kernels per layer whose ramp-up and tail (~2.5 us each)
  do not overlap the next kernel.
* ``decode_compute_exposed = 0.5``: half of the decode GEMM time shows. On the H100 profile the
  decode-only fit's d1_decode_s is about 0.4 of the full compute time at ``compute`` efficiency.

These are starting points for when you cannot measure; ``calibrate fit`` on a step profile
replaces them.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json


@dataclass(frozen=True)
class Efficiency:
    """Fractions of datasheet peaks that real kernels reach, and fixed overheads (seconds).

    See the module docstring for the source of each default.
    """

    memory: float = 0.80
    compute: float = 0.60
    interconnect: float = 0.80
    decode_compute_exposed: float = 0.5
    step_overhead_s: float = 1e-4
    layer_overhead_s: float = 25e-6
    all_reduce_latency_s: float = 10e-6
    tp_step_overhead_s: float = 0.0
    kv_memory: float | None = None

    def __post_init__(self) -> None:
        for name in ("memory", "compute", "interconnect") + (("kv_memory",) if self.kv_memory is not None else ()):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise InputError(f"efficiency.{name} must be in (0, 1], got {value!r}")
        if not 0 <= self.decode_compute_exposed <= 1:
            raise InputError(f"efficiency.decode_compute_exposed must be in [0, 1], got {self.decode_compute_exposed!r}")
        for name in ("step_overhead_s", "layer_overhead_s", "all_reduce_latency_s", "tp_step_overhead_s"):
            if getattr(self, name) < 0:
                raise InputError(f"efficiency.{name} must be >= 0, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class RooflinePrediction:
    """A roofline batch-time model and the quantities behind it (bytes, FLOPs, seconds)."""

    gpu: str
    model_name: str
    tensor_parallel: int
    dtype_bytes: int
    batch_time: BatchTimeModel
    streamed_weight_bytes_per_gpu: float
    kv_bytes_per_token_per_gpu: int
    prefill_flops_per_token: float
    decode_flops_per_token: float
    all_reduce_per_token_s: float
    m_total_tokens: int | None
    efficiency: Efficiency

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("batch_time", "efficiency")}
        out.update(self.batch_time.to_dict())
        out["efficiency"] = asdict(self.efficiency)
        return out


def streamed_weight_bytes(model: str | specs.ModelSpec, dtype_bytes: int = 2) -> int:
    """Weight bytes one decode step reads: all weights but the (untied) input embedding table."""
    m = specs.model(model)
    skipped = 0 if m.tied_embeddings else specs.embedding_params(m)
    return (specs.param_count(m) - skipped) * int(dtype_bytes)


def predict(
    gpu: str | specs.GpuSpec,
    model: str | specs.ModelSpec,
    tensor_parallel: int = 1,
    efficiency: Efficiency = Efficiency(),
    dtype_bytes: int = 2,
    gpu_memory_utilization: float = 0.9,
) -> RooflinePrediction:
    """The roofline batch-time model of ``model`` on ``tensor_parallel`` ``gpu``s, with its parts."""
    g, m = specs.gpu(gpu), specs.model(model)
    tp = int(tensor_parallel)
    kv_per_gpu = specs.kv_bytes_per_token(m, dtype_bytes, tp)  # also validates tp
    eff = efficiency
    bandwidth = g.mem_bandwidth_Bps * eff.memory
    flops_rate = g.peak_flops * eff.compute
    weights_gpu = streamed_weight_bytes(m, dtype_bytes) / tp
    stack = m.layers * specs.layer_params(m, active_only=True)
    prefill_flops = 2.0 * stack / tp
    decode_flops = 2.0 * (stack + specs.lm_head_params(m)) / tp
    if tp > 1:
        ring = 2.0 * (tp - 1) / tp
        ar_token_s = 2 * m.layers * ring * m.hidden * dtype_bytes / (g.interconnect_Bps * eff.interconnect)
        ar_fixed_s = 2 * m.layers * eff.all_reduce_latency_s + eff.tp_step_overhead_s
    else:
        ar_token_s = ar_fixed_s = 0.0
    moe = {}
    if m.is_moe:
        # every step reads the shared weights; each routed expert's weights only when a token picks it
        expert_bytes_gpu = m.layers * specs.expert_params(m) * dtype_bytes / tp
        weights_gpu -= m.num_experts * expert_bytes_gpu
        moe = {"moe_expert_s": expert_bytes_gpu / bandwidth, "moe_num_experts": m.num_experts,
               "moe_top_k": m.experts_per_token}
    model_bt = BatchTimeModel(
        d0_s=weights_gpu / bandwidth + eff.step_overhead_s + m.layers * eff.layer_overhead_s + ar_fixed_s,
        d1_prefill_s=prefill_flops / flops_rate + ar_token_s,
        d1_decode_s=eff.decode_compute_exposed * decode_flops / flops_rate + ar_token_s,
        d2_kv_s=kv_per_gpu / (g.mem_bandwidth_Bps * (eff.kv_memory or eff.memory)),
        d3_prefill_attn_s=2.0 * m.layers * m.heads * m.head_dim / tp / flops_rate,
        **moe,
    )
    try:
        m_total = specs.derive_m_total(g, m, gpu_memory_utilization, tp, dtype_bytes=dtype_bytes)
    except InputError:
        m_total = None
    return RooflinePrediction(
        gpu=g.name, model_name=m.name, tensor_parallel=tp, dtype_bytes=int(dtype_bytes),
        batch_time=model_bt, streamed_weight_bytes_per_gpu=weights_gpu, kv_bytes_per_token_per_gpu=kv_per_gpu,
        prefill_flops_per_token=prefill_flops, decode_flops_per_token=decode_flops,
        all_reduce_per_token_s=ar_token_s, m_total_tokens=m_total, efficiency=eff,
    )


def predict_batch_time(
    gpu: str | specs.GpuSpec,
    model: str | specs.ModelSpec,
    tensor_parallel: int = 1,
    efficiency: Efficiency = Efficiency(),
    dtype_bytes: int = 2,
) -> BatchTimeModel:
    """The roofline :class:`BatchTimeModel` (seconds) of ``model`` on ``tensor_parallel`` ``gpu``s."""
    return predict(gpu, model, tensor_parallel, efficiency, dtype_bytes).batch_time


def step_flops_and_bytes(
    model: str | specs.ModelSpec,
    prefill_tokens,
    decode_tokens,
    kv_tokens,
    batch_size=None,
    dtype_bytes: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """FLOPs and memory bytes of engine steps (arrays or scalars), for the roofline plot.

    FLOPs: 2 per layer parameter per token, 2 per LM-head parameter per decoding sequence and
    per prompt, and attention: ``4 * layers * heads * head_dim`` per context token read in
    decode, ``2 * layers * heads * head_dim * T (T + 1)`` for a causal prompt of T tokens (the
    prompt tokens of a step are split evenly over ``batch_size - decode_tokens`` prompts).
    Bytes: the streamed weights, the KV cache read by decode, the KV written for new tokens.
    """
    m = specs.model(model)
    p = np.asarray(prefill_tokens, dtype=np.float64)
    d = np.asarray(decode_tokens, dtype=np.float64)
    kv = np.asarray(kv_tokens, dtype=np.float64)
    if batch_size is None:
        prompts = (p > 0).astype(np.float64)
    else:
        prompts = np.where(p > 0, np.maximum(np.asarray(batch_size, dtype=np.float64) - d, 1.0), 0.0)
    t_each = np.divide(p, prompts, out=np.zeros_like(p), where=prompts > 0)
    attn = m.layers * m.heads * m.head_dim
    flops = (
        2.0 * m.layers * specs.layer_params(m) * (p + d)
        + 2.0 * specs.lm_head_params(m) * (d + prompts)
        + 4.0 * attn * kv
        + 2.0 * attn * prompts * t_each * (t_each + 1)
    )
    kv_bytes = specs.kv_bytes_per_token(m, dtype_bytes)
    nbytes = streamed_weight_bytes(m, dtype_bytes) + kv_bytes * (kv + p + d)
    return flops, nbytes


def plot_roofline(
    gpu: str | specs.GpuSpec,
    model: str | specs.ModelSpec | None = None,
    profile=None,
    efficiency: Efficiency | None = Efficiency(),
    dtype_bytes: int = 2,
):
    """Arithmetic intensity (FLOP/byte) vs attainable FLOP/s, with the ridge point.

    ``profile``: an optional DataFrame of step-profile rows (``prefill_tokens, decode_tokens,
    kv_tokens, time_ms``, optionally ``phase`` and ``batch_size``) drawn as measured points,
    their FLOPs and bytes from :func:`step_flops_and_bytes` for ``model``. ``efficiency`` adds the
    derated roof (dashed). Returns the matplotlib Figure.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    g = specs.gpu(gpu)
    ridge = g.ridge_flops_per_byte
    ai = np.logspace(-1, np.log10(ridge) + 2.5, 400)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.loglog(ai, np.minimum(g.peak_flops, g.mem_bandwidth_Bps * ai), color="k", lw=2, label=f"{g.name} roofline")
    if efficiency is not None:
        ax.loglog(
            ai,
            np.minimum(g.peak_flops * efficiency.compute, g.mem_bandwidth_Bps * efficiency.memory * ai),
            color="k", ls="--", lw=1,
            label=f"derated ({efficiency.memory:.0%} bandwidth, {efficiency.compute:.0%} compute)",
        )
    ax.axvline(ridge, color="0.5", ls=":", lw=1)
    ax.annotate(f"ridge {ridge:.0f} FLOP/B", (ridge, g.peak_flops), textcoords="offset points",
                xytext=(5, -14), fontsize=8)
    if profile is not None and len(profile):
        if model is None:
            raise InputError("the roofline plot needs a model to place measured profile points")
        m = specs.model(model)
        flops, nbytes = step_flops_and_bytes(
            m, profile["prefill_tokens"], profile["decode_tokens"], profile["kv_tokens"],
            profile["batch_size"] if "batch_size" in profile else None, dtype_bytes,
        )
        x = flops / nbytes
        y = flops / (np.asarray(profile["time_ms"], dtype=np.float64) * 1e-3)
        phases = np.asarray(profile["phase"]).astype(str) if "phase" in profile else np.full(len(x), "measured")
        for phase in dict.fromkeys(phases):
            sel = phases == phase
            ax.scatter(x[sel], y[sel], s=18, label=f"measured {phase} ({m.name})", zorder=3)
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("attainable throughput (FLOP/s)")
    ax.set_title(f"Roofline: {g.name} ({g.peak_flops / 1e12:.0f} TFLOP/s, {g.mem_bandwidth_Bps / 1e12:.2f} TB/s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def save_figure(fig, path_stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``path_stem.<fmt>`` for each format; returns the paths."""
    import matplotlib.pyplot as plt

    path_stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = path_stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=150)
        paths.append(path)
    plt.close(fig)
    return paths


def write_preset(prediction: RooflinePrediction, path: str | Path) -> Path:
    """A batch-time preset YAML (``BatchTimeModel.from_yaml`` reads it) from a roofline prediction."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = prediction.batch_time.to_dict()
    data["metadata"] = {
        "created_by": "fluidserve calibrate roofline",
        "kind": "roofline",
        "gpu": prediction.gpu,
        "model": prediction.model_name,
        "tensor_parallel": prediction.tensor_parallel,
        "dtype_bytes": prediction.dtype_bytes,
        "m_total_tokens": prediction.m_total_tokens,
        "efficiency": asdict(prediction.efficiency),
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# -- command: python -m fluidserve calibrate roofline ----------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpu", required=True, help=f"GPU preset ({', '.join(specs.gpu_names())})")
    parser.add_argument("--model", required=True, help=f"model preset ({', '.join(specs.model_names())})")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel degree (GPUs per replica)")
    parser.add_argument("--dtype-bytes", type=int, default=2, help="bytes per weight / KV element (2: BF16)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="for M_total (vLLM's flag)")
    parser.add_argument("--memory-eff", type=float, default=Efficiency.memory, help="fraction of peak bandwidth")
    parser.add_argument("--compute-eff", type=float, default=Efficiency.compute, help="fraction of peak FLOP/s")
    parser.add_argument("--profile", help="step-profile CSV whose rows are drawn on the roofline plot")
    parser.add_argument("--out", help="write the predicted coefficients as a batch-time preset YAML")
    parser.add_argument("--output-dir", help="directory for roofline.png/.pdf (default: no plot)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


@cli_errors
def main(args: argparse.Namespace) -> int:
    if args.tp < 1:
        raise InputError(f"--tp must be >= 1, got {args.tp}")
    if args.dtype_bytes not in (1, 2, 4):
        raise InputError(f"--dtype-bytes must be 1, 2 or 4, got {args.dtype_bytes}")
    eff = Efficiency(memory=args.memory_eff, compute=args.compute_eff)
    pred = predict(args.gpu, args.model, args.tp, eff, args.dtype_bytes, args.gpu_memory_utilization)
    out = pred.to_dict()
    if args.out:
        out["preset"] = str(write_preset(pred, args.out))
    if args.output_dir:
        profile = None
        if args.profile:
            from fluidserve.calibration.fit import read_profile

            profile = read_profile(args.profile)
        fig = plot_roofline(args.gpu, args.model, profile, eff, args.dtype_bytes)
        out["plots"] = [str(p) for p in save_figure(fig, Path(args.output_dir) / "roofline")]
    if args.json:
        print(to_json(out))
        return 0
    bt = pred.batch_time
    lines = [
        f"roofline: {pred.model_name} on {pred.tensor_parallel} x {pred.gpu} (dtype {pred.dtype_bytes} B)",
        f"  d0_s          {bt.d0_s:.4e}   ({pred.streamed_weight_bytes_per_gpu / 1e9:.2f} GB of weights per GPU per step)",
        f"  d1_prefill_s  {bt.d1_prefill_s:.4e}   ({pred.prefill_flops_per_token / 1e9:.2f} GFLOP per prompt token per GPU)",
        f"  d1_decode_s   {bt.d1_decode_s:.4e}",
        f"  d2_kv_s       {bt.d2_kv_s:.4e}   ({pred.kv_bytes_per_token_per_gpu} KV bytes per token per GPU)",
        f"  M_total       {pred.m_total_tokens if pred.m_total_tokens is not None else 'model does not fit'}"
        f" tokens at gpu_memory_utilization {args.gpu_memory_utilization}",
    ]
    if "preset" in out:
        lines.append(f"  preset: {out['preset']}")
    for p in out.get("plots", []):
        lines.append(f"  plot: {p}")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m fluidserve.calibration.roofline")
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
