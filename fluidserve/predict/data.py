"""Request tables for the predictors, read from the trace formats fluidserve knows.

The numeric columns come from :func:`fluidserve.workload.traces.read_trace` (validated, sorted by
arrival). Extra columns, where the file has them: ``app`` / ``class`` / ``prompt`` in the generic
CSV layout, and for BurstGPT ``app`` = ``Model/Log Type`` (e.g. ``ChatGPT/Conversation log``),
the application field that trace carries. Azure traces have prompt length alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fluidserve.errors import InputError
from fluidserve.workload.traces import read_trace


def request_table(path: str | Path, format: str = "generic") -> pd.DataFrame:
    """Columns ``arrival_time_s, prefill_tokens, output_tokens`` (+ ``app``/``class``/``prompt``)."""
    path = Path(path)
    loaded = read_trace(path, format)
    w = loaded.workload
    frame = pd.DataFrame({"arrival_time_s": w.arrival_time_s, "prefill_tokens": w.prefill_tokens,
                          "output_tokens": w.decode_tokens})
    extras = _extra_columns(path, format)
    if extras is not None and len(extras) == len(frame):
        for col in extras.columns:
            frame[col] = extras[col].to_numpy()
    return frame


def _extra_columns(path: Path, format: str) -> pd.DataFrame | None:
    if format == "generic":
        head = pd.read_csv(path, nrows=0).columns
        cols = [c for c in ("app", "class", "prompt") if c in head]
        if not cols:
            return None
        df = pd.read_csv(path, usecols=["arrival_time", *cols])
        order = np.argsort(pd.to_numeric(df["arrival_time"]).to_numpy(float), kind="stable")
        return df.iloc[order][cols].reset_index(drop=True)
    if format == "burstgpt":
        head = pd.read_csv(path, nrows=0).columns
        if not {"Model", "Log Type"} <= set(head):
            return None
        df = pd.read_csv(path, usecols=["Timestamp", "Request tokens", "Response tokens", "Model", "Log Type"])
        keep = (df["Response tokens"] > 0) & ~((df["Request tokens"] == 0) & (df["Response tokens"] > 0))
        df = df[keep]
        order = np.argsort(df["Timestamp"].to_numpy(float), kind="stable")
        df = df.iloc[order]
        return pd.DataFrame({"app": (df["Model"].astype(str) + "/" + df["Log Type"].astype(str)).to_numpy()})
    return None


def time_split(frame: pd.DataFrame, train_frac: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the requests that arrived first, test on the later ones (no look-ahead)."""
    if not 0 < train_frac < 1:
        raise InputError(f"--train-frac must be in (0, 1), got {train_frac}")
    n_train = int(round(len(frame) * train_frac))
    if n_train < 10 or len(frame) - n_train < 1:
        raise InputError(f"--train-frac {train_frac} leaves {n_train} training and {len(frame) - n_train} test requests")
    frame = frame.sort_values("arrival_time_s", kind="stable").reset_index(drop=True)
    return frame.iloc[:n_train].reset_index(drop=True), frame.iloc[n_train:].reset_index(drop=True)
