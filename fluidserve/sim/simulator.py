"""Run the discrete simulator for a config and a workload: replicas, routing, result tables."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from fluidserve.config import Config
from fluidserve.sim.engine import ReplicaEngine
from fluidserve.sim.routers import dispatch, make_router
from fluidserve.sim.result import (
    EVENT_COLUMNS,
    MEMORY_EVENT_COLUMNS,
    REJECTED_COLUMNS,
    REQUEST_COLUMNS,
    SNAPSHOT_COLUMNS,
    SimResult,
)
from fluidserve.workload.base import Workload


def _engine_queue_policy(cfg: Config) -> str:
    """Shortest-predicted-first runs as the engine's priority scheduling (sim/length_aware.py)."""
    return "priority" if cfg.policy.queue_policy == "shortest_predicted" else cfg.policy.queue_policy


def _length_aware(cfg: Config, workload: Workload):
    """(priorities, router) for the length-aware policy and router of ``cfg`` (None where unused)."""
    if cfg.policy.queue_policy != "shortest_predicted" and cfg.cluster.router != "least_predicted_work":
        return None, None
    from fluidserve.sim import length_aware

    pred = length_aware.predicted_output_tokens(workload, cfg.policy.length_predictor, cfg.policy.prediction_noise,
                                                cfg.seed, cfg.base_dir)
    prio = (length_aware.spf_priorities(workload.arrival_time_s, pred, cfg.policy.aging_tokens_per_s)
            if cfg.policy.queue_policy == "shortest_predicted" else None)
    router = length_aware.LeastPredictedWork(pred) if cfg.cluster.router == "least_predicted_work" else None
    return prio, router


def make_engine(cfg: Config, replica: int = 0, batch_time=None) -> ReplicaEngine:
    """A :class:`ReplicaEngine` configured from ``cfg`` (batch time from ``cfg`` unless given)."""
    sysc = cfg.system
    bt = batch_time if batch_time is not None else cfg.batch_time_model()
    if sysc.scheduler == "vllm_v1":
        return ReplicaEngine(
            bt, scheduler="vllm_v1", num_gpu_blocks=sysc.gpu_blocks, block_size=sysc.block_size, B=sysc.B,
            max_num_seqs=sysc.max_num_seqs, policy=_engine_queue_policy(cfg), chunked_prefill=sysc.chunked_prefill,
            enable_prefix_caching=sysc.enable_prefix_caching, record_events=cfg.sim.record_events,
            snapshot_every=cfg.sim.snapshot_every, replica=replica, max_steps=cfg.sim.max_steps,
        )
    swap_s_per_token = sysc.kv_bytes_per_token / (sysc.swap_bandwidth_GBps * 1e9)
    return ReplicaEngine(
        batch_time=bt,
        scheduler="vllm_v0",
        M_total=sysc.M_total,
        block_size=sysc.block_size,
        B=sysc.B,
        max_num_seqs=sysc.max_num_seqs,
        mode=sysc.mode,
        victim_policy=cfg.policy.victim_policy,
        queue_policy=_engine_queue_policy(cfg),
        chunked_prefill=sysc.chunked_prefill,
        swap_s_per_token=swap_s_per_token,
        record_events=cfg.sim.record_events,
        snapshot_every=cfg.sim.snapshot_every,
        replica=replica,
        seed=cfg.seed + 7919 * replica,
        max_steps=cfg.sim.max_steps,
    )


def simulate(cfg: Config, workload: Workload, progress: bool = False, batch_time=None) -> SimResult:
    """Simulate ``workload`` on ``cfg.cluster.replicas`` replicas; returns a :class:`SimResult`.

    Args:
        cfg: validated config.
        workload: requests sorted by arrival.
        progress: show a tqdm progress bar (on stderr) over completed requests.
        batch_time: override the config's batch-time model (used by the fluid-limit scaling).
    """
    wall0 = time.perf_counter()
    n = len(workload)
    R = cfg.cluster.replicas
    engines = [make_engine(cfg, r, batch_time) for r in range(R)]
    arr = workload.arrival_time_s.tolist()
    P = workload.prefill_tokens.tolist()
    D = workload.decode_tokens.tolist()
    pr = workload.priority.tolist()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="simulating", unit="req", leave=False, mininterval=0.5)
    tick = bar.update if bar is not None else None

    g = workload.prefix_group.tolist()
    L = workload.prefix_length.tolist()
    spf_prio, length_router = _length_aware(cfg, workload)
    if spf_prio is not None:
        pr = spf_prio.tolist()
    router = length_router or make_router(cfg.cluster.router, cfg.cluster.weights)

    def submit(i: int, r: int) -> int:
        return engines[r].submit(i, arr[i], P[i], D[i], pr[i], prefix_group=g[i], prefix_length=L[i])

    dispatch(router, engines, arr, submit, progress=tick)
    for e in engines:
        e.run(progress=tick)
    if bar is not None:
        bar.close()

    result = collect(engines, workload)
    result.wall_time_s = time.perf_counter() - wall0
    return result


