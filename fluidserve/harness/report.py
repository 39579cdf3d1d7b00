"""``harness report``: measured vs predicted, single instance vs disaggregated pair.

For every result file found in the given folders (``single_results.json``,
``disaggregated_results.json``) the report predicts the same load on the same layout with the
simulator, from the run's ``config.yaml`` (system and batch-time model) and its requests
(``workload.csv``, sent at the send times of the phase's request table):

* single instance: the engine (:func:`fluidserve.sim.simulator.simulate`), once with
  ``max_tokens=1`` (prefill latency) and once with the requests' own lengths (TTFT, TBT, E2E);
* disaggregated pair: :func:`fluidserve.sim.disagg.simulate_disagg` with one prefill and one
  decode instance and the run's ``kv_link_GBps`` (prefill latency, KV transfer, decode
  first-token latency, TTFT, TBT, E2E).

The load is the one the client actually sent (each request at its measured send time; see
:func:`_workload`). ``rel_error`` of a metric is (measured mean - predicted mean) / predicted
mean. Written into the output folder: ``report.md``, ``report.json`` and the figures ``latency_distributions``
(CDF of each latency, measured solid and predicted dashed, one colour per layout),
``latency_means`` (the layouts side by side, measured and predicted) and ``power_over_time``
(each GPU's NVML power, one panel per layout), each as PNG and PDF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fluidserve.errors import InputError
from fluidserve.harness.runner import RESULT_FILES, finite_json, proxy_table, summary_stats
from fluidserve.workload.base import Workload

METRIC_LABELS = {
    "prefill_s": "prefill latency", "kv_transfer_s": "KV transfer", "decode_ttft_s": "decode first token",
    "ttft_s": "TTFT", "tbt_s": "TBT", "e2e_s": "E2E", "decode_s": "decode time",
}
LAYOUT_LABELS = {"single": "single instance", "disagg": "disaggregated"}
COLORS = {"single": "tab:blue", "disagg": "tab:orange"}


def load_run(path: Path) -> dict[str, Any]:
    try:
        res = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if res.get("layout") not in RESULT_FILES:
        raise InputError(f"{path}: 'layout' must be single or disagg, got {res.get('layout')!r}")
    res["_dir"] = path.parent
    return res


def measured_samples(run: dict[str, Any]) -> dict[str, pd.Series]:
    """Per-request values of each measured metric (server seconds)."""
    d = run["_dir"]
    layout = run["layout"]
    out: dict[str, pd.Series] = {}
    e2e_path = d / f"{layout}_e2e_requests.csv"
    if e2e_path.exists():
        e2e = pd.read_csv(e2e_path).set_index("req_id").sort_index()
        out.update(ttft_s=e2e["ttft"], tbt_s=e2e["tpot"], e2e_s=e2e["total_delay"])
    if layout == "single":
        pre_path = d / "single_prefill_requests.csv"
        if pre_path.exists():
            pre = pd.read_csv(pre_path).set_index("req_id").sort_index()
            out["prefill_s"] = pre["ttft"]
            if "e2e_s" in out:
                out["decode_s"] = out["e2e_s"] - pre["ttft"]
    else:
        proxy = proxy_table(d, float(run.get("time_scale", 1.0)), int(run.get("warmup_requests") or 0))
        if proxy is not None:
            for k in ("prefill_s", "kv_transfer_s", "decode_ttft_s"):
                out[k] = proxy[k]
    return out


def _workload(run: dict[str, Any], phase: str) -> tuple[Workload, np.ndarray]:
    """The requests of ``phase`` as they were sent, and each one's send lag.

    The prediction offers the simulator the load the client actually sent: request i arrives at
    its measured ``send_time`` (server seconds from the phase's start; the scheduled
    ``arrival_time`` where it was not recorded). The lag ``send_time - arrival_time`` is returned
    so that predicted TTFT and E2E can be counted from the scheduled arrival, as the client counts
    the measured ones."""
    path = run["_dir"] / "workload.csv"
    if not path.exists():
        raise InputError(f"{path} is missing (written by the harness at the start of a run)")
    df = pd.read_csv(path).set_index("req_id").sort_index()
    arrival = df["arrival_time"].to_numpy(dtype=float)
    sent = arrival.copy()
    table = run["_dir"] / f"{run['layout']}_{phase}_requests.csv"
    if table.exists():
        rec = pd.read_csv(table).set_index("req_id")["send_time"].reindex(df.index)
        sent = np.where(np.isfinite(rec.to_numpy(dtype=float)), rec.to_numpy(dtype=float), arrival)
    sent = np.maximum.accumulate(np.maximum(sent, arrival))  # sends go out in order, never early
    wl = Workload(sent, df["prefill_length"].to_numpy(), df["decode_length"].to_numpy(), name=f"harness-{phase}")
    return wl, sent - arrival


def predicted_samples(run: dict[str, Any], cfg) -> dict[str, pd.Series]:
    """Per-request values of each metric as the simulator predicts them for the run's layout and load."""
    if run["layout"] == "single":
        from fluidserve.sim.simulator import simulate

        wl, lag = _workload(run, "prefill")
        one = Workload(wl.arrival_time_s, wl.prefill_tokens, np.ones(len(wl), dtype=np.int64), name="max_tokens=1")
        pre = simulate(cfg, one).requests.set_index("req_id").sort_index()
        prefill = pre["ttft"] + lag
        wl, lag = _workload(run, "e2e")
        e2e = simulate(cfg, wl).requests.set_index("req_id").sort_index()
        return {"prefill_s": prefill, "ttft_s": e2e["ttft"] + lag, "tbt_s": e2e["tpot"], "e2e_s": e2e["total_delay"] + lag,
                "decode_s": e2e["total_delay"] + lag - prefill}
    from fluidserve.sim.disagg import simulate_disagg

    link = run.get("kv_link_GBps")
    if link is None:
        raise InputError(f"{run['_dir']}: the disaggregated run has no kv_link_GBps for the prediction")
    wl, lag = _workload(run, "e2e")
    r = simulate_disagg(cfg, wl, 1, 1, float(link)).requests.set_index("req_id").sort_index()
    # the proxy's own measures start when it receives the request: no send lag in them
    return {"prefill_s": r["prefill_end"] - r["arrival_time"], "kv_transfer_s": r["kv_transfer_s"],
            "decode_ttft_s": r["first_token_time"] - r["prefill_end"], "ttft_s": r["ttft"] + lag, "tbt_s": r["tbt"],
            "e2e_s": r["e2e"] + lag}


