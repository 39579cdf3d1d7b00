"""The screen: mixture quantiles against textbook distributions, predictions against the simulator."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fluidserve.plan.screen import QuasiStaticTails, _quantiles, stability_bound
from fluidserve.plan.space import replica_types
from fluidserve.plan.traffic import build_traffic
from fluidserve.plan.verify import simulate_group


def test_quantiles_of_exponential_and_normal():
    n = 50
    # an exponential wait with rate 4/s for every request: q-quantile = -ln(1 - q) / 4
    q = _quantiles(np.zeros(n), np.zeros(n), np.ones(n), np.full(n, 4.0), [50.0, 99.0], 0.0)
    assert q == pytest.approx([math.log(2) / 4, math.log(100) / 4], rel=1e-4)
    # Normal(1, 0.1): p99 = 1 + 2.3263 * 0.1
    q = _quantiles(np.ones(n), np.full(n, 0.1), np.zeros(n), np.ones(n), [50.0, 99.0], 0.0)
    assert q == pytest.approx([1.0, 1.232635], rel=1e-4)
    # half the requests at 1 s, half at 3 s: the median sits at the 1 s atom's top edge
    mu = np.r_[np.ones(25), np.full(25, 3.0)]
    q = _quantiles(mu, np.zeros(n), np.zeros(n), np.ones(n), [40.0, 90.0], 0.0)
    assert q == pytest.approx([1.0, 3.0], rel=1e-4)
    # 2% never served: the p99 is infinite
    assert _quantiles(np.ones(n), np.zeros(n), np.zeros(n), np.ones(n), [99.0], 0.02) == [math.inf]


def test_screen_close_to_simulator_below_capacity(make_plan):
    plan = make_plan()
    traffic = build_traffic(plan)
    rt = replica_types(plan)[0][0]
    n = stability_bound(rt, traffic, plan)["min_replicas"] + 1
    pred = QuasiStaticTails().predict(rt, n, traffic, plan)["per_class"]["chat"]
    sim = simulate_group(rt, n, traffic, plan)["per_class"]["chat"]
    for key, tol in (("tpot_p50_s", 0.10), ("e2e_p50_s", 0.10), ("ttft_p50_s", 0.20), ("e2e_p99_s", 0.10)):
        assert pred[key] == pytest.approx(sim[key], rel=tol), key


def test_fluid_stepclock_screen_plugs_in(make_plan):
    """The fluid model's percentiles as the screen: used when the package has them, else a clear input error."""
    from fluidserve.errors import InputError
    from fluidserve.plan.fluid_screen import FluidStepClock, available
    from fluidserve.plan.screen import latency_model

    plan = make_plan(candidates={"model": "Llama-3.1-8B", "scheduler": {
        "max_num_batched_tokens": [512], "chunked_prefill": [False]}}, search={"screen": "fluid_stepclock"})
    model = latency_model(plan.search.screen)
    assert isinstance(model, FluidStepClock)
    traffic = build_traffic(plan)
    rt = replica_types(plan)[0][0]
    if not available():
        with pytest.raises(InputError, match="search.screen"):
            model.predict(rt, 4, traffic, plan)
        return
    pred = model.predict(rt, 4, traffic, plan)
    sim = simulate_group(rt, 4, traffic, plan)["per_class"]["chat"]
    assert pred["model"] in ("fluid_stepclock",) or pred["model"].startswith("quasistatic_tails (fluid:")
    assert pred["per_class"]["chat"]["tpot_p50_s"] == pytest.approx(sim["tpot_p50_s"], rel=0.3)
