"""Children of a sweep die with it, also when it is killed with SIGKILL (nothing of it runs then).

On Linux, :func:`die_with_parent` asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to kill
the calling process when its parent exits. The local executor calls it in every pool worker, and
the forkserver that forks those workers imports this module first (``set_forkserver_preload``),
which calls it there: a ``kill -9`` of the sweep then takes the forkserver and the workers with
it, and init reaps them (no forkserver or zombie workers left behind). Elsewhere it does nothing
(the workers' own parent watch in :mod:`fluidserve.sweep.executors` still ends them).
"""

from __future__ import annotations

import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Have the kernel SIGKILL this process when its parent exits; True if that is set."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return os.getppid() != 1  # the parent may have exited before the call


if os.environ.get("FLUIDSERVE_FORKSERVER_LIFELINE") == "1":  # imported by the forkserver (preload)
    die_with_parent()
