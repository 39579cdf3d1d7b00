"""Real request traces -> :class:`~fluidserve.workload.base.Workload`.

Formats (column names matched after stripping spaces, case-insensitively):

* ``azure`` - Azure LLM inference trace 2023 (Splitwise): ``TIMESTAMP`` (wall clock, e.g.
  ``2023-11-16 18:15:46.6805900``, 100 ns resolution, parsed as ISO 8601; a numeric column
  is taken as seconds), ``ContextTokens`` (prompt), ``GeneratedTokens`` (output). Rows with 0
  generated tokens are dropped and counted as ``zero_decode`` (a request needs D >= 1 decode
  iteration); rows with 0 context tokens likewise as ``zero_prefill``.
* ``burstgpt`` - BurstGPT: ``Timestamp`` (s), ``Request tokens``, ``Response tokens`` (also
  ``Model``, ``Total tokens``, ``Log Type``, unused). Rows with 0 response tokens are failed
  requests: dropped and counted as ``failed``; 0 request tokens as ``zero_prefill``.
* ``generic`` - ``arrival_time`` (s), ``prefill_length``, ``decode_length``, optional
  ``priority`` (integer >= 0, lower served first). Lengths must be >= 1 here.

Arrival times are relative to the trace's first arrival (the earliest timestamp). Options, in
this order: keep the window ``start_s <= t < end_s``; shift so the window starts at 0 and divide
by ``rate_scale`` (rate_scale 2 doubles the arrival rate); drop requests with prefill + decode
> ``L_filter``; keep the first ``max_requests``. Every dropped row is counted by reason in
:attr:`LoadedTrace.dropped`.

Bad input raises :class:`~fluidserve.errors.InputError` naming the file and, for bad values,
the 1-based data row (the header is row 0) and column, e.g.
``trace.csv row 17: prefill_length is 'abc', not a number``. The checks are vectorized, so a
million-row trace loads in about a second.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fluidserve.errors import InputError
from fluidserve.workload.base import Workload

AZURE_CONV_SAMPLE: Path = Path(str(importlib.resources.files("fluidserve").joinpath("data", "azure_llm_2023_conv.csv")))
"""The shipped Azure LLM inference 2023 conversation trace (19,366 requests, one hour, CC-BY 4.0)."""

FORMATS = ("azure", "burstgpt", "generic")


@dataclass(frozen=True)
class LoadedTrace:
    """A loaded trace: the workload, the number of data rows read and the drops by reason."""

    workload: Workload
    rows: int
    dropped: dict[str, int] = field(default_factory=dict)


# ------------------------------------------------------------------------------ reading
def _read_columns(path: Path, required: list[str], optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read the named columns of a CSV, renamed to the canonical names given."""
    if not path.exists():
        raise InputError(f"trace file not found: {path}")
    if not path.is_file():
        raise InputError(f"trace path is not a file: {path}")
    try:
        header = pd.read_csv(path, nrows=0)
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: trace file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot parse as CSV ({' '.join(str(exc).split())})") from None
    by_key = {str(c).strip().lower(): c for c in header.columns}
    actual: dict[str, str] = {}
    for name in required:
        if name.lower() not in by_key:
            found = ", ".join(str(c).strip() for c in header.columns)
            raise InputError(f"{path}: missing column '{name}' (found: {found})")
        actual[by_key[name.lower()]] = name
    for name in optional:
        if name.lower() in by_key:
            actual[by_key[name.lower()]] = name
    try:
        df = pd.read_csv(path, usecols=list(actual), skip_blank_lines=False, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot parse as CSV ({' '.join(str(exc).split())})") from None
    df = df.rename(columns=actual)
    # blank lines at the very end are not data rows; blank lines inside stay and are reported
    filled = df.notna().any(axis=1).to_numpy()
    last = len(filled) - int(np.argmax(filled[::-1])) if filled.any() else 0
    df = df.iloc[:last]
    if len(df) == 0:
        raise InputError(f"{path}: trace has a header but no data rows")
    return df


def _show(value) -> str:
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return str(value)
    return repr(str(value))


#: the largest token count (or other integer) a trace row may hold; far above any context
#: window, and below int64 overflow (1e30 would wrap to a negative length).
MAX_TOKENS = 10**9


def numeric_column(
    df: pd.DataFrame, name: str, path: Path | str, *, integer: bool, min_value: float = 0
) -> np.ndarray:
    """Column ``name`` as float64 (int64 when ``integer``); InputError at the first bad row.

    Bad: missing, not a number, not finite, below ``min_value`` or (``integer``) fractional.
    """
    raw = df[name]
    values = raw if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw) else None
    if values is None:
        values = pd.to_numeric(raw.astype("string").str.strip(), errors="coerce")
    v = values.to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v < min_value)
        if integer:
            bad |= (v != np.floor(v)) | (v > MAX_TOKENS)
    if bad.any():
        i = int(np.argmax(bad))
        value = raw.iloc[i]
        where = f"{path} row {i + 1}: {name}"
        if pd.isna(value) or (isinstance(value, str) and not value.strip()):
            raise InputError(f"{where} is missing")
        if np.isnan(v[i]):
            raise InputError(f"{where} is {_show(value)}, not a number")
        if not np.isfinite(v[i]):
            raise InputError(f"{where} is {_show(value)}, not a finite number")
        if v[i] < min_value:
            raise InputError(f"{where} is {_show(value)}, must be >= {_show(float(min_value))}")
        if integer and v[i] > MAX_TOKENS:
            raise InputError(f"{where} is {_show(value)}, above the limit of {MAX_TOKENS:,} tokens")
        raise InputError(f"{where} is {_show(value)}, not a whole number of tokens")
    return v.astype(np.int64) if integer else v


