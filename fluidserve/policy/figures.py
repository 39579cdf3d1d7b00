"""Figures of the LP policy: routing bars, and energy per token vs load with and without DVFS.

Each function returns the matplotlib Figure; :func:`save` writes PNG (for people) and PDF (for LaTeX).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def routing_bars(routing: list[dict], class_names: list[str]):
    """Stacked bars: req/s of each class on each (pool, clock) target."""
    plt = _plt()
    targets = sorted({(r["pool"], r["clock_mhz"]) for r in routing})
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(targets) + 2), 3.6))
    bottom = np.zeros(len(targets))
    for name in class_names:
        vals = np.array([sum(r["rate"] for r in routing if r["class"] == name and (r["pool"], r["clock_mhz"]) == t)
                         for t in targets])
        ax.bar(range(len(targets)), vals, bottom=bottom, label=name)
        bottom += vals
    ax.set_xticks(range(len(targets)), [f"{p}\n{f:g} MHz" for p, f in targets])
    ax.set_xlabel("pool and SM clock")
    ax.set_ylabel("routed rate (req/s)")
    ax.set_title("LP routing by pool and SM clock")
    ax.set_ylim(0, 1.12 * max(float(bottom.max()), 1e-9))  # headroom: no bar touches the frame
    ax.set_xlim(-0.6, len(targets) - 0.4)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, not over them
    fig.tight_layout()
    return fig


def energy_vs_load(curves: dict[str, tuple[np.ndarray, np.ndarray]], sim_points: dict[str, tuple[float, float]] | None = None):
    """Energy per output token [J] vs load factor for each curve (NaN where infeasible)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for label, (x, y) in curves.items():
        ax.plot(x, y, marker="o", label=label)
    for label, (x, y) in (sim_points or {}).items():
        ax.scatter([x], [y], marker="x", s=60, zorder=5, label=label)
    ax.set_xlabel("load (x the configured rates)")
    ax.set_ylabel("energy per output token (J)")
    ax.set_title("LP-predicted energy vs load")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def save(fig, path_stem: str | Path) -> list[Path]:
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(out[0], dpi=150)
    fig.savefig(out[1])
    _plt().close(fig)
    return out
