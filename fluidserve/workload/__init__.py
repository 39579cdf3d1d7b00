"""Workloads: synthetic scenarios, arrival processes and real traces -> :class:`Workload`.

:func:`make_workload` turns a config's ``workload`` section (and its ``seed``) into requests:
``source: synthetic`` draws ``num_requests`` from a scenario (see
:mod:`fluidserve.workload.synthetic`); ``source: trace`` loads ``workload.trace`` (see
:mod:`fluidserve.workload.traces`; ``num_requests`` is not used, ``trace.max_requests`` is).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from fluidserve.workload.base import Workload
from fluidserve.workload.synthetic import SCENARIOS, synthetic_workload
from fluidserve.workload.traces import (
    AZURE_CONV_SAMPLE,
    LoadedTrace,
    load_azure,
    load_burstgpt,
    load_generic,
    load_trace,
    read_requests_csv,
    read_trace,
    read_trace_config,
    write_requests_csv,
)

__all__ = [
    "AZURE_CONV_SAMPLE",
    "SCENARIOS",
    "LoadedTrace",
    "Workload",
    "build_workload",
    "load_azure",
    "load_burstgpt",
    "load_generic",
    "load_trace",
    "make_workload",
    "read_requests_csv",
    "read_trace",
    "read_trace_config",
    "synthetic_workload",
    "write_requests_csv",
]

log = logging.getLogger(__name__)


def make_workload(cfg) -> Workload:
    """The workload of a loaded :class:`~fluidserve.config.Config` (deterministic in ``cfg.seed``).

    Trace paths are resolved with ``cfg.resolve_path``.
    """
    return build_workload(cfg.workload, cfg.seed, cfg.resolve_path)


def build_workload(w, seed: int, resolve_path: Callable[[str], Path] = Path) -> Workload:
    """The workload of a :class:`~fluidserve.config.WorkloadConfig` ``w`` and a seed.

    Rows dropped while loading a trace are logged by reason (logger ``fluidserve.workload``).
    """
    if w.source == "trace":
        loaded = read_trace_config(w.trace, resolve_path(w.trace.path))
        drops = ", ".join(f"{k}={v}" for k, v in loaded.dropped.items() if v)
        if drops:
            log.info("trace %s: %d rows read, dropped %s", w.trace.path, loaded.rows, drops)
        return loaded.workload
    return synthetic_workload(
        w.scenario,
        w.num_requests,
        seed=seed,
        arrival_rate=w.arrival_rate,
        arrival_process=w.arrival_process,
        gamma_cv=w.gamma_cv,
        mmpp=w.mmpp,
        shared_prefix=w.shared_prefix,
    )
