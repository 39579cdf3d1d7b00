"""The fluid-only fast path: all points of a sweep in one ``jax.vmap`` over FluidParams.

Applies when every swept value is a number, the cluster has one replica, the points share
their ``fluid`` section and their fluid parameters have the same shapes (classes K, stages J;
the arrival-rate table is zero-padded to the longest window, which changes nothing since the
rate is zero after the last bin). Each point's parameters are built by the fluid package's
``build_params`` (workloads and class tables cached across points), integrated from the empty
system with diffrax (Tsit5, as the JAX backend) on the SciPy path's output grid, and post-processed by
the same ``derived`` / ``assemble`` as a normal solve, so a row here equals the row of the
per-point path up to solver tolerance.

Horizon: as in ``solve.integrate``: ``fluid.horizon_s`` if set, else the arrival window and
then segments until the in-system mass is below ``EMPTY_FRACTION`` of its peak.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from fluidserve.errors import require

log = logging.getLogger(__name__)

MEMORY_BUDGET_BYTES = 256 * 2**20  # saved states per batch
STEPCLOCK = {"stepclock", "stepclock_jax"}
SWEEP_MACRO_STEPS = 150  # step-clock sweeps: automatic stride for ~150 macro steps per point
SWEEP_CHUNK = 64  # macro steps per vmapped scan call
# step-clock sweeps: delay groups at most (the per-point path keeps 48). On bench/sweep_speed.py's
# grid, 16 against 48 groups moved mean E2E by <= 0.3%, mean TTFT <= 1.2%, throughput <= 1.9%
# (medians <= 0.1%) and cut the vmapped compute 3.5x.
SWEEP_MAX_GROUPS = 16


@dataclass
class VmapPlan:
    """Points ready for the batched solve. Times in seconds."""

    points: list
    params: list  # FluidParams per point (numpy)
    tables: list  # ClassTables per point
    fluid_cfg: object
    dt_out_s: float
    window_s: float
    nbins: int


def _numeric(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def why_not(sweep, points=None) -> str | None:
    """Why the vmap path does not apply to these points (None: it may apply)."""
    points = sweep.points if points is None else points
    if "fluid" not in sweep.engines:
        return "the sweep has no fluid engine"
    bad = [f for f in sweep.fields if not all(_numeric(p.params[f]) for p in points)]
    if bad:
        return f"axis '{bad[0]}' has non-numeric values"
    backends = {p.config.fluid.backend for p in points}
    if len(backends & STEPCLOCK) and len(backends) > 1:
        return "the points mix the step-clock model with other fluid backends"
    other = sorted(backends - {"scipy", "jax"} - STEPCLOCK)
    if other:  # the fast path runs the ODE or the step-clock model: never a stand-in for another one
        return f"fluid.backend is '{other[0]}' (the vmap path runs the ODE or the step-clock model only)"
    if any(p.config.cluster.replicas != 1 for p in points):
        return "points with several replicas"
    sections = {json.dumps(p.config.fluid.model_dump(), sort_keys=True) for p in points}
    if len(sections) > 1:
        return "the points' fluid sections differ"
    missing = [m for m in ("jax", "diffrax") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'fluidserve[jax]')"
    return None


def plan(sweep, points) -> VmapPlan | None:
    """Build every point's fluid parameters; None (with a log line) if the fast path does not apply."""
    from fluidserve.fluid.params import build_params
    from fluidserve.fluid.solve import output_step
    from fluidserve.workload import make_workload

    reason = why_not(sweep, points)
    if reason is not None:
        log.info("vmap fast path off: %s", reason)
        return None
    if points[0].config.fluid.backend in STEPCLOCK:
        return _plan_stepclock(points)
    workloads: dict[str, object] = {}
    tables_cache: dict[tuple, object] = {}
    params, tables = [], []
    for p in points:
        cfg = p.config
        wkey = json.dumps([cfg.workload.model_dump(mode="json"), cfg.seed], sort_keys=True)
        if wkey not in workloads:
            workloads[wkey] = make_workload(cfg)
        wl = workloads[wkey]
        s = cfg.system
        tkey = (wkey, cfg.fluid.num_classes, cfg.fluid.stages, s.block_size, s.total_blocks, s.B, s.chunked_prefill)
        fp, tb = build_params(cfg, wl, tables_cache.get(tkey))
        tables_cache[tkey] = tb
        params.append(fp)
        tables.append(tb)
    shapes = {(fp.mem.shape, fp.lam.shape[-1]) for fp in params}
    if len(shapes) > 1:
        log.info("vmap fast path off: the points' class tables differ in shape %s", sorted(shapes))
        return None
    nbins = max(fp.lam.shape[0] for fp in params)
    fluid_cfg = points[0].config.fluid
    window = nbins * float(fluid_cfg.bin_s)
    dt = output_step(params[0]._replace(lam=np.zeros((nbins, params[0].lam.shape[1]))), fluid_cfg)
    return VmapPlan(points, params, tables, fluid_cfg, dt, window, nbins)


