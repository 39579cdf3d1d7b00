"""Fit the tensor-parallel communication term from a bare all-reduce sweep and TP step profiles.

The roofline (:mod:`fluidserve.calibration.roofline`) prices one all-reduce of ``b`` bytes over
``tp`` GPUs as ``all_reduce_latency_s + 2 (tp - 1)/tp * b / (interconnect_Bps * interconnect)``
(a ring: each GPU sends and receives ``2 (tp-1)/tp`` of the message). :func:`fit_allreduce`
fits exactly those two numbers, ``all_reduce_latency_s`` and the efficiency ``interconnect``
against the GPU's datasheet bandwidth, to a sweep written by
``calibrate profile --allreduce-tokens`` (columns ``tensor_parallel, bytes, time_us``), by
ordinary least squares on the time (intercept = latency, slope = ring bytes / bandwidth).

:func:`tp_overhead` compares TP step profiles with the TP=1 profile of the same model: the
measured step time at TP = t against ``time(TP=1) / t`` (perfect scaling of the compute and the
weight reads), whose difference is what the communication and the per-step overheads cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, cli_errors

KEY = ["phase", "prefill_tokens", "decode_tokens", "kv_tokens"]


@dataclass(frozen=True)
class AllReduceFit:
    """All-reduce latency [s], effective link bandwidth [bytes/s] and the efficiency against the
    datasheet bandwidth (None when none was given), with the fit's MAPE [%] over the sweep."""

    tensor_parallel: int
    all_reduce_latency_s: float
    bandwidth_Bps: float
    interconnect_efficiency: float | None
    mape_pct: float
    points: int

    def predict_s(self, nbytes):
        ring = 2.0 * (self.tensor_parallel - 1) / self.tensor_parallel
        return self.all_reduce_latency_s + ring * np.asarray(nbytes, dtype=float) / self.bandwidth_Bps


def fit_allreduce(sweep: pd.DataFrame, datasheet_Bps: float | None = None) -> AllReduceFit:
    """Latency and bandwidth of one TP degree's all-reduce sweep (see the module docstring)."""
    need = {"tensor_parallel", "bytes", "time_us"}
    missing = need - set(sweep.columns)
    if missing:
        raise InputError(f"all-reduce sweep lacks column(s) {', '.join(sorted(missing))}")
    tps = sorted(set(int(t) for t in sweep["tensor_parallel"]))
    if len(tps) != 1:
        raise InputError(f"all-reduce sweep: fit one tensor_parallel degree at a time, got {tps}")
    tp = tps[0]
    if tp < 2:
        raise InputError("all-reduce sweep at tensor_parallel=1 has no communication to fit")
    if len(sweep) < 2 or sweep["bytes"].nunique() < 2:
        raise InputError("all-reduce sweep: need at least two message sizes")
    ring = 2.0 * (tp - 1) / tp
    x = ring * sweep["bytes"].to_numpy(float)
    y = sweep["time_us"].to_numpy(float) * 1e-6
    slope, intercept = np.polyfit(x, y, 1)
    if slope <= 0:
        raise InputError("all-reduce sweep: time does not grow with the message size; cannot fit a bandwidth")
    latency = max(float(intercept), 0.0)
    bw = 1.0 / float(slope)
    pred = latency + x / bw
    mape = float(np.mean(np.abs(pred - y) / y) * 100)
    eff = bw / datasheet_Bps if datasheet_Bps else None
    return AllReduceFit(tp, latency, bw, eff, mape, int(len(sweep)))


