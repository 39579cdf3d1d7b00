"""Size guards: refuse inputs that cannot fit in memory or time, before anything is allocated.

Each limit is a module constant (the README's "Limits" section lists them). A refusal is an
:class:`~fluidserve.errors.InputError` (a ``ValueError`` inside pydantic validators) whose one
line names the field, the value, the estimate and the limit. The checks are pure functions of
numbers, so the config validators, the main job and the fluid solver share them.
"""

from __future__ import annotations

import math

from fluidserve.errors import InputError

#: requests in one workload (synthetic draw or trace replay).
MAX_REQUESTS = 10_000_000
#: bytes per request held by a run: workload arrays, the simulator's per-request state and
#: request_traces.csv rows in memory (an estimate used only in the error message).
BYTES_PER_REQUEST = 400
#: replicas behind one router (each is one engine object).
MAX_REPLICAS = 4096
#: points of one sweep (one grid axis, and the product of all axes).
MAX_SWEEP_POINTS = 100_000
#: arrival-rate bins x classes of the fluid model (``arrival window / fluid.bin_s`` x K).
MAX_FLUID_BINS = 1_000_000
#: output points of one fluid solution (at least ``arrival window / fluid.dt_out_s``).
MAX_FLUID_OUTPUT_POINTS = 1_000_000
#: the latest arrival time [s]: beyond ~1e9 s a float64 clock resolves only ~1e-7 s, and at
#: 1e300 s a step time of milliseconds vanishes in rounding (TTFT would read 0).
MAX_ARRIVAL_WINDOW_S = 1e9


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:,.1f} MiB"


def check_num_requests(n: int, field: str = "workload.num_requests") -> None:
    if n > MAX_REQUESTS:
        raise InputError(
            f"{field} = {n:,} would need about {_gib(n * BYTES_PER_REQUEST)} "
            f"(~{BYTES_PER_REQUEST} B per request); the limit is {MAX_REQUESTS:,} requests"
        )


def check_replicas(n: int, field: str = "cluster.replicas") -> None:
    if n > MAX_REPLICAS:
        raise InputError(f"{field} = {n:,} is above the limit of {MAX_REPLICAS:,} replicas")


def check_sweep_points(n: int, what: str) -> None:
    if n > MAX_SWEEP_POINTS:
        raise InputError(f"{what} gives {n:,} sweep points; the limit is {MAX_SWEEP_POINTS:,}")


def check_arrival_window(window_s: float, what: str) -> None:
    if not math.isfinite(window_s) or window_s > MAX_ARRIVAL_WINDOW_S:
        raise InputError(
            f"{what} puts arrivals at ~{window_s:.3g} s; the limit is {MAX_ARRIVAL_WINDOW_S:.0e} s "
            "(later times lose the step-time resolution of a float64 clock)"
        )


def check_fluid_sizes(fluid, window_s: float, num_classes: int | None = None, estimated: bool = False) -> None:
    """Bins and output points of the fluid model over an arrival window of ``window_s`` seconds.

    ``fluid`` is a :class:`~fluidserve.config.FluidConfig`; ``estimated`` says the window is
    the expected one (``num_requests / arrival_rate``), not the workload's.
    """
    where = "the expected" if estimated else "the"
    k = num_classes or fluid.num_classes
    bins = math.ceil(window_s / fluid.bin_s) if window_s > 0 else 1
    if bins * k > MAX_FLUID_BINS:
        raise InputError(
            f"fluid.bin_s = {fluid.bin_s:g} s gives {bins:,} rate bins x {k} classes over {where} arrival window of "
            f"{window_s:.3g} s (about {_gib(8.0 * bins * k * 4)}); the limit is {MAX_FLUID_BINS:,} bins x classes"
        )
    if fluid.dt_out_s:
        points = window_s / fluid.dt_out_s
        if points > MAX_FLUID_OUTPUT_POINTS:
            raise InputError(
                f"fluid.dt_out_s = {fluid.dt_out_s:g} s gives at least {points:,.0f} output points over {where} "
                f"arrival window of {window_s:.3g} s; the limit is {MAX_FLUID_OUTPUT_POINTS:,} points"
            )


def check_fluid_window(fluid, window_s: float) -> None:
    """The fluid model sees a workload: its horizon and rate bins must cover the arrivals.

    Raises :class:`~fluidserve.errors.UnsupportedError` (the main job then skips the fluid
    model with this reason and keeps the simulator's results).
    """
    from fluidserve.errors import UnsupportedError

    if fluid.horizon_s is not None and fluid.horizon_s < min(window_s, fluid.bin_s):
        # a horizon inside the arrival window is a legitimate zoom (the first 30 s of a run), but
        # one shorter than a rate bin sees no complete bin (it made throughput_rel_err read 1.5e15)
        raise UnsupportedError(
            f"fluid.horizon_s = {fluid.horizon_s:g} s is shorter than one rate bin (fluid.bin_s = {fluid.bin_s:g} s) "
            f"and than the arrival window ({window_s:.3g} s); leave it unset (arrivals + drain) or give at least one bin"
        )
    if window_s <= 0:
        raise UnsupportedError("all arrivals are at one instant (arrival window 0 s): the fluid model needs "
                               "arrival rates over time")
    if window_s < fluid.bin_s:
        raise UnsupportedError(
            f"fluid.bin_s = {fluid.bin_s:g} s is longer than the arrival window ({window_s:.3g} s): the fluid model "
            f"would spread the arrivals over the whole bin; set fluid.bin_s <= {window_s / 10:.3g} s"
        )


def check_capacity(system, prefill_tokens, decode_tokens) -> str | None:
    """Requests that the engine would reject for their size (see ``ReplicaEngine``).

    Raises :class:`InputError` when every request would be rejected (the KV cache is smaller
    than the smallest request); returns a one-line warning when some would be, else None.
    """
    import numpy as np

    need = np.asarray(prefill_tokens, dtype=np.int64) + np.asarray(decode_tokens, dtype=np.int64)
    if need.size == 0:
        return None
    bs = system.block_size
    capacity = system.total_blocks * bs
    too_big = -(-need // bs) * bs > capacity
    if not system.chunked_prefill:
        too_long = np.asarray(prefill_tokens) > system.B
    else:
        too_long = np.zeros(need.size, dtype=bool)
    bad = too_big | too_long
    if bad.all():
        if too_big.all():
            raise InputError(
                f"system.M_total = {system.M_total:,} tokens ({system.total_blocks:,} blocks of {bs}) is below the "
                f"smallest request ({int(need.min()):,} prompt + output tokens): every request would be rejected"
            )
        raise InputError(
            f"every request would be rejected: {int(too_big.sum()):,} need more than system.M_total = {system.M_total:,} "
            f"({capacity:,} usable KV tokens), {int(too_long.sum()):,} have a prompt above system.B = {system.B:,} (chunked prefill off)"
        )
    if bad.any():
        return (
            f"{int(bad.sum()):,} of {need.size:,} requests will be rejected: {int(too_big.sum()):,} need more than "
            f"system.M_total = {system.M_total:,} ({capacity:,} usable KV tokens; largest request {int(need.max()):,})"
            + (f", {int(too_long.sum()):,} have a prompt above system.B = {system.B:,}" if too_long.any() else "")
        )
    return None
