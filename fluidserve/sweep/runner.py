"""Run a validated sweep: skip finished points, compute the rest, store each as it finishes.

One task is one (point, engine). :func:`compute_task` is what a worker runs: config ->
workload -> simulator or fluid model -> one metrics row (see :mod:`fluidserve.sweep.metrics`).
A failed task is reported (``errors.jsonl`` in the sweep folder) and not stored, so the
next run retries it. Fluid tasks over numeric fields take the JAX vmap fast path
(:mod:`fluidserve.sweep.vmap`) when it applies and ``use_vmap`` is true.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from fluidserve.sweep import store
from fluidserve.sweep.executors import check_args, execute
from fluidserve.sweep.spec import Sweep

log = logging.getLogger(__name__)

#: fluid points per vmapped JAX batch: each batch is stored as it finishes.
VMAP_CHUNK_POINTS = 4


@dataclass
class SweepReport:
    """What one run of a sweep did. Times in seconds."""

    name: str
    sweep_dir: str
    dataset_dir: str
    points: int
    tasks: int
    skipped: int
    computed: int
    errors: list[dict] = field(default_factory=list)
    executor: str = "local"
    vmap_points: int = 0
    wall_time_s: float = 0.0
    run_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def make_task(point, engine: str) -> dict:
    """The picklable description of one (point, engine) task."""
    return {
        "point_index": point.index,
        "point_id": point.point_id,
        "engine": engine,
        "params": dict(point.params),
        "config": point.config.to_yaml_dict(),
        "base_dir": point.config.base_dir,
    }


def _row(task: dict, metrics: dict, wall_s: float) -> dict:
    row = {"point_index": task["point_index"], "point_id": task["point_id"], "engine": task["engine"]}
    row.update(task["params"])
    row.update(metrics)
    row["wall_time_s"] = wall_s
    row["pid"] = os.getpid()
    row["finished_at"] = datetime.now(timezone.utc).isoformat()
    return row


def compute_task(task: dict) -> dict:
    """Run one task; returns ``{"ok": True, "row": {...}}`` or ``{"ok": False, "error": "..."}``."""
    from fluidserve.config import config_from_dict
    from fluidserve.sweep.metrics import fluid_metrics, sim_metrics
    from fluidserve.workload import make_workload

    t0 = time.perf_counter()
    try:
        cfg = config_from_dict(task["config"], f"point {task['point_id']}", task["base_dir"])
        workload = make_workload(cfg)
        if task["engine"] == "sim":
            from fluidserve.sim import simulate

            metrics = sim_metrics(simulate(cfg, workload), float(workload.arrival_time_s[0]))
        else:
            from fluidserve import fluid

            metrics = fluid_metrics(fluid.solve(cfg, workload))
    except Exception as exc:  # noqa: BLE001 - reported per point, the sweep goes on
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(limit=6)}
    return {"ok": True, "row": _row(task, metrics, time.perf_counter() - t0)}


def sweep_dir(sweep: Sweep, output_dir: str | Path | None) -> Path:
    """``<output_dir>/<name>``: stable, so re-running the same sweep resumes it."""
    root = Path(output_dir or sweep.output_dir or "results")
    return root / sweep.name


def write_manifest(sweep: Sweep, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "name": sweep.name,
        "source": sweep.source,
        "engines": list(sweep.engines),
        "fields": sweep.fields,
        "set": sweep.fixed,
        "points": [{"point_index": p.index, "point_id": p.point_id, **p.params} for p in sweep.points],
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))


def run_sweep(sweep: Sweep, output_dir: str | Path | None = None, executor: str = "local",
              workers: int | None = None, address: str | None = None, progress: bool = True,
              use_vmap: bool = True, vmap_batch: int = VMAP_CHUNK_POINTS) -> SweepReport:
    """Compute every (point, engine) not yet in the dataset and append each result as it finishes.

    Fluid points on the vmap path are solved and stored in chunks of about ``vmap_batch`` points
    (split evenly, so every chunk has the same compiled shape): a kill loses at most one chunk.
    """
    t0 = time.perf_counter()
    check_args(executor, workers, address)
    directory = sweep_dir(sweep, output_dir)
    dataset = directory / "results"
    write_manifest(sweep, directory)
    store.remove_partial(dataset)
    done = store.finished_keys(dataset) if dataset.is_dir() else set()
    todo = [(p, e) for p in sweep.points for e in sweep.engines if (p.point_id, e) not in done]
    run_id = uuid.uuid4().hex[:12]
    report = SweepReport(sweep.name, str(directory), str(dataset), len(sweep.points),
                         len(sweep.points) * len(sweep.engines), len(sweep.points) * len(sweep.engines) - len(todo),
                         0, executor=executor, run_id=run_id)

    fluid_todo = [p for p, e in todo if e == "fluid"]
    if use_vmap and fluid_todo:
        from fluidserve.sweep import vmap

        plan = vmap.plan(sweep, fluid_todo)
        if plan is not None:
            chunks = -(-len(plan.points) // max(1, vmap_batch))
            for rows in vmap.run(plan, batch=-(-len(plan.points) // chunks), progress=progress):
                for row in rows:
                    row["run_id"] = run_id
                store.append_rows(dataset, rows)
                report.computed += len(rows)
                report.vmap_points += len(rows)
            todo = [(p, e) for p, e in todo if e != "fluid"]
        else:
            log.info("fluid points take the per-point path: %s", vmap.why_not(sweep))

    tasks = [make_task(p, e) for p, e in todo]
    for task, result in execute(compute_task, tasks, executor, workers, address, progress, desc=sweep.name):
        if result["ok"]:
            row = result["row"]
            row["run_id"] = run_id
            store.append_rows(dataset, [row])
            report.computed += 1
        else:
            err = {"point_id": task["point_id"], "engine": task["engine"], "params": task["params"],
                   "error": result["error"]}
            report.errors.append(err)
            with open(directory / "errors.jsonl", "a") as fh:
                fh.write(json.dumps({**err, "run_id": run_id, "traceback": result["traceback"]}, default=str) + "\n")
    report.wall_time_s = time.perf_counter() - t0
    return report
