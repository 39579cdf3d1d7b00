"""The distances of fluid/compare.py on hand-made curves with known answers."""

import numpy as np
import pytest

from fluidserve.fluid.compare import tolerant_sup


def _step(t, at, lo=0.0, hi=10.0):
    return np.where(t >= at, hi, lo)


def test_shift_within_one_step_is_tolerated_and_beyond_it_is_not():
    t = np.arange(0.0, 2.0, 0.01)
    tau = np.full_like(t, 0.05)
    f = _step(t, 1.0)
    # the same edge 0.03 s later: strict sup = the jump, tolerant = 0
    assert np.max(np.abs(_step(t, 1.03) - f)) == 10.0
    assert tolerant_sup(f, _step(t, 1.03), t, tau) == 0.0
    # 0.2 s later (4 steps): the tolerant norm sees the whole jump
    assert tolerant_sup(f, _step(t, 1.2), t, tau) == 10.0


def test_level_error_is_measured_in_full():
    t = np.arange(0.0, 1.0, 0.01)
    f = 5.0 + np.sin(2 * np.pi * t)
    s = f + 0.25  # a level offset is not a phase: the tolerant norm must not hide it
    tau = np.full_like(t, 0.02)
    # within +-2 grid points the sine moves by at most 2*pi*0.02 = 0.126, so the error is >= 0.25 - 0.126
    e = tolerant_sup(f, s, t, tau)
    assert 0.25 - 0.13 <= e <= 0.25
    assert tolerant_sup(f, s, t, np.zeros_like(t)) == pytest.approx(0.25)


def test_symmetric():
    t = np.arange(0.0, 1.0, 0.01)
    tau = np.full_like(t, 0.03)
    a, b = _step(t, 0.5), _step(t, 0.5) + np.where((t > 0.2) & (t < 0.22), 3.0, 0.0)
    assert tolerant_sup(a, b, t, tau) == tolerant_sup(b, a, t, tau) == 3.0


def test_convergence_figure_labels_the_2_percent_line_and_names_series():
    import pandas as pd

    from fluidserve.fluid.compare import convergence_figure

    rows = [{"scenario": s, "n": n, **{f"{k}_err_{c}": 0.3 / n ** 0.5 for k in ("sup", "tol")
                                          for c in ("waiting", "running", "swapped", "kv_memory_tokens")}}
            for s in ("underloaded", "bursty") for n in (1, 4, 16)]
    fig = convergence_figure(pd.DataFrame(rows))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["waiting requests", "running requests", "swapped requests", "KV memory (tokens)"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "2% error" in labels and "underloaded" in labels and "bursty, one-step tolerant" in labels
