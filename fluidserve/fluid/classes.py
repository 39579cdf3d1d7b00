"""Split a workload into K request classes and build their per-age tables (theory eqs. 3-5).

Classes are quantile bins of the decode length D. Within a class the empirical joint law of
(P, D) is kept exactly through age tables: survival, completion hazard, block-rounded KV
memory, memory growth and context per decode age j. Requests the engine would reject (too
many KV blocks, or a prompt above B without chunked prefill) are removed first and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluidserve.errors import InputError
from fluidserve.workload.base import Workload


@dataclass(frozen=True)
class ClassTables:
    """Per-class, per-stage tables; arrays are (K, J) padded with zeros beyond a class's last stage.

    Attributes:
        share: fraction of admissible requests in each class, shape (K,).
        mean_prefill_tokens, mean_decode_tokens: class means, shape (K,).
        d_edges: decode-length bin edges, class k holds lo < D <= hi, shape (K+1,).
        counts: admissible requests per class, shape (K,).
        memory_tokens: m_k(j), block-rounded KV tokens held before decode iteration j (eq. 4).
        growth_tokens: g_k(j), KV tokens added during decode iteration j (eq. 4).
        context_tokens: c_k(j) = E[P | D > j] + j, KV tokens read at iteration j (eq. 5).
        hazard: fraction of the mass leaving stage j that completes (eq. 3).
        advance: fraction of a stage's mass that leaves it per step (1 / stage width).
        valid: stage exists for the class.
        stage_width: ages per stage (1 = exact).
        rejected: requests removed because the engine would reject them.
        kv_read_per_request: mean of sum_j (P + j) over the decode iterations [tokens].
        kv_memory_steps_per_request: mean of sum_j m(j) over the decode iterations [token-steps].
    """

    share: np.ndarray
    mean_prefill_tokens: np.ndarray
    mean_decode_tokens: np.ndarray
    d_edges: np.ndarray
    counts: np.ndarray
    memory_tokens: np.ndarray
    growth_tokens: np.ndarray
    context_tokens: np.ndarray
    hazard: np.ndarray
    advance: np.ndarray
    valid: np.ndarray
    stage_width: int
    rejected: int
    kv_read_per_request: float
    kv_memory_steps_per_request: float

    @property
    def num_classes(self) -> int:
        return len(self.share)

    @property
    def num_stages(self) -> int:
        return self.memory_tokens.shape[1]

    def class_of(self, decode_tokens: np.ndarray) -> np.ndarray:
        """Class index of each decode length (0..K-1)."""
        k = np.searchsorted(self.d_edges[1:-1], np.asarray(decode_tokens), side="left")
        return np.clip(k, 0, self.num_classes - 1)


def admissible(workload: Workload, total_blocks: int, block_size: int, B: int, chunked_prefill: bool) -> np.ndarray:
    """Mask of requests the engine accepts (the simulator's rejection rule)."""
    p = workload.prefill_tokens
    d = workload.decode_tokens
    ok = -(-(p + d) // block_size) <= total_blocks
    if not chunked_prefill:
        ok &= p <= B
    return ok


def decode_edges(decode_tokens: np.ndarray, num_classes: int) -> np.ndarray:
    """Quantile edges of D for ``num_classes`` bins (duplicates merged): lo < D <= hi per class."""
    d = np.asarray(decode_tokens)
    qs = np.quantile(d, np.linspace(0, 1, num_classes + 1)[1:-1], method="higher") if num_classes > 1 else []
    inner = np.unique(np.asarray(qs, dtype=np.int64))
    inner = inner[(inner >= d.min()) & (inner < d.max())]
    return np.concatenate([[d.min() - 1], inner, [d.max()]]).astype(np.int64)


def build_classes(
    workload: Workload,
    num_classes: int,
    block_size: int,
    total_blocks: int,
    B: int,
    chunked_prefill: bool = False,
    stages: int | None = None,
) -> ClassTables:
    """Per-class age tables of the admissible requests of ``workload`` (eqs. 3-5).

    Args:
        num_classes: K, the number of decode-length quantile bins (fewer if D has few values).
        block_size: KV block size [tokens]; memory is rounded up to whole blocks.
        total_blocks, B, chunked_prefill: the engine's rejection rule.
        stages: stages per class (None: one per decode age, exact); ages are grouped evenly.
    """
    ok = admissible(workload, total_blocks, block_size, B, chunked_prefill)
    if not ok.any():
        raise InputError(
            f"workload '{workload.name}': every request is rejected by the engine "
            f"(KV blocks > {total_blocks} or prompt > B={B}); nothing for the fluid model to serve"
        )
    P = workload.prefill_tokens[ok].astype(np.int64)
    D = workload.decode_tokens[ok].astype(np.int64)
    edges = decode_edges(D, num_classes)
    K = len(edges) - 1
    cls = np.clip(np.searchsorted(edges[1:-1], D, side="left"), 0, K - 1)
    J_ages = int(D.max())
    width = 1 if stages is None else max(1, int(np.ceil(J_ages / stages)))
    J = int(np.ceil(J_ages / width))
    bs = block_size

    shape = (K, J)
    mem, grow, ctx = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    haz, adv, valid = np.ones(shape), np.ones(shape), np.zeros(shape, dtype=bool)
    counts = np.zeros(K, dtype=np.int64)
    mean_p, mean_d = np.zeros(K), np.zeros(K)
    for k in range(K):
        sel = cls == k
        Pk, Dk = P[sel], D[sel]
        counts[k] = len(Pk)
        mean_p[k], mean_d[k] = Pk.mean(), Dk.mean()
        order = np.argsort(Dk, kind="stable")
        Pk, Dk = Pk[order], Dk[order]
        # per-age sums over survivors D > j (suffix of the D-sorted arrays)
        ages = np.arange(int(Dk.max()))
        start = np.searchsorted(Dk, ages, side="right")  # first index with D > j
        n_surv = len(Dk) - start
        n_done = np.searchsorted(Dk, ages + 1, side="right") - start  # D == j + 1
        sum_p = np.concatenate([np.cumsum(Pk[::-1])[::-1], [0]])[start]
        m_sum = np.empty(len(ages))
        g_sum = np.empty(len(ages))
        for j in ages:
            ps = Pk[start[j]:]
            held = -(-(ps + j) // bs)
            m_sum[j] = held.sum() * bs
            g_sum[j] = (-(-(ps + j + 1) // bs) - held).sum() * bs
        # group ages into stages of `width` (survival-weighted means)
        st = ages // width
        ns = np.bincount(st, n_surv, minlength=J)
        nstage = st.max() + 1
        mem[k, :nstage] = np.bincount(st, m_sum)[:nstage] / ns[:nstage]
        grow[k, :nstage] = np.bincount(st, g_sum)[:nstage] / ns[:nstage]
        ctx[k, :nstage] = np.bincount(st, sum_p + ages * n_surv)[:nstage] / ns[:nstage]
        first_age = np.arange(nstage) * width
        entering = n_surv[first_age]
        done_in_stage = np.bincount(st, n_done)[:nstage]
        haz[k, :nstage] = done_in_stage / entering
        adv[k, :nstage] = 1.0 / np.bincount(st, minlength=nstage)[:nstage]
        valid[k, :nstage] = True
    kv_read = float(np.mean(D * P + D * (D - 1) / 2.0))
    # memory-steps: sum_j b*ceil((P+j)/b) over j < D, computed per request in closed form by blocks
    kv_mem = float(np.mean(_memory_steps(P, D, bs)))
    return ClassTables(
        share=counts / counts.sum(),
        mean_prefill_tokens=mean_p,
        mean_decode_tokens=mean_d,
        d_edges=edges,
        counts=counts,
        memory_tokens=mem,
        growth_tokens=grow,
        context_tokens=ctx,
        hazard=haz,
        advance=adv,
        valid=valid,
        stage_width=width,
        rejected=int((~ok).sum()),
        kv_read_per_request=kv_read,
        kv_memory_steps_per_request=kv_mem,
    )


def _memory_steps(P: np.ndarray, D: np.ndarray, bs: int) -> np.ndarray:
    """sum_{j=0}^{D-1} bs*ceil((P+j)/bs) per request [token-steps], via sum of floors."""
    # ceil((P+j)/bs) = floor((P+j-1)/bs) + 1 ; sum_{x=a}^{b-1} floor(x/bs) = F(b) - F(a)
    def F(x):  # sum_{y=0}^{x-1} floor(y/bs)
        q, r = np.divmod(x, bs)
        return bs * q * (q - 1) // 2 + q * r

    a = P - 1
    return bs * (F(a + D) - F(a) + D)


def memory_steps_in_batch(P: np.ndarray, D: np.ndarray, bs: int, scheduler: str = "vllm_v0") -> np.ndarray:
    """Block-rounded KV memory a request holds, summed over its steps in the batch [token-steps].

    vLLM V0 (this package's engine): the prefill step holds ceil(P/bs) blocks; decode iteration j
    (j = 0..D-1) holds ceil((P + j + 1)/bs) blocks after its growth token. vLLM V1: the prefill
    step samples the first token; the D - 1 decode steps that follow hold ceil((P + 1 + j)/bs)
    blocks, j = 0..D-2.
    """
    P = np.asarray(P, dtype=np.int64)
    D = np.asarray(D, dtype=np.int64)
    first = bs * (-(-P // bs))
    n_dec = D if scheduler != "vllm_v1" else np.maximum(D - 1, 0)
    return first + _memory_steps(P + 1, n_dec, bs)
