"""Features of a request that a trace has: prompt length and a categorical application field.

The request table is a DataFrame with ``prefill_tokens`` (prompt tokens) and, where the trace
has them, a categorical ``app`` (or ``class``) column and a ``prompt`` text column. Numeric
features: ``log1p(prefill_tokens)`` and ``prefill_tokens`` itself; the category is one-hot
encoded (unknown categories at predict time encode as all zeros).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fluidserve.errors import InputError

CATEGORY_COLUMNS = ("app", "class")


def category_column(frame: pd.DataFrame) -> str | None:
    """The categorical column present in ``frame`` (``app`` before ``class``), or None."""
    for col in CATEGORY_COLUMNS:
        if col in frame.columns:
            return col
    return None


def check_frame(frame: pd.DataFrame, need_text: bool = False) -> None:
    """Raise InputError naming what is missing or wrong in a request table."""
    if not isinstance(frame, pd.DataFrame):
        raise InputError("predictor input must be a DataFrame with a prefill_tokens column")
    if "prefill_tokens" not in frame.columns:
        raise InputError(f"request table lacks column 'prefill_tokens' (has: {', '.join(map(str, frame.columns))})")
    p = pd.to_numeric(frame["prefill_tokens"], errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0))
    if bad.size:
        raise InputError(f"request table row {int(bad[0])}: prefill_tokens is {frame['prefill_tokens'].iloc[bad[0]]!r}")
    if need_text and "prompt" not in frame.columns:
        raise InputError("the text predictor needs a 'prompt' column with the request text")


def numeric_features(frame: pd.DataFrame) -> np.ndarray:
    p = frame["prefill_tokens"].to_numpy(float)
    return np.column_stack([np.log1p(p), p])


def check_target(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if y.shape != (n,):
        raise InputError(f"output lengths: expected {n} values, got shape {y.shape}")
    if not np.all(np.isfinite(y)) or np.any(y < 1):
        raise InputError("output lengths must be finite and >= 1 token")
    return y