def _stack(params: list, nbins: int, size: int):
    """One FluidParams whose leaves have a leading batch axis of ``size`` (last point repeated)."""
    import jax.numpy as jnp

    padded = []
    for fp in params:
        lam = np.zeros((nbins, fp.lam.shape[1]))
        lam[: fp.lam.shape[0]] = fp.lam
        padded.append(fp._replace(lam=lam))
    padded += [padded[-1]] * (size - len(padded))
    return type(params[0])(*(jnp.asarray(np.stack([np.asarray(getattr(fp, f), float) for fp in padded]))
                             for f in params[0]._fields))


def _segment_solver(rtol: float, atol: float, nbins: int, max_steps: int = 1_000_000):
    """jit(vmap) of one integration segment: (params, y0, t0, ts) -> states at ts (ts[-1] = end).

    The shared vector field under diffrax's Tsit5 (the fluid JAX backend's default solver) with
    steps landing on the arrival-rate bin edges; ``ts`` is an argument, so every segment of a
    sweep reuses one compilation.
    """
    from fluidserve.fluid.jax_backend import _jax
    from fluidserve.fluid.vector_field import vector_field

    jax = _jax()
    diffrax = require("diffrax", "jax")
    jnp = jax.numpy

    def one(p, y0, t0, ts):
        edges = jnp.arange(nbins + 1) * p.bin_s
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: vector_field(t, y, args, jnp)), diffrax.Tsit5(),
            t0=t0, t1=ts[-1], dt0=None, y0=y0, args=p, saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, jump_ts=edges),
            max_steps=max_steps,
        )
        return sol.ys

    return jax.jit(jax.vmap(one, in_axes=(0, 0, None, None)))


def _post(fp, tables, ts: np.ndarray, ys: np.ndarray, meta: dict):
    """The metrics' inputs of one point: the solve's own ``derived`` and ``summarize`` (no DataFrames)."""
    from types import SimpleNamespace

    from fluidserve.fluid.solve import derived, summarize

    raw = derived(ts, ys, fp)
    return SimpleNamespace(summary=summarize(raw, tables, meta)[0], series=raw)


@dataclass
class StepclockPlan:
    """Points of the step-clock model, one macro-step stride for all (equal shapes)."""

    points: list
    consts: list  # stepclock.Consts per point (numpy)
    v1: list  # vLLM V1 semantics per point
    rejected: list
    stride: int
    requests: list  # (arrival_s, prefill_tokens, decode_tokens, d0_s, d1_prefill_s) of the admissible requests


