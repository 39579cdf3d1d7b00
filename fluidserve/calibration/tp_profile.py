"""Tensor-parallel step profiles: one process per GPU, the torch backend sharded Megatron-style.

``python -m fluidserve calibrate profile --backend torch --tensor-parallel N ...`` starts N
processes (``torch.multiprocessing``), one per GPU (``cuda:0 .. cuda:N-1``; NCCL), or N CPU
processes with ``gloo`` (``--device cpu``, for tests). Every rank builds its shard of the
random-weight decoder (:class:`~fluidserve.calibration.torch_backend.TorchBackend` with
``tensor_parallel=N``) and steps through the same grid in lock step: rank 0 decides whether a
point fits (the minimum over ranks), how many repetitions to time (broadcast), records the
step times (CUDA events on rank 0; the all-reduces keep the ranks in step) and meters every GPU
of the group with one :class:`~fluidserve.calibration.power.PowerMonitor` (energy summed over
the GPUs). The profile CSV gains a ``tensor_parallel`` column.

:func:`allreduce_sweep` times the bare all-reduce of ``[tokens, hidden]`` activations (the
message one layer's row-parallel projection reduces) over a range of token counts, to separate
the communication term from the compute.

NVLink multicast (NVLS) stays off in every process this module starts
(``NCCL_NVLS_ENABLE=0``, ``TORCH_SYMM_MEM_DISABLE_MULTICAST=1``, ``NVSHMEM_DISABLE_NVLS=1``);
clocks and power limits are only read.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, require

NO_MULTICAST_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}

ALLREDUCE_COLUMNS = ["tensor_parallel", "tokens", "hidden", "bytes", "time_us", "time_us_p10", "time_us_p90", "reps",
                     "algbw_GBps", "busbw_GBps", "cuda_graph", "device"]


def set_no_multicast_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Put the NVLink-multicast-off variables into ``env`` (default: this process's environment)."""
    target = os.environ if env is None else env
    target.update(NO_MULTICAST_ENV)
    return target


