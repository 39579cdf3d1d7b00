"""Error types and the one place that turns them into a CLI exit code.

``InputError`` is for bad user input (config, trace, CLI flags): the message names the
field, file, row or value, and the CLI prints it as one line on stderr and exits 2.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Callable


class FluidserveError(Exception):
    """Base class of all fluidserve errors."""


class InputError(FluidserveError, ValueError):
    """Bad user input. The message is a single readable line naming what is wrong."""


class MissingDependencyError(FluidserveError, ImportError):
    """An optional extra is not installed."""


class UnsupportedError(InputError):
    """A configuration the chosen engine cannot represent (e.g. a policy the fluid model lacks)."""


def require(module: str, extra: str):
    """Import ``module`` or raise MissingDependencyError naming the pip extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise MissingDependencyError(
            f"optional dependency '{module}' is not installed: pip install 'fluidserve[{extra}]' ({exc})"
        ) from exc


def cli_errors(func: Callable[..., int | None]) -> Callable[..., int]:
    """Decorator for CLI entry points: InputError/MissingDependencyError -> one line, exit 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs) -> int:
        try:
            rc = func(*args, **kwargs)
            return 0 if rc is None else int(rc)
        except (InputError, MissingDependencyError) as exc:
            msg = " ".join(str(exc).split())
            print(f"error: {msg}", file=sys.stderr)
            return 2
        except FileNotFoundError as exc:
            print(f"error: file not found: {exc.filename or exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130

    return wrapper
