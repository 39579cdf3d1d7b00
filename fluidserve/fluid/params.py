"""Parameters of the fluid vector field: a NamedTuple of arrays (a JAX pytree as it is).

Built from Config + Workload + BatchTimeModel. Every field is a float array (scalars are 0-d)
so that ``jax.vmap`` can batch any of them; shapes fix K (classes) and J (stages).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fluidserve.batch_time import BatchTimeModel
from fluidserve.errors import UnsupportedError
from fluidserve.fluid.classes import ClassTables, build_classes
from fluidserve.workload.base import Workload


class FluidParams(NamedTuple):
    """Everything the vector field reads. Units: seconds, tokens, requests.

    lam: arrival rate per bin and class [req/s], shape (nbins, K); piecewise constant.
    bin_s: bin width [s]. mem, grow, ctx, haz, adv: (K, J) stage tables (theory eqs. 3-5).
    prefill: mean prompt of a fresh request per class [tokens], (K,).
    d0_s, d1_prefill_s, d1_decode_s, d2_kv_s: batch-time coefficients (from BatchTimeModel).
    swap_s_per_token: swap time per KV token [s]. M_total, B, max_num_seqs: limits.
    recompute: 1.0 in recompute mode, 0.0 in swapping mode.
    """

    lam: np.ndarray
    bin_s: np.ndarray
    mem: np.ndarray
    grow: np.ndarray
    ctx: np.ndarray
    haz: np.ndarray
    adv: np.ndarray
    prefill: np.ndarray
    d0_s: np.ndarray
    d1_prefill_s: np.ndarray
    d1_decode_s: np.ndarray
    d2_kv_s: np.ndarray
    swap_s_per_token: np.ndarray
    M_total: np.ndarray
    B: np.ndarray
    max_num_seqs: np.ndarray
    recompute: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.mem.shape[-2]

    @property
    def num_stages(self) -> int:
        return self.mem.shape[-1]

    @property
    def state_size(self) -> int:
        K, J = self.num_classes, self.num_stages
        return 2 * K * J + 6 * K

    def with_batch_time(self, bt: BatchTimeModel) -> "FluidParams":
        return self._replace(
            d0_s=np.float64(bt.d0_s),
            d1_prefill_s=np.float64(bt.d1_prefill_s),
            d1_decode_s=np.float64(bt.d1_decode_s),
            d2_kv_s=np.float64(bt.d2_kv_s),
        )


def check_supported(cfg) -> None:
    """Raise UnsupportedError for configs the fluid model does not represent (never approximate).

    The check of the backend ``cfg.fluid.backend``: the step-clock model's scope for ``stepclock`` /
    ``stepclock_jax``, the Erlang ODE's (and step map's, quasi-static model's) otherwise.
    """
    if cfg.fluid.backend in ("stepclock", "stepclock_jax"):
        from fluidserve.fluid.stepclock_solve import check_supported_stepclock

        check_supported_stepclock(cfg)
        return
    check_supported_ode(cfg)


def check_supported_ode(cfg) -> None:
    """The scope of the Erlang ODE, the step map and the quasi-static model."""
    if cfg.system.scheduler != "vllm_v0":
        raise UnsupportedError(
            f"fluid model: system.scheduler={cfg.system.scheduler} is not modeled (the fluid equations follow "
            "vllm_v0: first token after the first decode iteration, swapping; see config/seed_swapping.yaml)"
        )
    if cfg.system.chunked_prefill:
        raise UnsupportedError("fluid model: system.chunked_prefill=true is not modeled (prefill is one step)")
    if cfg.policy.victim_policy != "LIFO":
        raise UnsupportedError(
            f"fluid model: policy.victim_policy={cfg.policy.victim_policy} is not modeled "
            "(only LIFO keeps the arrival order that the age-structured model relies on)"
        )
    if cfg.policy.queue_policy != "FCFS":
        raise UnsupportedError(f"fluid model: policy.queue_policy={cfg.policy.queue_policy} is not modeled (FCFS only)")
    if cfg.cluster.replicas > 1 and cfg.cluster.router not in ("round_robin", "weighted"):
        raise UnsupportedError(
            f"fluid model: cluster.router={cfg.cluster.router} is not modeled (only rate splits: round_robin, weighted)"
        )


def replica_shares(cfg) -> np.ndarray:
    """Share of the arrival rate each replica gets under a rate-split router."""
    R = cfg.cluster.replicas
    if R == 1:
        return np.ones(1)
    if cfg.cluster.router == "weighted":
        w = np.asarray(cfg.cluster.weights, dtype=float)
        return w / w.sum()
    return np.full(R, 1.0 / R)


def arrival_rates(workload: Workload, tables: ClassTables, mask: np.ndarray, bin_s: float) -> np.ndarray:
    """Arrivals of each class counted in bins of ``bin_s`` seconds, divided by bin_s [req/s]."""
    t = workload.arrival_time_s[mask]
    k = tables.class_of(workload.decode_tokens[mask])
    nbins = max(1, int(np.ceil((t.max() + 1e-12) / bin_s))) if len(t) else 1
    b = np.minimum((t // bin_s).astype(np.int64), nbins - 1)
    lam = np.zeros((nbins, tables.num_classes))
    np.add.at(lam, (b, k), 1.0)
    return lam / bin_s


def build_params(cfg, workload: Workload, tables: ClassTables | None = None, share: float = 1.0,
                 batch_time: BatchTimeModel | None = None) -> tuple[FluidParams, ClassTables]:
    """FluidParams for one replica receiving ``share`` of the workload's arrivals.

    The batch-time coefficients come only from ``cfg.batch_time_model()`` (or ``batch_time``).
    """
    from fluidserve.fluid.classes import admissible

    check_supported_ode(cfg)
    sysc = cfg.system
    if tables is None:
        tables = build_classes(
            workload, cfg.fluid.num_classes, sysc.block_size, sysc.total_blocks, sysc.B,
            sysc.chunked_prefill, cfg.fluid.stages,
        )
    mask = admissible(workload, sysc.total_blocks, sysc.block_size, sysc.B, sysc.chunked_prefill)
    lam = arrival_rates(workload, tables, mask, cfg.fluid.bin_s) * share
    bt = batch_time if batch_time is not None else cfg.batch_time_model()
    f = np.float64
    params = FluidParams(
        lam=lam,
        bin_s=f(cfg.fluid.bin_s),
        mem=tables.memory_tokens,
        grow=tables.growth_tokens,
        ctx=tables.context_tokens,
        haz=tables.hazard,
        adv=tables.advance,
        prefill=tables.mean_prefill_tokens.astype(float),
        d0_s=f(bt.d0_s),
        d1_prefill_s=f(bt.d1_prefill_s),
        d1_decode_s=f(bt.d1_decode_s),
        d2_kv_s=f(bt.d2_kv_s),
        swap_s_per_token=f(sysc.kv_bytes_per_token / (sysc.swap_bandwidth_GBps * 1e9)),
        # usable memory is whole blocks, as in the engine
        M_total=f(sysc.total_blocks * sysc.block_size),
        B=f(sysc.B),
        max_num_seqs=f(sysc.max_num_seqs),
        recompute=f(1.0 if sysc.mode == "recompute" else 0.0),
    )
    return params, tables
