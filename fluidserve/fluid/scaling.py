"""The fluid-limit scaling family (issue 3): the system and its traffic grown by a factor n.

At scale n the arrival rate profile lambda(t) is multiplied by n (a Poisson process with
piecewise-constant rate n*lambda_b in bins of ``bin_s``), M_total, B and max_num_seqs are
multiplied by n, the per-token batch-time coefficients divided by n
(:meth:`BatchTimeModel.scaled`) and the swap bandwidth multiplied by n, so step times stay O(1)
and counts / n converge to the fluid solution. Request lengths are drawn i.i.d. from the base
workload's admissible (P, D) pairs (the law the fluid classes keep exactly). The base workload
is filtered with the base (n = 1) rejection rule, so no scale rejects anything. Shared system
prompts (prefix groups) are copied n times, each request drawn into one of its group's copies:
the cached prefix memory and the first-request misses grow with n like everything else.
"""

from __future__ import annotations

import numpy as np

from fluidserve.fluid.classes import admissible
from fluidserve.workload.base import Workload


def reference_workload(cfg, workload: Workload) -> Workload:
    """The base workload without the requests the n = 1 engine would reject."""
    s = cfg.system
    mask = admissible(workload, s.total_blocks, s.block_size, s.B, s.chunked_prefill)
    return workload.subset(mask, name=f"{workload.name}-admissible")


def rate_profile(workload: Workload, bin_s: float) -> np.ndarray:
    """Total arrivals per bin / bin_s [req/s] (the same binning as the fluid parameters)."""
    t = workload.arrival_time_s
    nbins = max(1, int(np.ceil((t.max() + 1e-12) / bin_s)))
    counts = np.bincount(np.minimum((t // bin_s).astype(np.int64), nbins - 1), minlength=nbins)
    return counts / bin_s


def scaled_workload(reference: Workload, n: float, bin_s: float, seed: int) -> Workload:
    """Poisson arrivals at rate n*lambda_b per bin, lengths drawn from ``reference``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(round(n * 1000))]))
    lam = rate_profile(reference, bin_s)
    counts = rng.poisson(n * lam * bin_s)
    total = int(counts.sum())
    starts = np.repeat(np.arange(len(lam)) * bin_s, counts)
    times = np.sort(starts + rng.random(total) * bin_s)
    pick = rng.integers(0, len(reference), size=total)
    group = reference.prefix_group[pick]
    if (group >= 0).any():  # n copies of every shared prompt: shared memory and first misses grow with n
        copies = max(1, int(round(n)))
        groups = int(reference.prefix_group.max()) + 1
        group = np.where(group >= 0, group + groups * rng.integers(0, copies, size=total), -1)
    return Workload(times, reference.prefill_tokens[pick], reference.decode_tokens[pick],
                    name=f"{reference.name}-x{n:g}", prefix_group=group,
                    prefix_length=reference.prefix_length[pick])


def scaled_config(cfg, n: float):
    """A copy of ``cfg`` with M_total, B, max_num_seqs and swap bandwidth multiplied by n.

    The batch-time model is scaled separately (``cfg.batch_time_model().scaled(n)``) and passed to
    the simulator, so the config's batch-time section is left as is.
    """
    new = cfg.model_copy(deep=True)
    s = new.system
    s.M_total = int(cfg.system.M_total * n)
    s.B = int(round(cfg.system.B * n))
    s.max_num_seqs = int(round(cfg.system.max_num_seqs * n))
    s.swap_bandwidth_GBps = cfg.system.swap_bandwidth_GBps * n
    new.base_dir = cfg.base_dir
    return new
