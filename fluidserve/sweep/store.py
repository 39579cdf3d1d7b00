"""The results dataset of a sweep: Parquet files appended as points finish.

A dataset is a folder of ``part-*.parquet`` files, each holding one or more rows (one row per
point and engine, keyed by ``point_id`` + ``engine``). A part is written to a temporary name
and renamed into place, so a killed sweep leaves only whole files; a re-run reads the keys
already there and skips those points. :func:`load_results` reads the folder as one tidy
DataFrame (columns are unified across parts).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import pandas as pd

from fluidserve.errors import InputError, require

KEY = ("point_id", "engine")
PART_GLOB = "part-*.parquet"


def _parts(dataset_dir: Path) -> list[Path]:
    return sorted(Path(dataset_dir).glob(PART_GLOB))


def finished_keys(dataset_dir: str | Path) -> set[tuple[str, str]]:
    """(point_id, engine) of every row already stored."""
    pq = require("pyarrow.parquet", "sweep")
    keys: set[tuple[str, str]] = set()
    for part in _parts(Path(dataset_dir)):
        table = pq.read_table(part, columns=list(KEY))
        keys.update(zip(table.column("point_id").to_pylist(), table.column("engine").to_pylist()))
    return keys


def remove_partial(dataset_dir: str | Path) -> int:
    """Delete temporary files a killed run left half-written; returns how many.

    Only one run of a sweep should write to its dataset at a time.
    """
    stale = list(Path(dataset_dir).glob(".tmp-*.parquet")) if Path(dataset_dir).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def append_rows(dataset_dir: str | Path, rows: list[dict]) -> Path:
    """Write ``rows`` as one new part file (atomically: temp file, fsync, rename)."""
    require("pyarrow", "sweep")
    if not rows:
        raise ValueError("append_rows needs at least one row")
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    keys = "|".join(f"{r['point_id']}:{r['engine']}" for r in rows)
    name = hashlib.sha256(keys.encode()).hexdigest()[:16]
    final = dataset_dir / f"part-{name}.parquet"
    tmp = dataset_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}.parquet"
    frame = pd.DataFrame(rows)
    frame.to_parquet(tmp, index=False)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, final)
    return final


def load_results(dataset_dir: str | Path) -> pd.DataFrame:
    """All rows of a sweep dataset as one DataFrame, sorted by point index then engine.

    ``frame.attrs["fields"]`` lists the swept fields (from the sweep's manifest.json).

    ``dataset_dir`` is the ``results`` folder of a sweep (or the sweep folder holding it).
    """
    pa = require("pyarrow", "sweep")
    pq = require("pyarrow.parquet", "sweep")
    dataset_dir = Path(dataset_dir)
    if (dataset_dir / "results").is_dir() and not _parts(dataset_dir):
        dataset_dir = dataset_dir / "results"
    if not dataset_dir.is_dir():
        raise InputError(f"sweep dataset not found: {dataset_dir}")
    parts = _parts(dataset_dir)
    if not parts:
        return pd.DataFrame(columns=["point_index", *KEY])
    tables = [pq.read_table(p) for p in parts]
    schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    unified = [t.cast(pa.schema([schema.field(n) for n in t.schema.names])) for t in tables]
    frame = pa.concat_tables(unified, promote_options="permissive").to_pandas()
    frame = frame[list(schema.names)]
    sort = [c for c in ("point_index", "engine") if c in frame]
    frame = frame.sort_values(sort, kind="stable").reset_index(drop=True)
    manifest = dataset_dir.parent / "manifest.json"
    if manifest.is_file():
        frame.attrs["fields"] = json.loads(manifest.read_text()).get("fields", [])
    return frame