def free_port() -> int:
    """A free TCP port on the loopback interface for the process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TPJob:
    """Everything a rank needs (picklable): the model, the grid, timing and output settings."""

    tensor_parallel: int
    spec: dict
    model_name: str
    points: list
    device: str = "cuda"
    dtype: str = "bfloat16"
    layers: int | None = None
    cuda_graph: bool = True
    seed: int = 0
    settings: Any = None
    nvml: bool = True
    power_period_s: float = 0.1
    out: str = "tp_profile.csv"
    trace_out: str | None = None
    allreduce_tokens: list[int] = field(default_factory=list)
    allreduce_out: str | None = None
    allreduce_reps: int = 200
    progress: bool = True
    port: int = 0


def _device_for(job: TPJob, rank: int) -> str:
    return f"cuda:{rank}" if job.device.startswith("cuda") else "cpu"


def init_group(rank: int, world: int, device: str, port: int) -> None:
    """Join the process group (NCCL on GPUs, gloo on the CPU) over TCP on 127.0.0.1."""
    torch = require("torch", "torch")
    set_no_multicast_env()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(device.split(":")[1]) if ":" in device else rank)
    torch.distributed.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )


class LockStepBackend:
    """A TP rank's backend wrapper that keeps every rank on the same points and repetitions.

    ``fits`` is the minimum over ranks; ``time_reps`` broadcasts rank 0's repetition count, so
    the followers (which call the same methods in the same order) run exactly the same steps.
    """

    def __init__(self, backend):
        self.backend = backend
        self.torch = backend.torch
        self.name = backend.name

    @property
    def meta(self) -> dict[str, Any]:
        return self.backend.meta

    def _collective_int(self, value: int, op) -> int:
        torch = self.torch
        dev = self.backend.device if self.backend.is_cuda else torch.device("cpu")
        t = torch.tensor([int(value)], dtype=torch.long, device=dev)
        if op == "min":
            torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        else:
            torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def fits(self, point) -> bool:
        return bool(self._collective_int(int(self.backend.fits(point)), "min"))

    def prepare(self, point):
        return self.backend.prepare(point)

    def release(self) -> None:
        self.backend.release()

    def synchronize(self) -> None:
        self.backend.synchronize()

    def time_reps(self, step, reps: int) -> np.ndarray:
        reps = self._collective_int(reps, "bcast")
        return self.backend.time_reps(step, reps)


def _follow(wrapped: LockStepBackend, job: TPJob) -> None:
    """A non-zero rank: the same calls as ``profiler.measure_point`` makes on rank 0, in order."""
    for point in job.points:
        if not wrapped.fits(point):
            continue
        step = wrapped.prepare(point)
        try:
            wrapped.time_reps(step, 0)  # warmup (count from rank 0)
            wrapped.time_reps(step, 0)  # timed
        finally:
            wrapped.release()


def allreduce_sweep(tokens: Sequence[int], hidden: int, dtype: str, device, reps: int = 200,
                    cuda_graph: bool = True) -> list[dict]:
    """Time ``all_reduce`` of a ``[t, hidden]`` tensor for each ``t`` (every rank calls this).

    Returns rows (meaningful on rank 0) with the median time per all-reduce in microseconds and
    the algorithm / bus bandwidths in GB/s (NCCL-tests' definitions: algbw = bytes / time,
    busbw = algbw * 2 (n - 1) / n).
    """
    torch = require("torch", "torch")
    dist = torch.distributed
    world = dist.get_world_size()
    is_cuda = torch.device(device).type == "cuda"
    tdtype = getattr(torch, dtype)
    rows = []
    for t in tokens:
        x = torch.ones(int(t), int(hidden), dtype=tdtype, device=device)
        nbytes = x.numel() * x.element_size()
        graph_used = False
        if is_cuda:
            run = lambda: dist.all_reduce(x)  # noqa: E731
            for _ in range(5):
                run()
            torch.cuda.synchronize(device)
            if cuda_graph:
                try:
                    g = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(g):
                        dist.all_reduce(x)
                    run, graph_used = g.replay, True
                except RuntimeError:
                    torch.cuda.synchronize(device)
            dist.barrier()
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
            for a, b in events:
                a.record()
                run()
                b.record()
            torch.cuda.synchronize(device)
            times_us = np.array([a.elapsed_time(b) * 1e3 for a, b in events])
        else:
            for _ in range(3):
                dist.all_reduce(x)
            dist.barrier()
            times_us = np.empty(reps)
            for i in range(reps):
                t0 = time.perf_counter()
                dist.all_reduce(x)
                times_us[i] = (time.perf_counter() - t0) * 1e6
        med = float(np.median(times_us))
        algbw = nbytes / (med * 1e-6) / 1e9
        rows.append({
            "tensor_parallel": world, "tokens": int(t), "hidden": int(hidden), "bytes": int(nbytes),
            "time_us": med, "time_us_p10": float(np.percentile(times_us, 10)),
            "time_us_p90": float(np.percentile(times_us, 90)), "reps": int(reps), "algbw_GBps": algbw,
            "busbw_GBps": algbw * 2 * (world - 1) / world, "cuda_graph": graph_used, "device": str(device),
        })
    return rows


def _rank_main(rank: int, job: TPJob, result_path: str) -> None:
    """One process of the group; rank 0 writes the outputs and a small JSON result file."""
    import json

    torch = require("torch", "torch")
    from fluidserve.calibration.profiler import TimingSettings, run_profile, write_profile
    from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend

    device = _device_for(job, rank)
    init_group(rank, job.tensor_parallel, device, job.port)
    result: dict[str, Any] = {}
    try:
        shape = DecoderShape.from_spec(job.spec, layers=job.layers)
        need = max(p.kv_capacity_tokens for p in job.points) if job.points else 16
        max_pos = max(max(p.context_tokens, p.prefill_tokens) for p in job.points) if job.points else 16
        backend = TorchBackend(
            shape, model_name=job.model_name, device=device, dtype=job.dtype, kv_capacity_tokens=need,
            max_positions=max_pos, cuda_graph=job.cuda_graph, seed=job.seed + rank,
            tensor_parallel=job.tensor_parallel, tp_rank=rank,
        )
        wrapped = LockStepBackend(backend)
        settings = job.settings or TimingSettings()
        monitor = None
        if rank == 0 and job.nvml and device.startswith("cuda"):
            from fluidserve.calibration.power import PowerMonitor

            monitor = PowerMonitor(list(range(job.tensor_parallel)), period_s=job.power_period_s).start()
        wall0 = time.perf_counter()
        if rank == 0:
            try:
                df, skipped = run_profile(wrapped, job.points, settings, monitor,
                                          gpu_position=list(range(job.tensor_parallel)), progress=job.progress)
            finally:
                if monitor is not None:
                    monitor.stop()
            df["tensor_parallel"] = job.tensor_parallel
            write_profile(df, job.out)
            result.update(out=job.out, rows=int(len(df)), wall_s=time.perf_counter() - wall0,
                          skipped=[f"{p.phase}:T={p.prefill_tokens},B={p.decode_batch},C={p.context_tokens}" for p in skipped],
                          **backend.meta)
            if monitor is not None:
                result["power"] = monitor.summary()
                if job.trace_out:
                    result["trace"] = str(monitor.to_csv(job.trace_out))
                monitor.close()
        else:
            _follow(wrapped, job)
        if job.allreduce_tokens:
            rows = allreduce_sweep(job.allreduce_tokens, shape.hidden, job.dtype, backend.device,
                                   reps=job.allreduce_reps, cuda_graph=job.cuda_graph)
            if rank == 0 and job.allreduce_out:
                Path(job.allreduce_out).parent.mkdir(parents=True, exist_ok=True)
                pd.DataFrame(rows, columns=ALLREDUCE_COLUMNS).to_csv(job.allreduce_out, index=False, float_format="%.6g")
                result["allreduce_out"] = job.allreduce_out
        torch.distributed.barrier()
    except Exception as exc:  # reported by the parent as one line
        result = {"error": f"rank {rank}: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        if rank != 0:
            Path(f"{result_path}.rank{rank}").write_text(json.dumps(result))
        raise
    finally:
        if rank == 0:
            Path(result_path).write_text(json.dumps(result, default=str))
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def run_tp_job(job: TPJob) -> dict[str, Any]:
    """Start ``job.tensor_parallel`` processes, wait for them, return rank 0's summary."""
    import json
    import tempfile

    torch = require("torch", "torch")
    tp = int(job.tensor_parallel)
    if tp < 1:
        raise InputError(f"--tensor-parallel must be >= 1, got {tp}")
    if job.device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError("--tensor-parallel on 'cuda' but torch sees no CUDA GPU (use --device cpu for gloo)")
        if torch.cuda.device_count() < tp:
            raise InputError(f"--tensor-parallel {tp} needs {tp} GPUs; torch sees {torch.cuda.device_count()}")
    from fluidserve.calibration.torch_backend import DecoderShape

    DecoderShape.from_spec(job.spec, layers=job.layers).shard(tp)  # divisibility, before spawning
    set_no_multicast_env()
    job.port = job.port or free_port()
    with tempfile.TemporaryDirectory() as tmp:
        result_path = str(Path(tmp) / "result.json")
        try:
            torch.multiprocessing.spawn(_rank_main, args=(job, result_path), nprocs=tp, join=True)
        except Exception as exc:
            msgs = []
            for f in sorted(Path(tmp).glob("result.json*")):
                try:
                    err = json.loads(f.read_text()).get("error")
                except (OSError, ValueError):
                    err = None
                if err:
                    msgs.append(err)
            raise InputError("tensor-parallel profile failed: " + ("; ".join(msgs) or str(exc).splitlines()[-1])) from exc
        result = json.loads(Path(result_path).read_text())
    if "error" in result:
        raise InputError(f"tensor-parallel profile failed: {result['error']}")
    return result


