"""Reading YAML files given by users, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fluidserve.errors import InputError


def read_yaml(path: str | Path, kind: str = "config") -> Any:
    """Parse ``path`` as YAML; missing, unparsable or empty files raise :class:`InputError`."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{kind} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if data is None:
        raise InputError(f"{path}: {kind} file is empty")
    return data
