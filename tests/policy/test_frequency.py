"""Clock scaling and power model: hand-checked values, measured energy at the default clock, invariants."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluidserve.batch_time import BatchTimeModel
from fluidserve.energy import StepEnergyModel
from fluidserve.errors import InputError
from fluidserve.policy.frequency import FrequencyModel

BT = BatchTimeModel(0.0068, 3.5e-5, 3.0e-5, 3.8e-8)
H100 = FrequencyModel.preset("H100-SXM")
# an explicit model (not the fitted preset) for hand-checked arithmetic
HAND = FrequencyModel(1980.0, 90.0, 700.0, memory_activity=0.35, exponent=1.5, compute_share={"d0_s": 0.1})


def test_max_clock_is_identity_and_scaling_per_coefficient():
    assert HAND.batch_time(BT, 1980) == pytest.approx(BT)
    half = HAND.batch_time(BT, 990)
    assert half.d1_prefill_s == pytest.approx(2 * BT.d1_prefill_s)
    assert half.d1_decode_s == pytest.approx(2 * BT.d1_decode_s)
    assert half.d2_kv_s == pytest.approx(BT.d2_kv_s)  # KV reads are memory-bound
    assert half.d0_s == pytest.approx(0.0068 * 1.1)  # 0.1 x 2 + 0.9


def test_hand_checked_energy_of_a_memory_bound_step():
    # d0 only, compute share 0.1, at 990 MHz: T_c = 0.1*0.0068*2 = 1.36 ms, T_m = 6.12 ms;
    # dP = 610 * 0.5^1.5 = 215.668 W; E = 90 W * 7.48 ms + 215.668 * (1.36 ms + 0.35 * 6.12 ms)
    e = HAND.energy_model(BatchTimeModel(0.0068, 0, 0, 0), 990).step_time(0, 0, 0)
    assert e == pytest.approx(0.6732 + 215.6676 * (0.00136 + 0.002142), rel=1e-5)


def test_measured_energy_is_used_at_the_default_clock_and_scaled_below_it():
    em = StepEnergyModel(416.3, 0.00908, 0.01765, 1.768e-5, idle_w=72.3)
    measured = em.token_model(BT)
    assert H100.energy_model(BT, 1980, em) == pytest.approx(measured)
    # below the default clock: every coefficient is the measured one times the formula's ratio
    lo, hi = H100.energy_model(BT, 1200), H100.energy_model(BT, 1980)
    scaled = H100.energy_model(BT, 1200, em)
    for k in ("d0_s", "d1_prefill_s", "d1_decode_s", "d2_kv_s"):
        assert getattr(scaled, k) == pytest.approx(getattr(measured, k) * getattr(lo, k) / getattr(hi, k))
    assert H100.idle_power_w(em) == 72.3 and H100.idle_power_w() == H100.idle_w


def test_prefill_is_compute_bound_and_draws_near_peak():
    p = HAND.step_power_w(BT, 1980, 4000, 0, 0)
    assert 600 < p <= 700
    assert HAND.batch_time(BT, 990).step_time(4000, 0, 0) / BT.step_time(4000, 0, 0) == pytest.approx(1.95, abs=0.05)


def test_measured_power_table_overrides_formula():
    fm = FrequencyModel(1980, 90, 700, power_table=((990, 300, 150), (1980, 680, 320)))
    assert fm.busy_power_w(1485) == pytest.approx((490, 235))
    with pytest.raises(InputError, match="outside the measured power_table"):
        fm.busy_power_w(800)


def test_bad_inputs_name_the_field():
    with pytest.raises(InputError, match="idle_w"):
        FrequencyModel(1980, 800, 700)
    with pytest.raises(InputError, match="compute_share"):
        FrequencyModel(1980, 90, 700, compute_share={"d9": 1.0})
    with pytest.raises(InputError, match="outside"):
        H100.batch_time(BT, 2500)
    with pytest.raises(InputError, match="unknown GPU power preset"):
        FrequencyModel.preset("TPU")


@settings(max_examples=60, deadline=None)
@given(
    f=st.floats(300, 1980),
    pre=st.integers(0, 8000),
    dec=st.integers(0, 256),
    ctx=st.integers(0, 2000),
)
def test_step_power_between_idle_and_peak_and_memory_bound_energy_falls_with_clock(f, pre, dec, ctx):
    kv = dec * ctx
    p = H100.step_power_w(BT, f, pre, dec, kv)
    assert H100.idle_w - 1e-9 <= p <= H100.peak_w + 1e-9
    mem = BatchTimeModel(0.005, 0.0, 0.0, 4e-8)
    fm = FrequencyModel(1980, 90, 700, compute_share={"d0_s": 0.0})
    e = [fm.energy_model(mem, g).step_time(pre, dec, kv) for g in (f, min(1980.0, f * 1.2))]
    assert e[0] <= e[1] + 1e-12
