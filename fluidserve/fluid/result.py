"""FluidResult: the one result type of the fluid model (both backends).

Time series (all per replica summed over the cluster, masses in requests, memory in tokens,
rates per second, times in seconds) plus per-class delay estimates (theory eq. 16).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SERIES_COLUMNS = [
    "time", "waiting", "running", "swapped", "kv_memory_tokens", "kv_context_tokens", "step_time_s",
    "throughput_rps", "decode_tokens_per_s", "arrival_rate", "admission_rate", "preemption_rate",
    "swap_in_rate", "virtual_waiting_s", "completed",
]


@dataclass
class FluidResult:
    """Fluid trajectory and delay estimates.

    Attributes:
        series: one row per output time, columns SERIES_COLUMNS.
        class_waiting, class_running: per-class masses, shape (K, T).
        classes: one row per class: share, mean prefill/decode tokens, decode-length bin, arrived,
            completed, mean_waiting_s, mean_ttft_s, mean_e2e_s (Little's law, eq. 16).
        summary: scalar results (mean delays, mean throughput, horizon, solver statistics).
    """

    series: pd.DataFrame
    class_waiting: np.ndarray
    class_running: np.ndarray
    classes: pd.DataFrame
    summary: dict = field(default_factory=dict)
    request_delays: pd.DataFrame | None = None  # per-request waiting/ttft/tpot/e2e [s] (stepclock backends)

    @property
    def t_s(self) -> np.ndarray:
        return self.series["time"].to_numpy()

    def __getitem__(self, column: str) -> np.ndarray:
        return self.series[column].to_numpy()

    def percentiles(self, q=(50, 90, 99)) -> dict:
        """Per-request delay percentiles [s]: {"waiting"|"ttft"|"tpot"|"e2e": {"p50", "p90", "p99", "mean"}}.

        From the class-resolved sojourns of every request (``fluidserve.fluid.tails``, theory eq.
        sc10). Only the step-clock backends (``stepclock``, ``stepclock_jax``) resolve requests;
        others raise UnsupportedError.
        """
        from fluidserve.errors import UnsupportedError
        from fluidserve.fluid.tails import percentiles

        if self.request_delays is None:
            raise UnsupportedError(f"fluid backend {self.summary.get('backend')!r} gives no per-request delays; "
                                   "use fluid.backend stepclock or stepclock_jax for percentiles")
        return percentiles(self.request_delays, q)

    def to_frame(self) -> pd.DataFrame:
        """The trajectory as a tidy table (fluid_trajectory.csv), with per-class waiting/running."""
        frame = self.series.copy()
        for k in range(self.class_waiting.shape[0]):
            frame[f"waiting_class{k}"] = self.class_waiting[k]
            frame[f"running_class{k}"] = self.class_running[k]
        return frame