def compare(measured: dict[str, pd.Series], predicted: dict[str, pd.Series] | None) -> dict[str, dict[str, Any]]:
    """{metric: {measured: stats, predicted: stats, rel_error}} for every measured metric."""
    rows = {}
    for k in METRIC_LABELS:
        if k not in measured:
            continue
        row: dict[str, Any] = {"measured": summary_stats(measured[k]), "predicted": None, "rel_error": None}
        if predicted is not None and k in predicted:
            row["predicted"] = summary_stats(predicted[k])
            m, p = row["measured"]["mean"], row["predicted"]["mean"]
            row["rel_error"] = (m - p) / p if m is not None and p else None
        rows[k] = row
    return rows


# ------------------------------------------------------------------------------ figures
def latency_distributions(runs: list[dict[str, Any]]):
    """CDF per latency metric; one colour per layout, measured solid, predicted dashed."""
    from matplotlib.figure import Figure

    metrics = [k for k in ("prefill_s", "ttft_s", "tbt_s", "e2e_s") if any(k in r["_measured"] for r in runs)]
    fig = Figure(figsize=(3.6 * max(len(metrics), 1), 3.2), layout="constrained")
    axes = fig.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    for ax, k in zip(axes, metrics):
        for r in runs:
            for source, style in (("_measured", "-"), ("_predicted", "--")):
                v = (r.get(source) or {}).get(k)
                if v is None:
                    continue
                x = np.sort(pd.to_numeric(v, errors="coerce").dropna().to_numpy())
                if len(x):
                    what = "measured" if source == "_measured" else "predicted"
                    ax.step(np.r_[x[0], x] * 1e3, np.arange(len(x) + 1) / len(x), style, where="post", color=COLORS[r["layout"]],
                            label=f"{LAYOUT_LABELS[r['layout']]}, {what}")
        ax.set_xlabel(f"{METRIC_LABELS[k]} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    if axes[0].lines:
        axes[0].legend(fontsize=7)
    return fig


def latency_means(runs: list[dict[str, Any]]):
    """Mean of each metric, the layouts side by side (measured filled, predicted hatched)."""
    from matplotlib.figure import Figure

    metrics = [k for k in METRIC_LABELS if any(k in r["_comparison"] for r in runs)]
    fig = Figure(figsize=(1.3 * len(metrics) + 2.5, 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / (2 * len(runs))
    for j, r in enumerate(runs):
        for s, what in enumerate(("measured", "predicted")):
            vals = [((r["_comparison"].get(k) or {}).get(what) or {}).get("mean") for k in metrics]
            x = np.arange(len(metrics)) + (2 * j + s - len(runs) + 0.5) * width
            ax.bar(x, [np.nan if v is None else v * 1e3 for v in vals], width, color=COLORS[r["layout"]],
                   hatch="//" if what == "predicted" else None, alpha=0.6 if what == "predicted" else 1.0,
                   label=f"{LAYOUT_LABELS[r['layout']]}, {what}")
    ax.set_xticks(np.arange(len(metrics)), [METRIC_LABELS[k] for k in metrics], rotation=20)
    ax.set_ylabel("mean (ms)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


def power_over_time(runs: list[dict[str, Any]]):
    """NVML power of each GPU over the run (wall seconds), one panel per layout, phases shaded."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5 * max(len(runs), 1), 3.2), layout="constrained")
    axes = fig.subplots(1, max(len(runs), 1), squeeze=False, sharey=True)[0]
    for ax, r in zip(axes, runs):
        for gpu, info in sorted((r.get("power") or {}).items()):
            path = r["_dir"] / info["trace"]
            if path.exists():
                df = pd.read_csv(path)
                ax.plot(df["time_s"], df["power_w"], lw=1, label=f"GPU {gpu} ({info.get('role')})")
        for name, phase in (r.get("phases") or {}).items():
            win = phase.get("power_window_s")
            if win and None not in win:
                ax.axvspan(win[0], win[1], alpha=0.08, color="k")
                ax.text(win[0], 0.02, name, transform=ax.get_xaxis_transform(), fontsize=7)
        ax.set_title(LAYOUT_LABELS[r["layout"]], fontsize=9)
        ax.set_xlabel("time since start of monitoring (s)")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no power trace", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("board power (W)")
    return fig


# ------------------------------------------------------------------------------ report
def _fmt_ms(v) -> str:
    return "-" if v is None else f"{v * 1e3:.2f}"


def markdown(runs: list[dict[str, Any]], figures: dict[str, str]) -> str:
    lines = ["# Harness report", ""]
    for r in runs:
        lines += [f"## {LAYOUT_LABELS[r['layout']]} ({r['backend']}, {r['_dir']})", "",
                  f"model `{r.get('model')}`, GPUs {r.get('gpus')}, {r.get('num_requests')} requests, status **{r.get('status')}**"
                  + (f", time scale {r.get('time_scale')}" if r.get("backend") == "sim" else "")
                  + (f", vLLM {r.get('vllm_version')}, connector {r.get('connector')}" if r.get("vllm_version") else ""), ""]
        if r.get("_prediction_note"):
            lines += [f"Prediction: {r['_prediction_note']}", ""]
        lines += ["| metric | measured mean [ms] | p50 | p99 | predicted mean [ms] | p50 | p99 | rel. error |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, row in r["_comparison"].items():
            m, p = row["measured"], row["predicted"] or {}
            err = "-" if row["rel_error"] is None else f"{row['rel_error']:+.1%}"
            lines.append(f"| {METRIC_LABELS[k]} | {_fmt_ms(m['mean'])} | {_fmt_ms(m['p50'])} | {_fmt_ms(m['p99'])} | "
                         f"{_fmt_ms(p.get('mean'))} | {_fmt_ms(p.get('p50'))} | {_fmt_ms(p.get('p99'))} | {err} |")
        if r.get("power"):
            lines += ["", "| GPU | role | mean power [W] | energy [J] |", "|---|---|---|---|"]
            for gpu, info in sorted(r["power"].items()):
                ap, e = info.get("avg_power_w"), info.get("energy_j")
                lines.append(f"| {gpu} | {info.get('role')} | {'-' if ap is None else f'{ap:.1f}'} | {'-' if e is None else f'{e:.1f}'} |")
        lines.append("")
    lines += ["## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()] + [""]
    lines += ["Times are server seconds (simulated seconds for the stand-ins). rel. error = (measured - predicted) / predicted "
              "on the means; predictions: fluidserve.sim.simulator (single) and fluidserve.sim.disagg (pair).", ""]
    return "\n".join(lines)


def find_runs(dirs: list[str]) -> list[Path]:
    paths = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise InputError(f"{d}: no such folder")
        found = [p / f for f in RESULT_FILES.values() if (p / f).exists()]
        if not found:
            raise InputError(f"{d}: no {' or '.join(RESULT_FILES.values())}")
        paths += found
    return paths


def build_report(dirs: list[str], output_dir: str | None = None, config: str | None = None) -> dict[str, Any]:
    """Read the runs, predict, draw, write; returns the report document (also report.json)."""
    from fluidserve.config import load_config
    from fluidserve.outputs.figures import save_figure

    runs = [load_run(p) for p in find_runs(dirs)]
    out = Path(output_dir) if output_dir else Path(dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        r["_measured"] = measured_samples(r)
        cfg_path = Path(config) if config else (r["_dir"] / r["config"] if r.get("config") else None)
        r["_predicted"] = None
        if cfg_path is None or not cfg_path.exists():
            r["_prediction_note"] = "none (no config: pass --config with the system and batch-time model of these GPUs)"
        else:
            r["_predicted"] = predicted_samples(r, load_config(cfg_path))
            r["_prediction_note"] = f"simulator with {cfg_path}"
        r["_comparison"] = compare(r["_measured"], r["_predicted"])
    figures = {}
    for name, fn in (("latency_distributions", latency_distributions), ("latency_means", latency_means),
                     ("power_over_time", power_over_time)):
        paths = save_figure(fn(runs), out / name, formats=("png", "pdf"))
        figures[name] = Path(paths[0]).name
    md = out / "report.md"
    md.write_text(markdown(runs, figures))
    doc = {
        "runs": [{"dir": str(r["_dir"]), "layout": r["layout"], "backend": r["backend"], "status": r.get("status"),
                  "prediction": r["_prediction_note"], "metrics": r["_comparison"], "power": r.get("power")} for r in runs],
        "files": {"markdown": str(md), **{k: str(out / v) for k, v in figures.items()}},
    }
    (out / "report.json").write_text(json.dumps(finite_json(doc), indent=2) + "\n")
    doc["files"]["json"] = str(out / "report.json")
    return finite_json(doc)
