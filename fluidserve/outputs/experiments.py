"""``python -m fluidserve experiments``: list, show, compare, archive and export experiments.

An experiment is a directory under ``--output-dir`` (default ``results``) written by
:mod:`fluidserve.outputs.writer`: ``<YYYYmmdd-HHMMSS>_<config name>[-N]`` holding
``summary.json``, ``config.yaml``, tables and figures. Archived experiments live in
``<output-dir>/archive/`` and can still be shown, compared and exported.

Actions:

* ``list``: name, date, config name, requests, throughput (req/s), p95 end-to-end delay (s);
* ``show NAME``: summary.txt (``--json``: summary.json);
* ``compare A B``: key metrics side by side with B - A and (B - A) / |A|, plus the config
  fields that differ;
* ``archive --older-than DAYS``: move experiments older than DAYS into ``archive/``. The age
  comes from the timestamp in the directory name (the run's start, local time); directories
  whose name carries no timestamp fall back to their modification time;
* ``export NAME FILE.tar.gz``: pack one experiment (``.tar.gz``/``.tgz``/``.tar.bz2``/
  ``.tar.xz``/``.tar``) with the directory name as the archive's top folder.

NAME is a directory name, a unique prefix of one, a path to one (containing a ``/``), or
``latest`` (the newest unarchived one).
An unknown NAME is an InputError that lists the nearest names.
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from fluidserve.errors import InputError, cli_errors
from fluidserve.jsonout import to_json
from fluidserve.outputs.metrics import format_summary
from fluidserve.outputs.writer import DIR_NAME_RE, TIMESTAMP_FORMAT, atomic_path

ARCHIVE = "archive"
MARKERS = ("summary.json", "config.yaml")

#: metrics shown by ``compare`` (summary.json keys), in order.
COMPARE_METRICS = (
    "arrived", "completed", "rejected", "in_system",
    "throughput_rps", "output_tokens_per_s", "total_tokens_per_s",
    "ttft_mean", "ttft_p50", "ttft_p95", "ttft_p99",
    "tpot_mean", "tpot_p50", "tpot_p95", "tpot_p99",
    "total_delay_mean", "total_delay_p50", "total_delay_p95", "total_delay_p99",
    "waiting_time_mean", "waiting_time_p95",
    "memory_utilization_mean", "memory_utilization_max",
    "swap_count", "preempt_count", "num_steps", "batch_size_mean", "step_time_mean_s",
)
_TAR_MODES = {".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.bz2": "w:bz2", ".tar.xz": "w:xz", ".tar": "w"}


@dataclass(frozen=True)
class Experiment:
    """One experiment directory. ``started`` is epoch seconds (name timestamp, else mtime)."""

    path: Path
    started: float
    archived: bool

    @property
    def name(self) -> str:
        return self.path.name

    def summary(self) -> dict[str, Any]:
        path = self.path / "summary.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON ({exc})") from None
        return data if isinstance(data, dict) else {}

    def config(self) -> dict[str, Any]:
        path = self.path / "config.yaml"
        if not path.is_file():
            return {}
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def config_name(self) -> str:
        name = self.config().get("name") or self.summary().get("config_name")
        if name:
            return str(name)
        m = DIR_NAME_RE.match(self.name)
        return m.group("name") if m else ""


def started_at(path: Path) -> float:
    """Start time (epoch s) from the directory name's timestamp, else the directory's mtime."""
    m = DIR_NAME_RE.match(path.name)
    if m:
        try:
            return time.mktime(time.strptime(m.group("stamp"), TIMESTAMP_FORMAT))
        except ValueError:
            pass
    return path.stat().st_mtime


def is_experiment(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in MARKERS)


def discover(output_dir: str | Path, include_archive: bool = False) -> list[Experiment]:
    """Experiments directly under ``output_dir`` (and its ``archive/``), oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        raise InputError(f"--output-dir {root} does not exist (no experiments there)")
    found = []
    places = [(root, False)] + ([(root / ARCHIVE, True)] if include_archive and (root / ARCHIVE).is_dir() else [])
    for place, archived in places:
        for p in place.iterdir():
            if p.name != ARCHIVE and is_experiment(p):
                found.append(Experiment(p, started_at(p), archived))
    return sorted(found, key=lambda e: (e.started, e.name))