def _plan_stepclock(points) -> StepclockPlan | None:
    from fluidserve.fluid import stepclock as sc
    from fluidserve.workload import make_workload

    workloads: dict[str, object] = {}
    consts, v1, rejected, requests = [], [], [], []
    stride = None
    for p in points:
        cfg = p.config
        wkey = json.dumps([cfg.workload.model_dump(mode="json"), cfg.seed], sort_keys=True)
        if wkey not in workloads:
            workloads[wkey] = make_workload(cfg)
        c, groups, h = sc.build(cfg, workloads[wkey], stride=stride, target_macro_steps=SWEEP_MACRO_STEPS,
                                max_groups=SWEEP_MAX_GROUPS)
        stride = h  # the first point's (automatic) stride for all: equal weight shapes
        consts.append(c)
        v1.append(cfg.system.scheduler == "vllm_v1")
        rejected.append(int((~groups.mask).sum()))
        wl, m = workloads[wkey], groups.mask
        bt = cfg.batch_time_model()
        requests.append((wl.arrival_time_s[m], wl.prefill_tokens[m], wl.decode_tokens[m], bt.d0_s, bt.d1_prefill_s))
    nb = max(c.lam.shape[0] for c in consts)  # pad the rate tables to the longest window (zero rate)
    consts = [_pad_bins(c, nb) for c in consts]
    shapes = {tuple(np.shape(x) for x in jax_leaves(c)) for c in consts}
    if len(shapes) > 1:
        log.info("vmap fast path off: the points' step-clock tables differ in shape")
        return None
    return StepclockPlan(points, consts, v1, rejected, int(stride), requests)


def jax_leaves(c) -> list:
    """The arrays of a Consts (weights included), in a fixed order."""
    return [x for f in c for x in (f if isinstance(f, tuple) else (f,))]


def _pad_bins(c, nb: int):
    """Consts with ``nb`` rate bins: zero rate after the point's own window."""
    extra = nb - c.lam.shape[0]
    if extra <= 0:
        return c
    G = c.lam.shape[1]
    end = nb * float(c.bin_s)
    nxt = np.where(np.asarray(c.next_edge) >= c.lam.shape[0] * float(c.bin_s) - 1e-9, end, c.next_edge)
    return c._replace(lam=np.vstack([c.lam, np.zeros((extra, G))]),
                      cum=np.vstack([c.cum, np.repeat(c.cum[-1:], extra, axis=0)]),
                      next_edge=np.concatenate([nxt, np.full(extra, end)]))


def _run_stepclock(plan: StepclockPlan, batch: int, progress: bool) -> Iterator[list[dict]]:
    """jit(vmap) of the step-clock scan chunk over the points; summaries from the limit's curves.

    Per point the mean delays are the fluid limit's per-request sojourns (theory eq. sc10 without
    the n = 1 step fluctuations of eqs. sc11-sc12), see :func:`_summary`.
    """
    from tqdm import tqdm

    from fluidserve.fluid import stepclock as sc
    from fluidserve.fluid.jax_backend import _jax
    from fluidserve.sweep.metrics import fluid_metrics
    from fluidserve.sweep.runner import _row, make_task

    jax = _jax()
    jnp = jax.numpy
    chunk = jax.jit(jax.vmap(lambda st, c: jax.lax.scan(lambda s, _: _scan_body(jnp, s, c), st, None,
                                                        length=SWEEP_CHUNK)))
    bar = tqdm(total=len(plan.points), desc="fluid (vmap, stepclock)", unit="pt", disable=not progress,
               mininterval=0.5)
    try:
        for start in range(0, len(plan.points), batch):
            t0 = time.perf_counter()
            idx = list(range(start, min(start + batch, len(plan.points))))
            size = len(idx)
            cs = [plan.consts[i] for i in idx]
            if start > 0 and size < batch:  # the last batch padded to the compiled shape (no second compile)
                cs = cs + [cs[-1]] * (batch - size)
            stacked = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs), dtype=jnp.float64), *cs)
            st = jax.vmap(lambda c: sc.initial_state(c, jnp))(stacked)
            pieces = []
            end = np.full(size, -1)
            n_done = 0
            for _ in range(4096):
                st, outs = chunk(st, stacked)
                outs = {k: np.asarray(v) for k, v in outs.items()}
                pieces.append(outs)
                for j in range(size):
                    if end[j] < 0:
                        hit = np.nonzero(sc._done_mask({k: outs[k][j] for k in ("t1", "waiting", "pending",
                                                                                 "swapped", "running")}, cs[j], None))[0]
                        if len(hit):
                            end[j] = n_done + int(hit[0]) + 1
                n_done += SWEEP_CHUNK
                if np.all(end >= 0):
                    break
            cat = {k: np.concatenate([p[k] for p in pieces], axis=1) for k in pieces[0]}
            wall = (time.perf_counter() - t0) / size
            rows = []
            for j, i in enumerate(idx):
                o = {k: v[j, : end[j]] for k, v in cat.items()}
                res = _summary(o, plan.consts[i], plan.v1[i], plan.rejected[i], plan.requests[i])
                rows.append(_row(make_task(plan.points[i], "fluid"), fluid_metrics(res), wall))
            bar.update(size)
            yield rows
    finally:
        bar.close()