def _timestamp_seconds(df: pd.DataFrame, name: str, path: Path) -> np.ndarray:
    """Seconds since the earliest timestamp; wall-clock strings (ISO 8601) or numbers (s)."""
    raw = df[name]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        t = numeric_column(df, name, path, integer=False)
        return t - t.min()
    parsed = pd.to_datetime(raw.astype("string").str.strip(), format="ISO8601", utc=True, errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        value = raw.iloc[i]
        if pd.isna(value) or not str(value).strip():
            raise InputError(f"{path} row {i + 1}: {name} is missing")
        raise InputError(f"{path} row {i + 1}: {name} is {_show(value)}, not a date-time")
    ns = parsed.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return (ns - ns.min()) / 1e9


def _parse(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """(arrival_s relative to the first arrival, prefill, decode, priority, dropped) of a file."""
    dropped: dict[str, int] = {}
    if fmt == "azure":
        df = _read_columns(path, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"])
        t = _timestamp_seconds(df, "TIMESTAMP", path)
        p = numeric_column(df, "ContextTokens", path, integer=True)
        d = numeric_column(df, "GeneratedTokens", path, integer=True)
        pr = np.zeros(len(df), dtype=np.int64)
        reasons = [("zero_decode", d == 0), ("zero_prefill", (p == 0) & (d > 0))]
    elif fmt == "burstgpt":
        df = _read_columns(path, ["Timestamp", "Request tokens", "Response tokens"])
        t = numeric_column(df, "Timestamp", path, integer=False)
        t = t - t.min()
        p = numeric_column(df, "Request tokens", path, integer=True)
        d = numeric_column(df, "Response tokens", path, integer=True)
        pr = np.zeros(len(df), dtype=np.int64)
        reasons = [("failed", d == 0), ("zero_prefill", (p == 0) & (d > 0))]
    elif fmt == "generic":
        df = _read_columns(path, ["arrival_time", "prefill_length", "decode_length"],
                           ("priority", "prefix_group", "prefix_length"))
        t = numeric_column(df, "arrival_time", path, integer=False)
        t = t - t.min()
        p = numeric_column(df, "prefill_length", path, integer=True, min_value=1)
        d = numeric_column(df, "decode_length", path, integer=True, min_value=1)
        pr = (
            numeric_column(df, "priority", path, integer=True)
            if "priority" in df.columns
            else np.zeros(len(df), dtype=np.int64)
        )
        if "prefix_group" in df.columns:  # shared system prompts (vllm_v1 prefix caching)
            g = numeric_column(df, "prefix_group", path, integer=True)
            L = numeric_column(df, "prefix_length", path, integer=True) if "prefix_length" in df.columns else np.zeros(len(df), dtype=np.int64)
            bad = (L < 0) | (L > p)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputError(f"{path} row {i + 1}: prefix_length {L[i]} must be in [0, prefill_length={p[i]}]")
            pr = np.column_stack([pr, g, np.where(g >= 0, L, 0)])
        reasons = []
    else:
        raise InputError(f"unknown trace format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    keep = np.ones(len(t), dtype=bool)
    for reason, mask in reasons:
        dropped[reason] = int(mask.sum())
        keep &= ~mask
    return t[keep], p[keep], d[keep], pr[keep], dropped


# ------------------------------------------------------------------------------ public API
def read_trace(
    path: str | Path,
    format: str = "generic",
    *,
    start_s: float = 0.0,
    end_s: float | None = None,
    rate_scale: float = 1.0,
    L_filter: int | None = None,
    max_requests: int | None = None,
) -> LoadedTrace:
    """Load a trace file with the options of the module doc; returns workload and drop counts."""
    path = Path(path)
    if not np.isfinite(start_s) or start_s < 0:
        raise InputError(f"trace start_s must be >= 0, got {start_s!r}")
    if end_s is not None and not end_s > start_s:
        raise InputError(f"trace end_s ({end_s!r}) must be > start_s ({start_s!r})")
    if not np.isfinite(rate_scale) or rate_scale <= 0:
        raise InputError(f"trace rate_scale must be > 0, got {rate_scale!r}")
    if L_filter is not None and L_filter < 1:
        raise InputError(f"trace L_filter must be >= 1 token, got {L_filter!r}")
    if max_requests is not None and max_requests < 1:
        raise InputError(f"trace max_requests must be >= 1, got {max_requests!r}")

    t, p, d, pr, dropped = _parse(path, format)
    if pr.ndim == 1:  # priority, prefix_group, prefix_length
        pr = np.column_stack([pr, np.full(len(pr), -1, dtype=np.int64), np.zeros(len(pr), dtype=np.int64)])
    rows = len(t) + sum(dropped.values())
    in_window = t >= start_s
    if end_s is not None:
        in_window &= t < end_s
    dropped["outside_window"] = int((~in_window).sum())
    keep = in_window
    if L_filter is not None:
        too_long = keep & (p + d > L_filter)
        dropped["over_L_filter"] = int(too_long.sum())
        keep &= ~too_long
    t, p, d, pr = t[keep], p[keep], d[keep], pr[keep]
    order = np.argsort(t, kind="stable")
    t, p, d, pr = (t[order] - start_s) / rate_scale, p[order], d[order], pr[order]
    if max_requests is not None:
        dropped["over_max_requests"] = max(0, len(t) - max_requests)
        t, p, d, pr = t[:max_requests], p[:max_requests], d[:max_requests], pr[:max_requests]
    if len(t) == 0:
        why = ", ".join(f"{k}={v}" for k, v in dropped.items() if v)
        raise InputError(f"{path}: no requests left after filtering {rows} rows ({why})")
    wl = Workload(t, p, d, pr[:, 0], name=path.stem, prefix_group=pr[:, 1], prefix_length=pr[:, 2])
    return LoadedTrace(wl, rows, dropped)


def load_trace(path: str | Path, format: str = "generic", **options) -> Workload:
    """The workload of :func:`read_trace` (options: start_s, end_s, rate_scale, L_filter, max_requests)."""
    return read_trace(path, format, **options).workload


def load_azure(path: str | Path = AZURE_CONV_SAMPLE, **options) -> Workload:
    """Azure LLM inference 2023 CSV (default: the shipped conversation trace)."""
    return read_trace(path, "azure", **options).workload


def load_burstgpt(path: str | Path, **options) -> Workload:
    """BurstGPT CSV; failed requests (0 response tokens) are dropped."""
    return read_trace(path, "burstgpt", **options).workload


def load_generic(path: str | Path, **options) -> Workload:
    """Generic CSV: arrival_time, prefill_length, decode_length[, priority]."""
    return read_trace(path, "generic", **options).workload


def read_trace_config(trace, path: str | Path | None = None) -> LoadedTrace:
    """Load a :class:`~fluidserve.config.TraceConfig` (``path`` overrides ``trace.path``)."""
    return read_trace(
        path if path is not None else trace.path,
        trace.format,
        start_s=trace.start_s,
        end_s=trace.end_s,
        rate_scale=trace.rate_scale,
        L_filter=trace.L_filter,
        max_requests=trace.max_requests,
    )


def write_requests_csv(workload: Workload, path: str | Path) -> Path:
    """Write the generic CSV (arrival_time, prefill_length, decode_length, priority).

    Floats are written with 17 significant digits, so :func:`read_requests_csv` reads the
    workload back bit for bit. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workload.to_frame().to_csv(path, index=False, float_format="%.17g")
    return path


def read_requests_csv(path: str | Path) -> Workload:
    """Read a generic requests CSV as written (arrival times not shifted, nothing dropped)."""
    path = Path(path)
    df = _read_columns(path, ["arrival_time", "prefill_length", "decode_length"], ("priority",))
    t = numeric_column(df, "arrival_time", path, integer=False)
    p = numeric_column(df, "prefill_length", path, integer=True, min_value=1)
    d = numeric_column(df, "decode_length", path, integer=True, min_value=1)
    pr = numeric_column(df, "priority", path, integer=True) if "priority" in df.columns else None
    return Workload(t, p, d, pr, name=path.stem)