def resolve(output_dir: str | Path, name: str) -> Experiment:
    """The experiment called ``name`` (see module doc); InputError naming the nearest ones."""
    direct = Path(name)
    if len(direct.parts) > 1 and is_experiment(direct):
        return Experiment(direct, started_at(direct), direct.parent.name == ARCHIVE)
    exps = discover(output_dir, include_archive=True)
    if not exps:
        raise InputError(f"experiment '{name}' not found: no experiments under {output_dir}")
    if name == "latest":
        live = [e for e in exps if not e.archived] or exps
        return live[-1]
    exact = [e for e in exps if e.name == name]
    if exact:
        return exact[0]
    prefixed = [e for e in exps if e.name.startswith(name)]
    if len(prefixed) == 1:
        return prefixed[0]
    names = [e.name for e in exps]
    if len(prefixed) > 1:
        raise InputError(f"experiment name '{name}' is ambiguous: matches {', '.join(e.name for e in prefixed[:8])}")
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    near = near or [n for n in names if name.lower() in n.lower()][:5] or names[-5:]
    raise InputError(f"experiment '{name}' not found under {output_dir}; nearest: {', '.join(near)}")


# -- actions -------------------------------------------------------------------------------


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def experiment_status(exp: Experiment) -> tuple[str, dict[str, Any]]:
    """(status, summary): ``complete``, ``incomplete`` (the run stopped before its end: no
    summary.json, or one whose ``status`` is not ``complete``) or ``corrupt: <why>``.

    A summary.json without a ``status`` field predates the field and counts as complete.
    """
    try:
        s = exp.summary()
    except InputError as exc:
        return f"corrupt: {' '.join(str(exc).split())}", {}
    if not s:
        return "incomplete", {}
    return str(s.get("status", "complete")), s


def list_experiments(output_dir: str | Path, include_archive: bool = False) -> list[dict[str, Any]]:
    """One dict per experiment: name, date, config, status, requests, throughput_rps, total_delay_p95_s.

    An experiment whose summary.json cannot be read is listed with ``status`` ``corrupt: ...``
    (the others are still listed).
    """
    rows = []
    for e in discover(output_dir, include_archive):
        status, s = experiment_status(e)
        try:
            config = e.config_name()
        except InputError:
            config = e.path.name
        rows.append({
            "name": e.name,
            "date": datetime.fromtimestamp(e.started).strftime("%Y-%m-%d %H:%M:%S"),
            "config": config,
            "status": status,
            "requests": s.get("arrived"),
            "throughput_rps": s.get("throughput_rps"),
            "total_delay_p95_s": s.get("total_delay_p95"),
            "archived": e.archived,
            "path": str(e.path),
        })
    return rows


def compare_experiments(a: Experiment, b: Experiment) -> dict[str, Any]:
    """Key metrics of ``a`` and ``b`` with ``diff`` = b - a and ``rel_diff`` = (b - a) / |a|."""
    sa, sb = a.summary(), b.summary()
    metrics = {}
    for key in COMPARE_METRICS:
        va, vb = sa.get(key), sb.get(key)
        if va is None and vb is None:
            continue
        diff = rel = None
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
            diff = vb - va
            rel = diff / abs(va) if va != 0 else (0.0 if diff == 0 else None)
        metrics[key] = {"a": va, "b": vb, "diff": diff, "rel_diff": rel}
    ca, cb = _flatten(a.config()), _flatten(b.config())
    config_diff = {
        k: {"a": ca.get(k), "b": cb.get(k)} for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)
    }
    return {"a": a.name, "b": b.name, "metrics": metrics, "config_diff": config_diff}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def archive_experiments(output_dir: str | Path, older_than_days: float, now: float | None = None,
                        dry_run: bool = False) -> list[dict[str, str]]:
    """Move experiments started more than ``older_than_days`` days ago into ``<output_dir>/archive/``."""
    if not older_than_days >= 0:
        raise InputError(f"--older-than must be a number of days >= 0, got {older_than_days}")
    now = time.time() if now is None else now
    cutoff = now - older_than_days * 86400.0
    dest_root = Path(output_dir) / ARCHIVE
    moved = []
    for e in discover(output_dir):
        if e.started >= cutoff:
            continue
        dest = dest_root / e.name
        k = 2
        while dest.exists():
            dest = dest_root / f"{e.name}.{k}"
            k += 1
        if not dry_run:
            dest_root.mkdir(exist_ok=True)
            shutil.move(str(e.path), str(dest))
        moved.append({"name": e.name, "from": str(e.path), "to": str(dest)})
    return moved