def _scan_body(jnp, st, c):
    from fluidserve.fluid import stepclock as sc

    st2, out = sc.step(jnp, st, c)
    return st2, {k: out[k] for k in ("t1", "tau", "steps", "waiting", "pending", "swapped", "running", "kv", "done",
                                     "arrived", "admit")}


def _summary(o: dict, c, v1: bool, rejected: int, requests: tuple):
    """The metrics' inputs of one point from its macro-step outputs (no DataFrames).

    Mean delays are the per-request sojourns of the fluid limit (``tails.request_delays`` without
    the n = 1 step fluctuations), as ``solve_stepclock(..., fluctuations=False)``.
    """
    from types import SimpleNamespace

    from fluidserve.fluid import tails

    t1 = o["t1"]
    t = np.concatenate([[0.0], t1])
    dt = np.diff(t)
    arr_s, P, D, d0_s, d1p = requests
    d = tails.request_delays(t, np.concatenate([[0.0], np.cumsum(o["steps"])]),
                             np.concatenate([[0.0], np.cumsum(o["arrived"].sum(-1))]),
                             np.concatenate([[0.0], np.cumsum(o["admit"].sum(-1))]),
                             arr_s, P, D, d0_s, d1p, v1, fluctuations=False)
    lam = np.asarray(c.lam).sum(1)
    nb = len(lam)
    b = np.clip(np.floor(t / float(c.bin_s)).astype(int), 0, nb - 1)
    series = {"time": t, "arrival_rate": np.where(t < nb * float(c.bin_s), lam[b], 0.0),
              "throughput_rps": np.concatenate([[0.0], o["done"].sum(-1) / np.maximum(dt, 1e-300)])}
    summary = {"completed": float(o["done"].sum()), "mean_waiting_s": float(d["waiting"].mean()),
               "mean_ttft_s": float(d["ttft"].mean()), "mean_e2e_s": float(d["e2e"].mean()),
               "peak_waiting": float(o["waiting"].max()), "peak_running": float(o["running"].max()),
               "peak_swapped": float(o["swapped"].max()), "peak_kv_memory_tokens": float(o["kv"].max()),
               "rejected": rejected}
    return SimpleNamespace(summary=summary, series=series)


def run(plan, batch: int = 1024, progress: bool = True) -> Iterator[list[dict]]:
    """Yield metrics rows per batch of points (the ODE or the step-clock model, by the plan)."""
    if isinstance(plan, StepclockPlan):
        yield from _run_stepclock(plan, batch, progress)
        return
    yield from _run_ode(plan, batch, progress)


