"""The fluid model as the screen's latency model (``search.screen: fluid_stepclock``).

Solves the step-clock fluid model (``fluid.backend: stepclock``) of the candidate fleet and takes
its per-request delays (``FluidResult.request_delays``: waiting, TTFT, TPOT, E2E of every
admissible request, from its own arrival time and lengths) through the same SLO statistics as the
simulator (:mod:`.slo`). Requests the engine rejects count as never served. The fluid model gives
no energy, so energy per token comes from :class:`~fluidserve.plan.screen.QuasiStaticTails`.
Available when the package's fluid model has the step-clock backend (otherwise choosing it is an
input error naming ``search.screen``); a candidate the fluid model does not represent (it raises
UnsupportedError, e.g. chunked prefill) is screened by the approximation instead, and its record
names the model used and why.
"""

from __future__ import annotations

from typing import get_args

import numpy as np
import pandas as pd

from fluidserve.config import FluidConfig
from fluidserve.errors import InputError, UnsupportedError
from fluidserve.plan import slo


def available() -> bool:
    return "stepclock" in get_args(FluidConfig.model_fields["backend"].annotation)


class FluidStepClock:
    """Per-request delays of the step-clock fluid model (see the module docstring)."""

    name = "fluid_stepclock"

    def predict(self, rtype, replicas: int, traffic, plan) -> dict:
        if not available():
            raise InputError("search.screen: 'fluid_stepclock' needs the step-clock fluid model "
                             "(fluid.backend stepclock), which this fluidserve does not have")
        from fluidserve.fluid.solve import solve
        from fluidserve.plan.screen import QuasiStaticTails

        cfg = rtype.run_config(replicas, plan)
        cfg = cfg.model_copy(update={"fluid": FluidConfig(enabled=True, backend="stepclock")})
        try:
            rd = solve(cfg, traffic.workload).request_delays
        except UnsupportedError as exc:  # a candidate the fluid model does not represent: the approximation
            out = QuasiStaticTails().predict(rtype, replicas, traffic, plan)
            out["model"] = f"{QuasiStaticTails.name} (fluid: {exc})"
            return out
        w = traffic.workload
        n = len(w)
        ttft, tpot, e2e = np.full(n, np.inf), np.full(n, np.nan), np.full(n, np.inf)
        if rd is not None and len(rd):
            rd = rd.sort_values("arrival_s", kind="stable").reset_index(drop=True)
            first = np.searchsorted(w.arrival_time_s, rd["arrival_s"].to_numpy(), side="left")
            idx = np.minimum(first + pd.Series(first).groupby(first).cumcount().to_numpy(), n - 1)
            ttft[idx] = rd["ttft"].to_numpy(float)
            tpot[idx] = rd["tpot"].to_numpy(float)
            e2e[idx] = rd["e2e"].to_numpy(float)
        tpot[w.decode_tokens <= 1] = np.nan
        qs = slo.class_percentiles(plan)
        per_class = {}
        for k, c in enumerate(plan.traffic.classes):
            sel = (traffic.class_index == k) & traffic.measured
            if sel.any():
                per_class[c.name] = slo.sample_stats(ttft[sel], tpot[sel], e2e[sel], qs[k], c.slo.thresholds)
        energy = QuasiStaticTails().predict(rtype, replicas, traffic, plan)["energy_per_token_j"]
        return {"per_class": per_class, "energy_per_token_j": energy, "model": self.name}
