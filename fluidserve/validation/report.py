"""Predicted against measured: rows per stage, MAPE over the stages that were not overloaded,
a text table and the figure (predicted vs measured per metric, log axes)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fluidserve.validation.runs import METRICS, Run

#: the metrics the figure draws and the acceptance goals name
MAIN_METRICS = ("e2e_mean", "ttft_mean", "tpot_mean")


def rows(runs: Sequence[Run], predictions: Sequence[list[dict]]) -> list[dict[str, Any]]:
    """One row per stage, in the JSON shape of ``validate --json``."""
    out = []
    for run, preds in zip(runs, predictions):
        for st, p in zip(run.stages, preds):
            meas = {k: st.measured[k] for k in METRICS}
            meas.update(requests=st.requests, failures=st.failures, overloaded=st.overloaded)
            pred = {k: p[k] for k in METRICS}
            pred.update(overloaded=bool(p["overloaded"]))
            out.append({"run": run.name, "stage": st.index, "model": run.model,
                        "tensor_parallel": run.tensor_parallel, "rate": st.rate,
                        "predicted": pred, "measured": meas,
                        "requested_output_len": _requested(run, p), "measured_output_len_mean": st.output_len_mean,
                        "client_tokens_per_token": st.client_tokens_per_token})
    return out


def json_rows(stage_rows: Sequence[dict]) -> list[dict[str, Any]]:
    """The rows in the ``validate --json`` contract: run, stage, predicted, measured (plus, inside them,
    ``overloaded`` and the output lengths: requested tokens predicted, the client's count measured)."""
    out = []
    for r in stage_rows:
        pred = dict(r["predicted"], output_len_mean=r["requested_output_len"])
        meas = dict(r["measured"], output_len_mean=r["measured_output_len_mean"])
        out.append({"run": r["run"], "stage": r["stage"], "predicted": pred, "measured": meas})
    return out


def _requested(run: Run, pred: dict):
    return pred.get("output_len_mean", run.shared_prefix.output_len if run.shared_prefix is not None else None)


def ape(pred: float, meas: float) -> float:
    """Absolute percentage error (NaN when either is missing)."""
    if not (np.isfinite(pred) and np.isfinite(meas)) or meas == 0:
        return float("nan")
    return abs(pred - meas) / abs(meas) * 100.0


def mape(stage_rows: Sequence[dict], metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """Mean absolute percentage error per metric over the stages that were not overloaded."""
    keep = [r for r in stage_rows if not r["measured"]["overloaded"]]
    out = {}
    for k in metrics:
        errs = [ape(r["predicted"][k], r["measured"][k]) for r in keep]
        errs = [e for e in errs if np.isfinite(e)]
        out[k] = float(np.mean(errs)) if errs else float("nan")
    return out


def _fmt(v: float, key: str) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    if key == "output_tokens_per_s":
        return f"{v:.0f}"
    return f"{v * 1e3:.1f}" if v < 10 else f"{v:.1f}s"


def format_table(stage_rows: Sequence[dict], metrics: Sequence[str] = ("e2e_mean", "e2e_p90", "ttft_mean",
                                                                       "tpot_mean", "output_tokens_per_s")) -> str:
    """A text table: per stage, predicted / measured (ms unless marked) and the error."""
    head = f"{'run':<40} {'st':>2} {'rate':>5} {'out len':>9}  " + "  ".join(f"{k:>22}" for k in metrics) + "  note"
    lines = [head, "-" * len(head)]
    for r in stage_rows:
        cells = []
        for k in metrics:
            p, m = r["predicted"][k], r["measured"][k]
            e = ape(p, m)
            cells.append(f"{_fmt(p, k):>7}/{_fmt(m, k):<7} {e:5.1f}%" if np.isfinite(e) else f"{'-':>22}")
        note = []
        if r["measured"]["overloaded"]:
            note.append(f"overloaded ({r['measured']['failures']} failed)")
            note.append("predicted overloaded" if r["predicted"]["overloaded"] else "NOT predicted overloaded")
        elif r["predicted"]["overloaded"]:
            note.append("predicted overloaded, measured not")
        req, got = r["requested_output_len"], r["measured_output_len_mean"]
        olen = f"{req:.0f}/{got:.0f}" if req is not None and got is not None else "-"
        lines.append(f"{r['run'][:40]:<40} {r['stage']:>2} {r['rate']:>5g} {olen:>9}  " + "  ".join(f"{c:>22}" for c in cells)
                     + ("  " + "; ".join(note) if note else ""))
    lines.append("(ms unless marked s; output tokens/s; predicted/measured and absolute error; out len: tokens "
                 "the server generated (requested, ignore_eos) / the client's mean count of the streamed text)")
    return "\n".join(lines)


def plot(stage_rows: Sequence[dict], metrics: Sequence[str] = MAIN_METRICS, title: str | None = None):
    """Predicted vs measured per metric on log axes, one panel per metric; returns the Figure.

    Overloaded stages are drawn hollow (left out of the MAPE); the shaded band is +-10%.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.0))
    axes = np.atleast_1d(axes)
    models = sorted({r["model"] for r in stage_rows})
    colors = dict(zip(models, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    errs = mape(stage_rows, metrics)
    for ax, k in zip(axes, metrics):
        vals = []
        for r in stage_rows:
            p, m = r["predicted"][k], r["measured"][k]
            if not (np.isfinite(p) and np.isfinite(m)) or p <= 0 or m <= 0:
                continue
            vals += [p, m]
            over = r["measured"]["overloaded"]
            ax.scatter(m, p, s=36, marker="o", facecolors="none" if over else colors[r["model"]],
                       edgecolors=colors[r["model"]], zorder=3)
        if vals:
            lo, hi = min(vals) / 1.5, max(vals) * 1.5
            x = np.geomspace(lo, hi, 50)
            ax.plot(x, x, color="k", lw=1)
            ax.fill_between(x, x / 1.1, x * 1.1, color="0.85", zorder=0)
            ax.set_xlim(lo, hi)
            ax.set_ylim(lo, hi)
        ax.set_xscale("log")
        ax.set_yscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
        unit = "tokens/s" if k == "output_tokens_per_s" else "s"
        ax.set_xlabel(f"measured {k} ({unit})")
        ax.set_ylabel(f"predicted {k} ({unit})")
        ax.set_title(f"{k}: MAPE {errs[k]:.1f}%" if math.isfinite(errs[k]) else k, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    for name, c in colors.items():
        axes[0].scatter([], [], color=c, label=name.split("/")[-1])
    axes[0].scatter([], [], facecolors="none", edgecolors="k", label="overloaded (not in MAPE)")
    axes[0].legend(fontsize=7, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def save_figure(fig, stem: Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` as ``stem.<fmt>`` per format; returns the paths."""
    import matplotlib.pyplot as plt

    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        p = stem.with_suffix(f".{fmt}")
        fig.savefig(p, dpi=150)
        paths.append(p)
    plt.close(fig)
    return paths
