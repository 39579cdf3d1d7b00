"""Sanity check of the torch profiler backend on a GPU, before trusting its timings.

    python calibration/check_torch_backend.py [--spec calibration/llama31_8b_spec.json] [--layers 2]

With the model's real layer shapes (a few layers, random bf16 weights) it checks that
(1) decoding the last token against the cache written by a prefill gives the prefill's logits
(RoPE, grouped-query attention and cache layout agree), and (2) a CUDA-graph replay of a
decode step gives the same logits as the eager step. Prints one JSON line; exit 1 on failure.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from fluidserve.calibration.profiler import GridPoint
from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="calibration/llama31_8b_spec.json")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    spec = json.load(open(args.spec))
    b = TorchBackend(DecoderShape.from_spec(spec, layers=args.layers), spec.get("name", "custom"),
                     device=args.device, dtype="bfloat16", kv_capacity_tokens=8 * 512, max_positions=512)
    dev = b.device
    c = 300
    ids = torch.randint(0, spec["vocab"], (c,), device=dev)
    full = b.forward(ids, torch.arange(c, device=dev), c, 0, 0).float()
    dec = b.forward(ids[-1:], torch.tensor([c - 1], device=dev), 0, 1, c).float()
    rel_prefill_decode = ((full - dec).norm() / full.norm()).item()
    # graph replay vs eager for a batch-8 decode step on the same static inputs
    point = GridPoint("decode", 0, 8, 512)
    b._gen.manual_seed(7)
    out_eager = b.prepare(point, cuda_graph=False)().float()
    b._gen.manual_seed(7)
    replay = b.prepare(point)
    out = replay()
    b.synchronize()
    out_graph = (b.graph_output if b.cuda_graph else out).float()
    rel_graph_eager = ((out_graph - out_eager).norm() / out_eager.norm()).item()
    kernels = None
    if b.is_cuda:  # GPU kernels one eager decode step launches (fewer = closer to a fused engine)
        step = b.prepare(GridPoint("decode", 0, 8, 512), cuda_graph=False)
        step()
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        kernels = sum(1 for e in prof.events() if e.device_type.name == "CUDA")
    result = {
        "layers": args.layers,
        "cuda_kernels_per_decode_step": kernels,
        "gpu": torch.cuda.get_device_name(dev) if b.is_cuda else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "prefill_attention": b.attention,
        "rel_err_decode_vs_prefill_logits": rel_prefill_decode,
        "rel_err_graph_vs_eager_logits": rel_graph_eager,
        "logits_finite": bool(torch.isfinite(out_eager).all().item() and torch.isfinite(out_graph).all().item()),
    }
    b.release()
    ok = rel_prefill_decode < 0.05 and rel_graph_eager < 1e-2 and result["logits_finite"]
    result["ok"] = ok
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