def tp_reference_outputs(rank: int, world: int, port: int, spec: dict, steps: list, out_path: str) -> None:
    """Test helper run in each of ``world`` gloo processes: the TP decoder's logits for ``steps``.

    ``steps`` holds (T, B, C) step shapes; token ids and positions are drawn from a fixed seed, so
    every world size sees the same inputs; rank 0 saves the logits with ``torch.save``.
    """
    torch = require("torch", "torch")
    from fluidserve.calibration.torch_backend import DecoderShape, TorchBackend

    init_group(rank, world, "cpu", port)
    try:
        shape = DecoderShape.from_spec(spec)
        b = TorchBackend(shape, device="cpu", dtype="float32", kv_capacity_tokens=4096, max_positions=1024,
                         seed=3, tensor_parallel=world, tp_rank=rank, reference_init=True)
        gen = torch.Generator().manual_seed(11)
        outs = []
        for T, B, C in steps:
            ids = torch.randint(0, shape.vocab, (T + B,), generator=gen)
            positions = torch.cat([torch.arange(T), torch.full((B,), max(C - 1, 0), dtype=torch.long)])
            b.kv_cache.zero_()  # each step on an empty cache: the flat cache layout depends on the TP degree
            outs.append(b.forward(ids, positions, T, B, C))
        if rank == 0:
            torch.save(outs, out_path)
    finally:
        torch.distributed.destroy_process_group()


def spawn_reference(world: int, spec: dict, steps: list, out_path: str) -> None:
    """Run :func:`tp_reference_outputs` in ``world`` gloo processes (tests)."""
    torch = require("torch", "torch")
    set_no_multicast_env()
    torch.multiprocessing.spawn(tp_reference_outputs, args=(world, free_port(), spec, steps, out_path),
                                nprocs=world, join=True)


def shard_feasible(spec: dict, tensor_parallel: int) -> bool:
    """Whether the model's heads, K/V heads, intermediate size and vocabulary divide by ``tensor_parallel``."""
    from fluidserve.calibration.torch_backend import DecoderShape

    try:
        DecoderShape.from_spec(spec).shard(tensor_parallel)
    except InputError:
        return False
    return True


__all__ = [
    "NO_MULTICAST_ENV", "TPJob", "LockStepBackend", "allreduce_sweep", "free_port", "init_group", "run_tp_job",
    "set_no_multicast_env", "shard_feasible", "spawn_reference", "tp_reference_outputs",
]

if __name__ == "__main__":  # pragma: no cover
    print("use: python -m fluidserve calibrate profile --backend torch --tensor-parallel N ...", file=sys.stderr)
    sys.exit(2)
