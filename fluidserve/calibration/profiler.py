"""Step profiler: time (and meter) engine steps over a grid of batch shapes, write a profile CSV.

A grid point is one engine step: ``decode`` (B sequences decode one token each, every one
attending over C context tokens), ``prefill`` (one prompt of T tokens) or ``mixed`` (a T-token
prompt chunk batched with B decodes at context C). Profile rows use the batch-time model's
variables (fluidserve/batch_time.py):

* decode:  prefill_tokens = 0, decode_tokens = B, kv_tokens = B * C, batch_size = B
* prefill: prefill_tokens = T, decode_tokens = 0, kv_tokens = 0,     batch_size = 1
* mixed:   prefill_tokens = T, decode_tokens = B, kv_tokens = B * C, batch_size = B + 1

``time_ms`` is the median of ``reps`` back-to-back steps after warmup (CUDA events on a GPU);
reps are chosen so the timed window lasts at least ``min_time_s``. With a PowerMonitor,
``energy_j`` is the GPU's total-energy counter difference over that window divided by reps,
``avg_power_w`` that energy over the window's wall time, and ``sm_clock_mhz`` the mean SM
clock sampled during the window. Clocks are only read, never set.

Command: ``python -m fluidserve calibrate profile --backend torch --model Llama-3.1-8B ...``
(also ``python -m fluidserve.calibration.profiler``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json

PROFILE_COLUMNS = [
    "phase", "batch_size", "prefill_tokens", "decode_tokens", "kv_tokens", "time_ms",
    "energy_j", "avg_power_w", "sm_clock_mhz",
]
EXTRA_COLUMNS = [
    "context_tokens", "reps", "time_ms_p10", "time_ms_p90", "window_start_s", "window_end_s", "model", "gpu", "dtype", "backend",
    "layers",
]

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128)
DEFAULT_CONTEXTS = (128, 512, 1024, 2048, 4096)
DEFAULT_PREFILL_TOKENS = (64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class GridPoint:
    """One engine step shape: a prompt chunk of ``prefill_tokens`` and ``decode_batch``
    decoding sequences of ``context_tokens`` KV tokens each."""

    phase: str
    prefill_tokens: int
    decode_batch: int
    context_tokens: int

    @property
    def batch_size(self) -> int:
        return self.decode_batch + (1 if self.prefill_tokens else 0)

    @property
    def decode_tokens(self) -> int:
        return self.decode_batch

    @property
    def kv_tokens(self) -> int:
        return self.decode_batch * self.context_tokens

    @property
    def kv_capacity_tokens(self) -> int:
        """KV-cache tokens the step occupies (decode contexts plus the prompt)."""
        return self.kv_tokens + self.prefill_tokens


@dataclass(frozen=True)
class TimingSettings:
    """How each point is timed: ``warmup`` untimed steps, then between ``min_reps`` and
    ``max_reps`` timed steps, enough to fill ``min_time_s`` seconds."""

    warmup: int = 3
    min_reps: int = 5
    max_reps: int = 500
    min_time_s: float = 0.5

    def __post_init__(self) -> None:
        if self.warmup < 1 or self.min_reps < 1 or self.max_reps < self.min_reps or self.min_time_s < 0:
            raise InputError(
                f"timing settings: need warmup >= 1, 1 <= min_reps <= max_reps, min_time_s >= 0; got {self}"
            )


def build_grid(
    batch_sizes: Iterable[int] = DEFAULT_BATCH_SIZES,
    contexts: Iterable[int] = DEFAULT_CONTEXTS,
    prefill_tokens: Iterable[int] = DEFAULT_PREFILL_TOKENS,
    mixed: Iterable[tuple[int, int, int]] = (),
) -> list[GridPoint]:
    """Decode points (every batch size x context), prefill points, then mixed (T, B, C) points."""
    batch_sizes, contexts, prefill_tokens = list(batch_sizes), list(contexts), list(prefill_tokens)
    for name, values in (("batch size", batch_sizes), ("context", contexts), ("prefill tokens", prefill_tokens)):
        bad = [v for v in values if int(v) < 1]
        if bad:
            raise InputError(f"profile grid: {name} values must be >= 1, got {bad[0]}")
    points = [GridPoint("decode", 0, int(b), int(c)) for b in batch_sizes for c in contexts]
    points += [GridPoint("prefill", int(t), 0, 0) for t in prefill_tokens]
    for t, b, c in mixed:
        if min(t, b, c) < 1:
            raise InputError(f"profile grid: mixed point {t}:{b}:{c} needs T, B, C >= 1")
        points.append(GridPoint("mixed", int(t), int(b), int(c)))
    if not points:
        raise InputError("profile grid is empty: give batch sizes and contexts, or prefill tokens")
    return points


def measure_point(backend, point: GridPoint, settings: TimingSettings, monitor=None, gpu_position=0) -> dict:
    """Time one grid point on ``backend`` (and meter it with ``monitor``); returns one profile row.

    ``gpu_position`` is the monitor's position of the GPU to meter, or a sequence of positions
    (a tensor-parallel step): energy and power are then summed over those GPUs and the SM clock
    averaged.
    """
    positions = [gpu_position] if isinstance(gpu_position, int) else list(gpu_position)
    step = backend.prepare(point)
    try:
        warm = backend.time_reps(step, settings.warmup)
        est_s = max(float(np.median(warm)) / 1e3, 1e-6)
        reps = int(np.clip(math.ceil(settings.min_time_s / est_s), settings.min_reps, settings.max_reps))
        energy_j = power_w = clock = t0 = t1 = np.nan
        if monitor is not None:
            backend.synchronize()
            t0, c0 = monitor.elapsed_s(), monitor.energy_counter_j()
        times = backend.time_reps(step, reps)  # synchronizes at the end
        if monitor is not None:
            t1, c1 = monitor.elapsed_s(), monitor.energy_counter_j()
            e0 = [c0[k] for k in positions]
            e1 = [c1[k] for k in positions]
            if all(e is not None for e in e0 + e1):
                energy_j = sum(b - a for a, b in zip(e0, e1)) / reps
                power_w = sum(b - a for a, b in zip(e0, e1)) / (t1 - t0)
            window = monitor.samples_between(t0, t1)
            window = window[window["gpu"].isin([monitor.gpu_indices[k] for k in positions])]
            if len(window):
                clock = float(window["sm_clock_mhz"].mean())
            else:
                clock = float(np.mean([monitor.read(k)["sm_clock_mhz"] for k in positions]))
            if np.isnan(power_w) and len(window):
                power_w = float(window.groupby("gpu")["power_w"].mean().sum())
                energy_j = power_w * float(np.sum(times)) / 1e3 / reps
    finally:
        backend.release()
    return {
        "phase": point.phase,
        "batch_size": point.batch_size,
        "prefill_tokens": point.prefill_tokens,
        "decode_tokens": point.decode_tokens,
        "kv_tokens": point.kv_tokens,
        "time_ms": float(np.median(times)),
        "energy_j": energy_j,
        "avg_power_w": power_w,
        "sm_clock_mhz": clock,
        "context_tokens": point.context_tokens,
        "reps": reps,
        "time_ms_p10": float(np.percentile(times, 10)),
        "time_ms_p90": float(np.percentile(times, 90)),
        "window_start_s": t0,
        "window_end_s": t1,
    }


def run_profile(
    backend,
    points: Sequence[GridPoint],
    settings: TimingSettings = TimingSettings(),
    monitor=None,
    gpu_position: int = 0,
    progress: bool = True,
) -> tuple[pd.DataFrame, list[GridPoint]]:
    """Measure every point that fits the backend; returns (profile rows, skipped points)."""
    from tqdm import tqdm

    rows, skipped = [], []
    meta = backend.meta
    for point in tqdm(points, desc="profile", unit="pt", disable=not progress, file=sys.stderr):
        if not backend.fits(point):
            skipped.append(point)
            continue
        row = measure_point(backend, point, settings, monitor, gpu_position)
        rows.append({**row, **{k: meta.get(k) for k in ("model", "gpu", "dtype", "backend", "layers")}})
    df = pd.DataFrame(rows, columns=PROFILE_COLUMNS + EXTRA_COLUMNS)
    return df, skipped


def write_profile(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a profile CSV (PROFILE_COLUMNS first); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = PROFILE_COLUMNS + [c for c in df.columns if c not in PROFILE_COLUMNS]
    df[cols].to_csv(path, index=False, float_format="%.6g")
    return path


# -- model specs and backends ---------------------------------------------------------------


def resolve_model_spec(model: str | None, model_spec: str | None) -> tuple[str, Any]:
    """(name, spec) from ``--model-spec`` (a JSON file or inline JSON object) or ``fluidserve.specs``."""
    if model_spec:
        text = Path(model_spec).read_text() if Path(model_spec).is_file() else model_spec
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--model-spec: not a JSON object or JSON file ({exc})") from exc
        if not isinstance(spec, dict):
            raise InputError("--model-spec: expected a JSON object with layers, hidden, heads, kv_heads, ...")
        return model or spec.get("name", "custom"), spec
    if not model:
        raise InputError("give --model NAME (a fluidserve.specs preset) or --model-spec JSON")
    try:
        from fluidserve import specs
    except ImportError as exc:
        raise InputError(f"model presets unavailable ({exc}); give --model-spec JSON for '{model}'") from exc
    return model, specs.model(model)


def make_backend(name: str, model: str | None, spec: Any, points: Sequence[GridPoint], **kw):
    """The named backend, sized for ``points`` (KV cache of the largest point)."""
    if name == "torch":
        from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend

        shape = DecoderShape.from_spec(spec, layers=kw.pop("layers", None))
        need = max(p.kv_capacity_tokens for p in points)
        max_pos = max(max(p.context_tokens, p.prefill_tokens) for p in points)
        return TorchBackend(shape, model_name=model or "custom", kv_capacity_tokens=need, max_positions=max_pos, **kw)
    if name == "vllm":
        from fluidserve.calibration.vllm_backend import VllmBackend

        return VllmBackend(model or "", points, dtype=kw.get("dtype", "bfloat16"))
    raise InputError(f"unknown profiler backend '{name}'; choose torch or vllm")


# -- CLI ------------------------------------------------------------------------------------


def parse_int_list(text: str, flag: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; an empty string -> []."""
    if text is None or text.strip() == "":
        return []
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag}: expected comma-separated integers, got '{text}'") from None
    if any(v < 1 for v in values):
        raise InputError(f"{flag}: values must be >= 1, got '{text}'")
    return values


