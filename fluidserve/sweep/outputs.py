"""Figures and tables of a finished sweep, into ``<sweep>/figures/`` and ``<sweep>/tables/``.

Figures: a metrics-vs-field panel per numeric swept field (the other field as line colour when
there are two with few values), heatmaps of the mean end-to-end delay when two fields are
numeric, and fluid-vs-simulator scatter when both engines ran. PNG always; with ``latex``
also PGF (when TeX is installed) and PDF at \\columnwidth and \\textwidth. Tables (LaTeX,
booktabs, with ``latex``): every point's key metrics per engine (up to ``MAX_TABLE_ROWS``
points; beyond that, means per value of the first field).
"""

from __future__ import annotations

import logging
import re
from contextlib import nullcontext
from pathlib import Path

import pandas as pd

from fluidserve.export import latex as lx
from fluidserve.export import sweep_plots as sp

log = logging.getLogger(__name__)

MAX_TABLE_ROWS = 100
PNG_DPI = 300  # print resolution
TABLE_METRICS = ("throughput_rps", "mean_ttft_s", "mean_e2e_s")
TABLE_LABELS = {"throughput_rps": "throughput (req/s)", "mean_ttft_s": "mean TTFT (s)", "mean_e2e_s": "mean E2E (s)"}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def _numeric(df: pd.DataFrame, field: str) -> bool:
    col = df[field]
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def sweep_figures(df: pd.DataFrame, fields: list[str]) -> dict[str, object]:
    """name -> Figure for a sweep's results."""
    numeric = [f for f in fields if _numeric(df, f)]
    figs: dict[str, object] = {}
    for f in numeric:
        others = [o for o in fields if o != f]
        hue = others[0] if len(others) == 1 and df[others[0]].nunique() <= 6 else None
        figs[f"vs_{_slug(f)}"] = sp.metric_vs_field(df, f, hue=hue)
    if len(numeric) >= 2:
        for engine in sorted(df["engine"].unique()):
            figs[f"heatmap_mean_e2e_{engine}"] = sp.heatmap(df, numeric[0], numeric[1], "mean_e2e_s", engine)
    if {"fluid", "sim"} <= set(df["engine"].unique()):
        figs["fluid_vs_sim"] = sp.fluid_vs_sim(df)
    return figs


def points_table(df: pd.DataFrame, fields: list[str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """Key metrics per point (columns per engine) and the header text of each column."""
    engines = sorted(df["engine"].unique())
    keys = fields if df["point_id"].nunique() <= MAX_TABLE_ROWS else fields[:1]
    wide = df.groupby(keys + ["engine"])[list(TABLE_METRICS)].mean().unstack("engine")
    wide.columns = [f"{m}|{e}" for m, e in wide.columns]
    wide = wide.reset_index()
    headers = {f: sp.field_label(f) for f in keys}
    for m in TABLE_METRICS:
        for e in engines:  # two header rows: the metric over its engines, so 8 columns fit a page
            headers[f"{m}|{e}"] = (TABLE_LABELS[m], e) if len(engines) > 1 else TABLE_LABELS[m]
    ordered = keys + [f"{m}|{e}" for m in TABLE_METRICS for e in engines]
    return wide[ordered], headers


def _export(fig, stem: Path, formats: list[str]) -> list:
    """``export_figure``; a PGF export that TeX cannot compile (a partial TeX install) falls back to
    PDF with one warning naming the missing package."""
    from fluidserve.errors import MissingDependencyError

    try:
        return lx.export_figure(fig, stem, formats=formats)
    except MissingDependencyError as exc:
        if "pgf" not in formats:
            raise
        log.warning("%s; exporting PDF only", exc)
        return lx.export_figure(fig, stem, formats=[f for f in formats if f != "pgf"])


def write_outputs(df: pd.DataFrame, fields: list[str], sweep_dir: str | Path, latex: bool = False) -> dict:
    """Write the figures (and with ``latex`` the PGF/PDF exports and tables); returns the paths."""
    sweep_dir = Path(sweep_dir)
    out: dict[str, list[str]] = {"figures": [], "tables": []}
    if df.empty:
        return out
    fig_dir, tab_dir = sweep_dir / "figures", sweep_dir / "tables"
    fig_dir.mkdir(parents=True, exist_ok=True)
    formats = ["pdf"]
    missing = lx.missing_tex_packages() if latex and lx.tex_available() else []
    if latex and lx.tex_available() and not missing:
        formats = ["pgf", "pdf"]
    elif latex:
        why = (f"LaTeX package(s) {', '.join(missing)} not installed" if missing
               else f"no {lx.TEX_SYSTEM} on PATH")
        log.warning("%s: exporting PDF only (PGF needs %s)", why, lx.TEX_DEBIAN)
    with lx.latex_style() if latex else nullcontext():
        figs = sweep_figures(df, fields)
        for name, fig in figs.items():
            png = fig_dir / f"{name}.png"
            fig.savefig(png, dpi=PNG_DPI)
            out["figures"].append(str(png))
            if latex:
                out["figures"] += [str(p) for p in _export(fig, fig_dir / name, formats)]
                if "pgf" in formats and not any(p.endswith(".pgf") for p in out["figures"]):
                    formats = ["pdf"]  # the first PGF failed (and warned): the rest as PDF only
    if latex:
        table, headers = points_table(df, fields)
        if len(table) > MAX_TABLE_ROWS:
            log.warning("points table skipped: %d rows even after averaging over all but %s", len(table), fields[0])
            return out
        path = lx.export_table(table, tab_dir / "points.tex", columns=headers, precision=3)
        out["tables"].append(str(path))
    return out
