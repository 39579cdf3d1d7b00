"""Arrival processes: sorted arrival times (s) of ``n`` requests, the first at t = 0.

* :func:`poisson_arrivals` - exponential inter-arrivals with rate ``rate`` (req/s), CV = 1.
* :func:`gamma_arrivals` - a Gamma renewal process with mean inter-arrival 1/rate and a given
  coefficient of variation (CV > 1 is burstier than Poisson).
* :func:`mmpp_arrivals` - a two-state Markov-modulated Poisson process: Poisson at
  ``rate_low`` / ``rate_high`` during exponential sojourns of mean ``mean_low_s`` /
  ``mean_high_s``. Its long-run rate is the stationary mix :func:`mmpp_mean_rate`.

Every function takes a :class:`numpy.random.Generator` and is vectorized (no Python loop per
request), so a million arrivals take milliseconds. Times are shifted so the first request
arrives at 0; the remaining ``n - 1`` gaps follow the process, so ``(n - 1) / t[-1]``
estimates the rate without bias from a leading gap.
"""

from __future__ import annotations

import numpy as np

from fluidserve.errors import InputError


def _check_n(n: int) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise InputError(f"number of requests must be an integer >= 1, got {n!r}")


def _check_positive(name: str, value: float) -> None:
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value!r}")


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    """Arrival times 0, g1, g1+g2, ... from n-1 gaps (s)."""
    times = np.empty(len(gaps) + 1, dtype=np.float64)
    times[0] = 0.0
    np.cumsum(gaps, out=times[1:])
    return times


def poisson_arrivals(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` Poisson arrival times (s) at ``rate`` req/s, first at 0."""
    _check_n(n)
    _check_positive("arrival rate (req/s)", rate)
    return _from_gaps(rng.exponential(1.0 / rate, size=n - 1))


def gamma_arrivals(n: int, rate: float, cv: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` arrival times (s) of a Gamma renewal process: mean gap 1/rate, gap CV ``cv``.

    Shape k = 1/cv**2 and scale = 1/(rate*k), so the mean gap is 1/rate and its standard
    deviation cv/rate. cv = 1 is Poisson; the config asks for cv > 1 (bursty arrivals).
    """
    _check_n(n)
    _check_positive("arrival rate (req/s)", rate)
    _check_positive("gamma_cv", cv)
    shape = 1.0 / cv**2
    return _from_gaps(rng.gamma(shape, 1.0 / (rate * shape), size=n - 1))


def mmpp_mean_rate(rate_low: float, rate_high: float, mean_low_s: float, mean_high_s: float) -> float:
    """Long-run arrival rate (req/s) of the two-state MMPP: the time-stationary mix of rates."""
    return (rate_low * mean_low_s + rate_high * mean_high_s) / (mean_low_s + mean_high_s)


def mmpp_arrivals(
    n: int,
    rate_low: float,
    rate_high: float,
    mean_low_s: float,
    mean_high_s: float,
    rng: np.random.Generator,
    start_state: str | None = None,
) -> np.ndarray:
    """``n`` arrival times (s) of a two-state MMPP, first at 0.

    The modulating chain alternates low/high sojourns with exponential lengths (means
    ``mean_low_s``, ``mean_high_s``); it starts in its stationary distribution unless
    ``start_state`` is ``"low"`` or ``"high"``. Within a sojourn of length T at rate r the
    arrivals are a Poisson(r*T) number of uniform points, which is exactly a Poisson process,
    so the whole path is drawn with array operations. ``rate_low`` may be 0 (on/off bursts).
    """
    _check_n(n)
    if not np.isfinite(rate_low) or rate_low < 0:
        raise InputError(f"mmpp.rate_low must be a finite number >= 0, got {rate_low!r}")
    _check_positive("mmpp.rate_high", rate_high)
    _check_positive("mmpp.mean_low_s", mean_low_s)
    _check_positive("mmpp.mean_high_s", mean_high_s)
    if start_state is None:
        high_first = rng.random() < mean_high_s / (mean_low_s + mean_high_s)
    elif start_state in ("low", "high"):
        high_first = start_state == "high"
    else:
        raise InputError(f"mmpp start_state must be 'low', 'high' or None, got {start_state!r}")

    per_cycle = rate_low * mean_low_s + rate_high * mean_high_s  # expected arrivals per low+high cycle
    chunks: list[np.ndarray] = []
    have = 0
    t0 = 0.0
    while have < n:
        cycles = int(np.ceil(1.2 * (n - have) / per_cycle)) + 4
        low = rng.exponential(mean_low_s, size=cycles)
        high = rng.exponential(mean_high_s, size=cycles)
        durations = np.empty(2 * cycles)
        rates = np.empty(2 * cycles)
        first, second = (1, 0) if high_first else (0, 1)
        durations[first::2], rates[first::2] = high, rate_high
        durations[second::2], rates[second::2] = low, rate_low
        ends = t0 + np.cumsum(durations)
        starts = ends - durations
        counts = rng.poisson(rates * durations)
        idx = np.repeat(np.arange(len(durations)), counts)
        times = np.sort(starts[idx] + rng.random(len(idx)) * durations[idx])
        chunks.append(times)
        have += len(times)
        t0 = float(ends[-1])  # the next chunk continues the chain in the same phase order
    times = np.concatenate(chunks)[:n]
    return times - times[0]