def parse_mixed(text: str) -> list[tuple[int, int, int]]:
    """'512:8:1024,256:32:2048' -> [(512, 8, 1024), (256, 32, 2048)] as (T, B, C)."""
    out = []
    for item in (text or "").split(","):
        if not item.strip():
            continue
        parts = item.split(":")
        try:
            t, b, c = (int(x) for x in parts)
        except ValueError:
            raise InputError(f"--mixed: expected PREFILL:BATCH:CONTEXT items, got '{item}'") from None
        out.append((t, b, c))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    j = lambda xs: ",".join(map(str, xs))  # noqa: E731
    parser.add_argument("--backend", choices=["torch", "vllm"], default="torch")
    parser.add_argument("--model", help="model preset name (fluidserve.specs), recorded in the CSV")
    parser.add_argument("--model-spec", help="JSON object or file: layers, hidden, heads, kv_heads, head_dim, intermediate, vocab")
    parser.add_argument("--layers", type=int, help="override the number of decoder layers (torch backend)")
    parser.add_argument("--batch-sizes", default=j(DEFAULT_BATCH_SIZES), help="decode batch sizes")
    parser.add_argument("--contexts", default=j(DEFAULT_CONTEXTS), help="decode context lengths (KV tokens per sequence)")
    parser.add_argument("--prefill-tokens", default=j(DEFAULT_PREFILL_TOKENS), help="prefill prompt lengths")
    parser.add_argument("--mixed", default="", help="mixed steps PREFILL:BATCH:CONTEXT,...")
    parser.add_argument("--device", default="cuda", help="torch device (cuda, cuda:1, cpu)")
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16, float16 or float32")
    parser.add_argument("--no-cuda-graph", action="store_true", help="time eager forwards instead of CUDA graphs")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-reps", type=int, default=5)
    parser.add_argument("--max-reps", type=int, default=500)
    parser.add_argument("--min-time-s", type=float, default=0.5, help="timed window per point, seconds")
    parser.add_argument("--nvml-index", default="auto", help="NVML GPU index to meter, 'none' to skip (auto: the torch device's)")
    parser.add_argument("--power-period-s", type=float, default=0.1, help="NVML sampling period, seconds")
    parser.add_argument("--trace-out", help="write the NVML trace of the whole run to this CSV")
    parser.add_argument("--out", default="step_profile.csv", help="profile CSV (relative to --output-dir if given)")
    parser.add_argument("--output-dir", help="directory for --out and --trace-out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tensor-parallel", type=int, default=1,
                        help="shard the torch decoder over N GPUs (one process each, NCCL; gloo with --device cpu)")
    parser.add_argument("--allreduce-tokens", default="",
                        help="also time bare all-reduces of [tokens, hidden] activations for these token counts")
    parser.add_argument("--allreduce-out", default="allreduce.csv", help="all-reduce sweep CSV (relative to --output-dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    parser.add_argument("--no-progress", action="store_true")


def _nvml_index(text: str, device: str) -> int | None:
    if text == "none":
        return None
    if text == "auto":
        if not device.startswith("cuda"):
            return None
        return int(device.split(":")[1]) if ":" in device else 0
    try:
        return int(text)
    except ValueError:
        raise InputError(f"--nvml-index: expected an integer, 'auto' or 'none', got '{text}'") from None


@cli_errors
def main(args: argparse.Namespace) -> int:
    points = build_grid(
        parse_int_list(args.batch_sizes, "--batch-sizes"),
        parse_int_list(args.contexts, "--contexts"),
        parse_int_list(args.prefill_tokens, "--prefill-tokens"),
        parse_mixed(args.mixed),
    )
    settings = TimingSettings(args.warmup, args.min_reps, args.max_reps, args.min_time_s)
    out_dir = Path(args.output_dir) if args.output_dir else None
    out = out_dir / args.out if out_dir and not Path(args.out).is_absolute() else Path(args.out)
    trace_out = None
    if args.trace_out:
        trace_out = out_dir / args.trace_out if out_dir and not Path(args.trace_out).is_absolute() else Path(args.trace_out)
    if args.tensor_parallel != 1 or args.allreduce_tokens:
        return _main_tensor_parallel(args, points, settings, out, trace_out, out_dir)
    if args.backend == "torch":
        name, spec = resolve_model_spec(args.model, args.model_spec)
        backend = make_backend(
            "torch", name, spec, points, layers=args.layers, device=args.device, dtype=args.dtype,
            cuda_graph=not args.no_cuda_graph, seed=args.seed,
        )
    else:
        backend = make_backend("vllm", args.model, None, points, dtype=args.dtype)

    monitor = None
    nvml_index = _nvml_index(args.nvml_index, args.device)
    if nvml_index is not None:
        from fluidserve.calibration.power import PowerMonitor

        monitor = PowerMonitor([nvml_index], period_s=args.power_period_s).start()
    wall0 = time.perf_counter()
    try:
        df, skipped = run_profile(backend, points, settings, monitor, progress=not args.no_progress)
    finally:
        if monitor is not None:
            monitor.stop()
    wall = time.perf_counter() - wall0
    write_profile(df, out)
    summary: dict[str, Any] = {
        "out": str(out),
        "rows": int(len(df)),
        "skipped": [f"{p.phase}:T={p.prefill_tokens},B={p.decode_batch},C={p.context_tokens}" for p in skipped],
        "wall_s": wall,
        **backend.meta,
    }
    if monitor is not None:
        summary["power"] = monitor.summary()
        if trace_out is not None:
            summary["trace"] = str(monitor.to_csv(trace_out))
        monitor.close()
    for p in skipped:
        print(f"skipped (does not fit): {summary['skipped'][skipped.index(p)]}", file=sys.stderr)
    if args.json:
        print(to_json(summary))
    else:
        print(f"wrote {len(df)} profile rows to {out} ({len(skipped)} skipped) in {wall:.1f} s")
    return 0


def _main_tensor_parallel(args, points, settings, out, trace_out, out_dir) -> int:
    """``--tensor-parallel N`` (and/or ``--allreduce-tokens``): the multi-process profile."""
    from fluidserve.calibration.tp_profile import TPJob, run_tp_job

    if args.backend != "torch":
        raise InputError("--tensor-parallel and --allreduce-tokens need --backend torch")
    if args.tensor_parallel < 1:
        raise InputError(f"--tensor-parallel must be >= 1, got {args.tensor_parallel}")
    name, spec = resolve_model_spec(args.model, args.model_spec)
    spec = dict(spec) if isinstance(spec, dict) else {k: getattr(spec, k, None) for k in
                                                       ("layers", "hidden", "heads", "kv_heads", "head_dim",
                                                        "intermediate", "vocab", "rope_theta", "rms_eps")}
    ar_tokens = parse_int_list(args.allreduce_tokens, "--allreduce-tokens")
    ar_out = None
    if ar_tokens:
        ar_out = str(out_dir / args.allreduce_out if out_dir and not Path(args.allreduce_out).is_absolute()
                     else Path(args.allreduce_out))
    out.parent.mkdir(parents=True, exist_ok=True)
    job = TPJob(
        tensor_parallel=args.tensor_parallel, spec={k: v for k, v in spec.items() if v is not None}, model_name=name,
        points=list(points), device=args.device, dtype=args.dtype, layers=args.layers,
        cuda_graph=not args.no_cuda_graph, seed=args.seed, settings=settings,
        nvml=_nvml_index(args.nvml_index, args.device) is not None, power_period_s=args.power_period_s,
        out=str(out), trace_out=str(trace_out) if trace_out else None, allreduce_tokens=ar_tokens,
        allreduce_out=ar_out, progress=not args.no_progress,
    )
    summary = run_tp_job(job)
    if args.json:
        print(to_json(summary))
    else:
        print(f"wrote {summary.get('rows', 0)} profile rows to {out} (tensor_parallel={args.tensor_parallel}) "
              f"in {summary.get('wall_s', float('nan')):.1f} s")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m fluidserve.calibration.profiler", description=__doc__.split("\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