def tp_overhead(tp1: pd.DataFrame, tpn: pd.DataFrame) -> pd.DataFrame:
    """Per grid point: TP=1 time, TP=t time, ideal ``TP=1 / t`` and the overhead above ideal (ms)."""
    for name, df in (("TP=1", tp1), ("TP=t", tpn)):
        missing = set(KEY + ["time_ms"]) - set(df.columns)
        if missing:
            raise InputError(f"{name} profile lacks column(s) {', '.join(sorted(missing))}")
    t = int(tpn["tensor_parallel"].iloc[0]) if "tensor_parallel" in tpn else None
    if not t or t < 2:
        raise InputError("tp_overhead: the second profile needs a tensor_parallel column >= 2")
    merged = tp1[KEY + ["time_ms"]].merge(tpn[KEY + ["time_ms"]], on=KEY, suffixes=("_tp1", "_tp"))
    if merged.empty:
        raise InputError("tp_overhead: the two profiles share no grid point")
    merged["tensor_parallel"] = t
    merged["ideal_ms"] = merged["time_ms_tp1"] / t
    merged["overhead_ms"] = merged["time_ms_tp"] - merged["ideal_ms"]
    merged["speedup"] = merged["time_ms_tp1"] / merged["time_ms_tp"]
    return merged


# -- CLI: python -m fluidserve calibrate fit-tp ---------------------------------------------


def add_arguments(parser) -> None:
    parser.add_argument("--allreduce", nargs="*", default=[], help="all-reduce sweep CSVs (one per TP degree >= 2)")
    parser.add_argument("--tp1-profile", help="the TP=1 step profile of the model")
    parser.add_argument("--tp-profile", nargs="*", default=[], help="step profiles at TP >= 2 of the same model")
    parser.add_argument("--gpu", help="GPU preset (fluidserve.specs) for the datasheet interconnect bandwidth")
    parser.add_argument("--output-dir", help="write tp_overhead.csv and tp_fit.json here")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _read_csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None


@cli_errors
def main(args) -> int:
    import json
    from pathlib import Path

    from fluidserve.jsonout import to_json

    if not args.allreduce and not args.tp_profile:
        raise InputError("give --allreduce CSV(s) and/or --tp1-profile with --tp-profile CSV(s)")
    datasheet = None
    if args.gpu:
        from fluidserve import specs

        datasheet = float(specs.gpu(args.gpu).interconnect_Bps)
    out: dict = {"allreduce": [], "overhead": []}
    for path in args.allreduce:
        fit = fit_allreduce(_read_csv(path), datasheet)
        out["allreduce"].append({"file": path, **fit.__dict__})
    tables = []
    if args.tp_profile:
        if not args.tp1_profile:
            raise InputError("--tp-profile needs --tp1-profile (the TP=1 profile to compare with)")
        tp1 = _read_csv(args.tp1_profile)
        for path in args.tp_profile:
            table = tp_overhead(tp1, _read_csv(path))
            tables.append(table)
            out["overhead"].append({
                "file": path, "tensor_parallel": int(table["tensor_parallel"].iloc[0]),
                "points": int(len(table)), "median_overhead_ms": float(table["overhead_ms"].median()),
                "median_speedup": float(table["speedup"].median()),
            })
    if args.output_dir:
        d = Path(args.output_dir)
        d.mkdir(parents=True, exist_ok=True)
        if tables:
            pd.concat(tables).to_csv(d / "tp_overhead.csv", index=False, float_format="%.6g")
        (d / "tp_fit.json").write_text(json.dumps(out, indent=2, default=float))
    if args.json:
        print(to_json(out))
    else:
        for a in out["allreduce"]:
            eff = f", {a['interconnect_efficiency']:.2f} of the datasheet" if a["interconnect_efficiency"] else ""
            print(f"TP={a['tensor_parallel']}: all-reduce latency {a['all_reduce_latency_s'] * 1e6:.1f} us, "
                  f"bandwidth {a['bandwidth_Bps'] / 1e9:.0f} GB/s{eff} (MAPE {a['mape_pct']:.1f}%)")
        for o in out["overhead"]:
            print(f"TP={o['tensor_parallel']}: median speedup {o['median_speedup']:.2f}, "
                  f"median overhead above ideal {o['median_overhead_ms']:.2f} ms over {o['points']} points")
    return 0