def _run_ode(plan: VmapPlan, batch: int = 1024, progress: bool = True) -> Iterator[list[dict]]:
    """Solve the plan's points in vmapped batches; yield each batch's metrics rows as it finishes.

    Integration runs in segments of ``CHUNK_POINTS`` output points on the SciPy path's grid
    (``solve.integrate``): after the arrival window a point is done when its in-system mass is below
    ``EMPTY_FRACTION`` of its peak (or at ``fluid.horizon_s``). The batch (padded to a fixed size
    by repeating its last point) goes on until all its points are done; each point keeps the
    states up to its own end. One compilation serves every segment and batch.
    """
    from tqdm import tqdm

    from fluidserve.fluid.solve import CHUNK_POINTS, EMPTY_FRACTION, MAX_DRAIN_SEGMENTS
    from fluidserve.sweep.metrics import fluid_metrics
    from fluidserve.sweep.runner import _row, make_task

    import jax.numpy as jnp

    fc = plan.fluid_cfg
    K, J = plan.params[0].num_classes, plan.params[0].num_stages
    N = plan.params[0].state_size
    dt = plan.dt_out_s
    fixed = float(fc.horizon_s) if fc.horizon_s else None
    n_seg = CHUNK_POINTS if fixed is None else max(1, min(CHUNK_POINTS, int(round(fixed / dt))))
    if fixed is None:
        max_segments = int(np.ceil(plan.window_s / (n_seg * dt) - 1e-9)) + MAX_DRAIN_SEGMENTS
    else:
        max_segments = int(np.ceil(fixed / (n_seg * dt) - 1e-9))
    size = int(max(1, min(batch, len(plan.points), MEMORY_BUDGET_BYTES // (8 * N * n_seg * 4))))
    solver = _segment_solver(float(fc.rtol), float(fc.atol), plan.nbins)

    bar = tqdm(total=len(plan.points), desc="fluid (vmap)", unit="pt", disable=not progress, mininterval=0.5)
    try:
        for start in range(0, len(plan.points), size):
            t_batch = time.perf_counter()
            idx = list(range(start, min(start + size, len(plan.points))))
            stacked = _stack([plan.params[i] for i in idx], plan.nbins, size)
            y = jnp.zeros((size, N))
            ts_all = [np.zeros(1)]
            ys_all = [np.zeros((size, 1, N))]
            end = np.full(size, -1)  # index of the segment after which each point is done
            peak = np.zeros(size)
            t = 0.0
            for seg in range(max_segments):
                ts = t + dt * np.arange(1, n_seg + 1)
                ys = np.asarray(solver(stacked, y, t, jnp.asarray(ts)))
                ts_all.append(ts)
                ys_all.append(ys)
                y = jnp.asarray(ys[:, -1])
                t = float(ts[-1])
                mass = ys[..., : K + 2 * K * J].sum(-1)
                peak = np.maximum(peak, mass.max(-1))
                if fixed is not None:
                    done_now = np.full(size, t >= fixed - 1e-9)
                else:
                    done_now = (t >= plan.window_s - 1e-12) & (mass[:, -1] <= EMPTY_FRACTION * np.maximum(peak, 1e-12))
                end = np.where((end < 0) & done_now, seg, end)
                if np.all(end[: len(idx)] >= 0):
                    break
            end = np.where(end < 0, len(ts_all) - 2, end)
            ts_cat = np.concatenate(ts_all)
            ys_cat = np.concatenate(ys_all, axis=1)
            if fixed is not None:
                keep = ts_cat <= fixed + 1e-9
                ts_cat, ys_cat = ts_cat[keep], ys_cat[:, keep]
            wall = (time.perf_counter() - t_batch) / len(idx)
            rows = []
            for j, i in enumerate(idx):
                n_keep = min(len(ts_cat), 1 + (end[j] + 1) * n_seg)
                fres = _post(plan.params[i], plan.tables[i], ts_cat[:n_keep], ys_cat[j, :n_keep],
                             {"backend": "jax-vmap", "replicas": 1})
                rows.append(_row(make_task(plan.points[i], "fluid"), fluid_metrics(fres), wall))
            bar.update(len(idx))
            yield rows
    finally:
        bar.close()