def collect(engines: list[ReplicaEngine], workload: Workload | None = None) -> SimResult:
    """Assemble the result tables from finished (or paused) engines."""
    req_frames, snap_frames, ev_rows, mem_rows, rej_rows = [], [], [], [], []
    hits = queries = 0
    for e in engines:
        kv = getattr(e, "kv", None)
        if kv is not None and kv.caching:
            hits += kv.hit_tokens
            queries += kv.query_tokens
        if not e.gid:
            continue
        gid = np.asarray(e.gid, dtype=np.int64)
        state = np.asarray(e.state)
        n_steps = len(e.step_end)
        step_end = np.asarray(e.step_end + [np.nan])  # index n_steps: a step that has not run
        ft_step = np.asarray(e.ft_step)
        keep = state != 5  # REJECTED
        first_tok = step_end[np.where((ft_step >= 0) & (ft_step < n_steps), ft_step, n_steps)]
        comp = np.asarray(e.comp_t)
        arrival = np.asarray(e.arr)
        enter = np.asarray(e.enter_t)
        D0 = np.asarray(e.D0)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(D0 > 1, (comp - first_tok) / (D0 - 1), np.nan)
        frame = pd.DataFrame(
            {
                "req_id": gid,
                "arrival_time": arrival,
                "prefill_length": np.asarray(e.P0),
                "decode_length": D0,
                "first_enter_running_time": enter,
                "first_token_time": first_tok,
                "completion_time": comp,
                "waiting_time": enter - arrival,
                "execution_time": comp - enter,
                "swap_count": np.asarray(e.swaps),
                "preempt_count": np.asarray(e.preempts),
                "ttft": first_tok - arrival,
                "tpot": tpot,
                "total_delay": comp - arrival,
                "replica": e.replica,
            }
        )
        req_frames.append(frame[keep])
        for i, reason in e.reject_reason.items():
            rej_rows.append((e.gid[i], e.arr[i], e.P0[i], e.D0[i], reason, e.replica))
        if e.snapshots:
            snap_frames.append(pd.DataFrame(e.snapshots, columns=SNAPSHOT_COLUMNS))
        ev_rows.extend(e.events)
        mem_rows.extend((t, typ, g, b, a, why, e.replica) for (t, typ, g, b, a, why) in e.mem_events)
    requests = (
        pd.concat(req_frames, ignore_index=True).sort_values("req_id", kind="stable").reset_index(drop=True)
        if req_frames
        else pd.DataFrame(columns=REQUEST_COLUMNS)
    )
    snapshots = pd.concat(snap_frames, ignore_index=True) if snap_frames else pd.DataFrame(columns=SNAPSHOT_COLUMNS)
    events = pd.DataFrame(ev_rows, columns=EVENT_COLUMNS)
    if len(engines) > 1 and len(events):
        events = events.sort_values("time", kind="stable").reset_index(drop=True)
    return SimResult(
        requests=requests[REQUEST_COLUMNS],
        snapshots=snapshots,
        events=events,
        memory_events=pd.DataFrame(mem_rows, columns=MEMORY_EVENT_COLUMNS),
        rejected=pd.DataFrame(rej_rows, columns=REJECTED_COLUMNS),
        M_total=engines[0].M_total,
        replicas=len(engines),
        num_steps=sum(e.step_index for e in engines),
        meta={"block_size": engines[0].bs, "total_blocks": engines[0].total_blocks, "scheduler": engines[0].scheduler,
              "prefix_cache_hit_rate": hits / queries if queries else None},
    )
