"""The multi-GPU scaling study: one workload on 1, 2, 4, ... GPUs, data- and tensor-parallel.

A configuration uses ``gpus`` GPUs as ``gpus / tensor_parallel`` data-parallel replicas behind
the config's router, each replica a ``tensor_parallel``-GPU engine. Step times: with every
configuration at TP = 1 the config's own batch-time model is used; as soon as the study has a TP
degree above 1, every configuration (TP = 1 included, so they compare like with like) takes the
roofline model of ``system.gpu`` x ``system.model`` at its TP degree
(:func:`fluidserve.calibration.roofline.predict`), with the KV capacity that TP degree leaves.

Per configuration: latency (TTFT, TPOT, E2E: mean, p50, p99), throughput (completed requests/s
and output tokens/s over the makespan), the simulator's wall time, and the scaling efficiency
``throughput(g) / (g / g0 * throughput(g0))`` against ideal linear scaling from the smallest
GPU count ``g0`` of the same TP degree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from fluidserve.config import Config, config_from_dict
from fluidserve.errors import InputError

METRICS = ("ttft", "tpot", "total_delay")


@dataclass(frozen=True)
class ScalingPoint:
    """One configuration: ``gpus`` GPUs as ``replicas`` engines of ``tensor_parallel`` GPUs."""

    gpus: int
    tensor_parallel: int

    @property
    def replicas(self) -> int:
        return self.gpus // self.tensor_parallel

    @property
    def label(self) -> str:
        return f"{self.gpus}gpu_tp{self.tensor_parallel}"


def plan_points(gpus: Sequence[int], tensor_parallel: Sequence[int] = (1,)) -> list[ScalingPoint]:
    """Every (gpus, tp) with tp dividing gpus; InputError for bad values."""
    gpus, tps = list(gpus), list(tensor_parallel)
    if not gpus or any(int(g) < 1 for g in gpus):
        raise InputError(f"--gpus: expected positive GPU counts, got {gpus}")
    if not tps or any(int(t) < 1 for t in tps):
        raise InputError(f"--tensor-parallel: expected positive degrees, got {tps}")
    points = [ScalingPoint(int(g), int(t)) for t in sorted(set(tps)) for g in sorted(set(gpus)) if int(g) % int(t) == 0]
    if not points:
        raise InputError(f"no GPU count in {gpus} is a multiple of a TP degree in {tps}")
    return points


def point_config(cfg: Config, point: ScalingPoint, use_roofline: bool) -> Config:
    """The config of one point: replicas, TP degree, and (roofline) step times and KV capacity."""
    data = cfg.to_yaml_dict()
    data["cluster"]["replicas"] = point.replicas
    if data["cluster"].get("router") == "weighted":
        data["cluster"]["router"], data["cluster"]["weights"] = "round_robin", None
    data["system"]["tensor_parallel"] = point.tensor_parallel
    data["sim"]["record_events"] = False
    data["sim"]["snapshot_every"] = max(int(data["sim"].get("snapshot_every") or 1), 1000)
    data["fluid"]["enabled"] = False
    if use_roofline:
        from fluidserve.calibration import roofline

        gpu, model = cfg.system.gpu, cfg.system.model
        if gpu is None or model is None:
            raise InputError("a scaling study with --tensor-parallel > 1 needs system.gpu and system.model "
                             "(the roofline gives the TP step times)")
        pred = roofline.predict(gpu, model, point.tensor_parallel, gpu_memory_utilization=cfg.system.gpu_memory_utilization)
        if pred.m_total_tokens is None or pred.m_total_tokens < 1:
            raise InputError(f"{model} does not fit {point.tensor_parallel} x {gpu} (no KV capacity left)")
        data["batch_time"] = {k: v for k, v in pred.batch_time.to_dict().items()
                              if k in ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s")}
        data["system"]["M_total"] = int(pred.m_total_tokens)
    return config_from_dict(data, f"scaling point {point.label}", cfg.base_dir)


def run_point(task: tuple) -> dict[str, Any]:
    """Simulate one point (module level, so the sweep executors can pickle it)."""
    from fluidserve.outputs.metrics import summarize_requests
    from fluidserve.sim.simulator import simulate

    cfg, workload, point, out_dir = task
    t0 = time.perf_counter()
    result = simulate(cfg, workload)
    wall = time.perf_counter() - t0
    s = summarize_requests(result.requests)
    if out_dir is not None:
        from pathlib import Path

        from fluidserve.study.report import distribution_csv

        distribution_csv(result.requests, Path(out_dir) / f"latency_{point.label}.csv")
    row: dict[str, Any] = {
        "gpus": point.gpus, "tensor_parallel": point.tensor_parallel, "replicas": point.replicas,
        "requests": int(len(workload)), "completed": s["completed"], "rejected": int(len(result.rejected)),
        "throughput_rps": s["throughput_rps"], "output_tokens_per_s": s["output_tokens_per_s"],
        "makespan_s": s["span_s"], "sim_wall_s": wall, "sim_steps": int(result.num_steps),
    }
    for m in METRICS:
        name = "e2e" if m == "total_delay" else m
        for k in ("mean", "p50", "p99"):
            row[f"{name}_{k}_s"] = s.get(f"{m}_{k}")
    return row


def add_efficiency(rows: list[dict]) -> list[dict]:
    """Scaling efficiency per TP degree against ideal linear scaling from its smallest GPU count."""
    by_tp: dict[int, list[dict]] = {}
    for r in rows:
        by_tp.setdefault(r["tensor_parallel"], []).append(r)
    for group in by_tp.values():
        base = min(group, key=lambda r: r["gpus"])
        for r in group:
            ideal = base["throughput_rps"] * r["gpus"] / base["gpus"] if base["throughput_rps"] else np.nan
            r["ideal_throughput_rps"] = ideal
            r["scaling_efficiency"] = r["throughput_rps"] / ideal if ideal else None
            r["speedup"] = r["throughput_rps"] / base["throughput_rps"] if base["throughput_rps"] else None
    return rows