def export_experiment(exp: Experiment, file: str | Path, force: bool = False) -> Path:
    """Pack ``exp`` into a tar archive whose compression follows the file suffix."""
    file = Path(file)
    mode = next((m for suf, m in _TAR_MODES.items() if file.name.endswith(suf)), None)
    if mode is None:
        raise InputError(f"export file {file}: name must end in one of {', '.join(_TAR_MODES)}")
    if file.exists() and not force:
        raise InputError(f"export file {file} exists (use --force to overwrite)")
    if file.resolve().is_relative_to(exp.path.resolve()):
        raise InputError(f"export file {file} cannot be inside the experiment it packs")
    file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(file) as tmp:
        with tarfile.open(tmp, mode) as tar:
            tar.add(exp.path, arcname=exp.name)
    return file


# -- CLI -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="results", help="where experiment folders are (default: results)")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--output-dir", default=argparse.SUPPRESS, help="where experiment folders are")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("list", parents=[common], help="table of experiments")
    p.add_argument("--all", action="store_true", help="include archived experiments")
    p = sub.add_parser("show", parents=[common], help="print an experiment's summary")
    p.add_argument("name", metavar="NAME")
    p = sub.add_parser("compare", parents=[common], help="key metrics of two experiments side by side")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p = sub.add_parser("archive", parents=[common], help="move old experiments into <output-dir>/archive/")
    p.add_argument("--older-than", type=float, required=True, metavar="DAYS", help="age in days (name timestamp)")
    p.add_argument("--dry-run", action="store_true", help="only print what would move")
    p = sub.add_parser("export", parents=[common], help="pack an experiment into a tar archive")
    p.add_argument("name", metavar="NAME")
    p.add_argument("file", metavar="FILE.tar.gz")
    p.add_argument("--force", action="store_true", help="overwrite FILE")


@cli_errors
def main(args: argparse.Namespace) -> int:
    out_dir = args.output_dir
    as_json = bool(getattr(args, "json", False))
    if args.action == "list":
        rows = list_experiments(out_dir, include_archive=args.all)
        if as_json:
            print(to_json({"output_dir": str(out_dir), "experiments": rows}))
        elif not rows:
            print(f"no experiments under {out_dir}")
        else:
            headers = ["name", "date", "config", "requests", "throughput (req/s)", "p95 delay (s)"]
            table = [[r["name"] + (" [archived]" if r["archived"] else "")
                      + ("" if r["status"] == "complete" else f" [{r['status'].split(':')[0]}]"), r["date"], r["config"],
                      _fmt(r["requests"]), _fmt(r["throughput_rps"]), _fmt(r["total_delay_p95_s"])] for r in rows]
            print(_table(headers, table))
            for r in rows:
                if r["status"].startswith("corrupt"):
                    print(f"warning: {r['name']}: {r['status']}", file=sys.stderr)
    elif args.action == "show":
        exp = resolve(out_dir, args.name)
        summary = exp.summary()
        if as_json:
            print(to_json({"experiment": exp.name, **summary}))
        elif (exp.path / "summary.txt").is_file():
            print((exp.path / "summary.txt").read_text(), end="")
        elif summary:
            print(format_summary(summary, f"experiment {exp.name}"), end="")
        else:
            raise InputError(f"experiment '{exp.name}' has no summary.json or summary.txt")
    elif args.action == "compare":
        a, b = resolve(out_dir, args.a), resolve(out_dir, args.b)
        cmp = compare_experiments(a, b)
        if as_json:
            print(to_json(cmp))
        else:
            rows = [[k, _fmt(m["a"]), _fmt(m["b"]), _fmt(m["diff"]),
                     "n/a" if m["rel_diff"] is None else f"{100 * m['rel_diff']:+.1f}%"]
                    for k, m in cmp["metrics"].items()]
            print(_table(["metric", f"A: {a.name}", f"B: {b.name}", "B - A", "rel."], rows))
            if cmp["config_diff"]:
                print("\nconfig differences (A -> B):")
                for k, v in cmp["config_diff"].items():
                    print(f"  {k}: {v['a']!r} -> {v['b']!r}")
    elif args.action == "archive":
        moved = archive_experiments(out_dir, args.older_than, dry_run=args.dry_run)
        if as_json:
            print(to_json({"archived": moved, "dry_run": args.dry_run}))
        else:
            verb = "would move" if args.dry_run else "moved"
            for m in moved:
                print(f"{verb} {m['from']} -> {m['to']}")
            print(f"{len(moved)} experiment(s) {'would be archived' if args.dry_run else 'archived'}")
    elif args.action == "export":
        exp = resolve(out_dir, args.name)
        path = export_experiment(exp, args.file, force=args.force)
        if as_json:
            print(to_json({"experiment": exp.name, "file": str(path), "bytes": path.stat().st_size}))
        else:
            print(f"exported {exp.path} -> {path} ({path.stat().st_size:,} bytes)")
    return 0
