"""The one JSON writer of ``--json`` outputs: strict JSON (NaN and infinities become null).

``json.dumps`` writes ``NaN`` for a float NaN, which is not JSON and breaks ``jq`` and most
parsers; every command's ``--json`` output goes through :func:`to_json` instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def clean(obj: Any) -> Any:
    """``obj`` with NaN/inf -> None, numpy scalars/arrays -> Python values, paths -> str."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        x = float(obj)
        return x if math.isfinite(x) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def to_json(obj: Any, **kwargs) -> str:
    """Strict JSON text of ``obj`` (see :func:`clean`); kwargs go to ``json.dumps``."""
    return json.dumps(clean(obj), allow_nan=False, **kwargs)
