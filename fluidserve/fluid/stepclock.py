"""The step-clock fluid model: transport in engine steps, O(groups x lags) per macro step.

Written in the step clock s (one unit = one engine step, dt/ds = tau(x(s)); theory section
"Step-clock model", eqs. sc1-sc9). In s every request in the batch advances exactly one token
per unit, so the running population is pure transport: a request of decode length D admitted
at step u is prefilling at x = s - u = 0 and decodes iteration x - 1 for x = 1..D (vLLM V0:
first token at the end of iteration 0); under vLLM V1 semantics the prefill step samples the
first token and x runs over 0..D-1. Completions are the admissions delayed by D steps,
memory and context are integrals of the admission history against fixed per-age weights
(eq. sc3), so the state is only the admission history per delay group (a ring of lags), the
waiting mass and the held (swapped / recompute-victim) mass.

The recursion advances ``h`` engine steps at a time (``fluid.step_stride``; h = 1 is the exact
step map of this group representation). Within a macro step the admission rate is constant
per group; the weights of eq. sc3 count, for each lag k of the history, how many (s, u) pairs
of the macro step's steps and the cohort's admission steps sit at each age x (a discrete
triangle), so every per-step average (decoding count, context tokens, prefill tokens, hence
the step time, which is linear in them) and every state at the macro-step boundary is exact
for piecewise-constant admissions. Caps (``max_num_seqs``, KV capacity, token budget B) are
linear in the macro step's admission rate and are imposed at its first and last engine step
(eq. sc5), so running <= max_num_seqs, KV <= capacity and waiting >= 0 hold at every output
point. LIFO preemption clips the youngest cohorts (eq. sc6); held mass returns back-dated by
its mean age (eq. sc7). The step time comes only from ``BatchTimeModel`` coefficients.

Two implementations of one step function (numpy or jax.numpy namespace ``xp``): a numpy loop
and a compiled ``jax.lax.scan`` over chunks of macro steps; they agree to round-off.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from fluidserve.errors import InputError

MAX_GROUPS = 48  # delay groups: quantile bins of D (all distinct values when fewer)
EMPTY_FRACTION = 1e-7  # the system counts as empty below this fraction of all arrivals
CHUNK = 512  # macro steps per compiled scan call (JAX) / per progress update
TARGET_MACRO_STEPS = 1500  # auto stride: macro steps per run
MAX_STRIDE = 512
TOKEN_ROWS = np.array([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])  # the token-budget rows of the six constraints (eq. sc5)


class Groups(NamedTuple):
    """Requests grouped by decode length (all arrays over groups G unless noted)."""

    decode_tokens: np.ndarray  # representative D (mean of the group) [tokens]
    prefill_tokens: np.ndarray  # mean P of the group [tokens]
    computed_tokens: np.ndarray  # mean prompt tokens computed (prefix-cache hits excluded) [tokens]
    share: np.ndarray  # fraction of admissible requests
    group_of: np.ndarray  # group index of each admissible request
    mask: np.ndarray  # admissible requests of the workload


def make_groups(decode_tokens: np.ndarray, prefill_tokens: np.ndarray, mask: np.ndarray,
                max_groups: int = MAX_GROUPS, cached_tokens: np.ndarray | None = None) -> Groups:
    """Delay groups: every distinct D when there are at most ``max_groups``, else quantile bins.

    ``cached_tokens``: prefix-cache hit of each request [tokens] (None: no prefix caching); the
    prompt tokens outside them are both computed and held in blocks of the request's own.
    """
    D = np.asarray(decode_tokens)[mask].astype(float)
    P = np.asarray(prefill_tokens)[mask].astype(float)
    hit = np.zeros_like(P) if cached_tokens is None else np.asarray(cached_tokens, float)[mask]
    values = np.unique(D)
    if len(values) <= max_groups:
        g = np.searchsorted(values, D)
    else:
        qs = np.quantile(D, np.linspace(0, 1, max_groups + 1)[1:-1], method="higher")
        inner = np.unique(qs)
        g = np.searchsorted(inner, D, side="left")
    G = int(g.max()) + 1
    cnt = np.bincount(g, minlength=G).astype(float)
    keep = cnt > 0
    remap = np.cumsum(keep) - 1
    g = remap[g]
    cnt = cnt[keep]
    return Groups(
        decode_tokens=np.bincount(g, D) / cnt, prefill_tokens=np.bincount(g, P) / cnt,
        computed_tokens=np.bincount(g, P - hit) / cnt,
        share=cnt / cnt.sum(), group_of=g, mask=np.asarray(mask),
    )


class Weights(NamedTuple):
    """Per-lag, per-group weights of eq. sc3, shape (L, G); lag 0 is the current macro step.

    Units: per unit admission rate (requests per engine step) of the cohort. ``*_avg``: mean
    over the macro step's h steps; ``*_first`` / ``*_last``: at its first / last step (during
    the step, after growth); ``*_end``: state at the boundary after the macro step; ``done``:
    completions during the macro step. ``pre``: 1 where a cohort is wholly in the batch during
    the macro step (it may be preempted or back-dated into).
    """

    dec_avg: np.ndarray
    ctx_avg: np.ndarray
    dec_first: np.ndarray
    dec_last: np.ndarray
    mem_first: np.ndarray
    mem_last: np.ndarray
    dec_end: np.ndarray
    mem_end: np.ndarray
    ctx_end: np.ndarray
    done: np.ndarray
    pre: np.ndarray


def make_weights(D: np.ndarray, P: np.ndarray, h: int, rounding_tokens: float, first_token_in_prefill: bool,
                 P_memory: np.ndarray | None = None) -> Weights:
    """Eq. sc3: count (s, u) pairs at each age x and weigh them by the age functions.

    A cohort admitted at u is in the batch at x = s - u = 0 (prefill) and decodes at x = 1..X,
    X = D (V0: the first token comes from decode iteration 0) or D - 1 (V1: the prefill step
    samples it); at x it reads P + x - 1 context tokens and holds P + x block-rounded tokens
    during the step (after its growth token; the prompt's blocks at the prefill step). It leaves
    at the end of age X. Fractional X (group means) weigh the last age by its fraction.
    ``P_memory``: prompt tokens that take blocks of their own (a shared cached prefix excluded).
    """
    D = np.asarray(D, float)
    P = np.asarray(P, float)
    Pm = P if P_memory is None else np.asarray(P_memory, float)
    X = D - (1.0 if first_token_in_prefill else 0.0)
    L = int(np.ceil((X.max() + 2) / h)) + 2
    xs = np.arange(0, (L + 1) * h + 1, dtype=float)  # ages
    # in the batch at age x (x = 0: the prefill step; fractional at the last age), (len(xs), G)
    inb = np.clip(X[None, :] - xs[:, None] + 1.0, 0.0, 1.0)
    inb[0] = 1.0
    present = inb * (xs[:, None] >= 1)  # decoding
    ctx = (P[None, :] + xs[:, None] - 1.0) * present
    mem_run = (Pm[None, :] + xs[:, None] + rounding_tokens) * present
    mem_run[0] = Pm + rounding_tokens  # the prefill step holds the prompt's blocks
    mem_hold = (Pm[None, :] + xs[:, None] - 1.0 + rounding_tokens) * present  # before growth
    leave = inb - np.vstack([inb[1:], np.zeros((1, len(D)))])  # completes at the end of age x
    k = np.arange(L)[:, None]
    s_rel = np.arange(h)[None, :]  # steps of the macro step, relative to its start
    u_rel = np.arange(h)  # admission steps within a cohort's macro step

    def count_at(step_offsets):
        """(L, len(xs)) multiplicity of ages at the given steps (relative to the macro step start)."""
        out = np.zeros((L, len(xs)))
        for so in np.atleast_1d(step_offsets):
            x = so + k * h - u_rel[None, :]  # (L, h)
            ok = x >= 0
            np.add.at(out, (np.broadcast_to(k, x.shape)[ok], x[ok].astype(int)), 1.0)
        return out

    avg = count_at(s_rel[0]) / h
    first, last, end = count_at(0), count_at(h - 1), count_at(h)
    # the admission of the current step itself (x = 0) is a prefill, not a decode
    dec = present
    W = Weights(
        dec_avg=avg @ dec, ctx_avg=avg @ ctx, dec_first=first @ dec, dec_last=last @ dec,
        mem_first=first @ mem_run, mem_last=last @ mem_run, dec_end=end @ dec, mem_end=end @ mem_hold,
        ctx_end=end @ ctx, done=(avg * h) @ leave,
        pre=np.zeros((L, len(D))),
    )
    # wholly in the batch during the macro step: every age of the cohort at steps 0..h is in 1..X
    lo = np.maximum(0, (np.arange(L) - 1) * h + 1)  # youngest age at the macro step's first step
    hi = np.arange(L) * h + h  # oldest age at its boundary
    pre = (lo[:, None] >= 1) & (hi[:, None] <= np.floor(X)[None, :])
    return W._replace(pre=pre.astype(float))


class Consts(NamedTuple):
    """Everything the step function reads (a pytree of arrays)."""

    lam: np.ndarray  # (nbins, G) arrival rate [req/s]
    cum: np.ndarray  # (nbins + 1, G) cumulative arrivals at bin edges
    next_edge: np.ndarray  # (nbins + 1,) start of the next bin with arrivals, per bin [s]
    bin_s: np.ndarray
    P: np.ndarray
    D: np.ndarray
    w: Weights
    backdate: np.ndarray  # (L,) mean age x at the macro step's first step of a lag-k cohort
    h: np.ndarray
    d0_s: np.ndarray
    d1_prefill_s: np.ndarray
    d1_decode_s: np.ndarray
    d2_kv_s: np.ndarray
    swap_s_per_token: np.ndarray
    M: np.ndarray
    B: np.ndarray
    S: np.ndarray
    recompute: np.ndarray
    empty_tol: np.ndarray
    wstack: np.ndarray  # (len(LOADS), L, G) the weights of LOADS stacked
    mem_pre: np.ndarray  # (L, G) memory relief of preemptible cohorts
    kmax: np.ndarray  # (G,) oldest lag wholly in the batch (0: none)
    kappa: np.ndarray  # (G,) step time per unit fresh admission rate [s per (request/step)]
    lag0: np.ndarray  # (6, G) per-unit fresh loads on the six constraints
    pg_share: np.ndarray  # (Q,) share of the arrivals in each prefix group (zeros: none)
    pg_hit: np.ndarray  # (Q,) mean prefix-cache hit of the group's requests [tokens]
    pg_tokens: np.ndarray  # (Q,) the group's shared cached blocks [tokens]


class State(NamedTuple):
    hist: np.ndarray  # (L, G) admission rate per lag [requests per engine step]
    W: np.ndarray  # (G,) fresh waiting mass
    H: np.ndarray  # (G,) held mass (swapped, or recompute victims at the head of the queue)
    HJ: np.ndarray  # (G,) held mass times its age x (for the back-dated return)
    t: np.ndarray  # time [s]
    s: np.ndarray  # engine steps done


def _arrived(xp, t, c: Consts):
    """Cumulative arrivals per group at time t (exact for piecewise-constant rates)."""
    nb = c.lam.shape[0]
    if xp is np:  # scalar fast path
        b = int(min(max(float(t) // float(c.bin_s), 0), nb))
        if b >= nb:
            return c.cum[nb]
        return c.cum[b] + c.lam[b] * min(max(float(t) - b * float(c.bin_s), 0.0), float(c.bin_s))
    b = xp.clip(xp.floor(t / c.bin_s), 0, nb).astype(int)
    bl = xp.clip(b, 0, nb - 1)
    dt = xp.clip(t - bl * c.bin_s, 0.0, c.bin_s)
    return xp.where(b < nb, c.cum[bl] + c.lam[bl] * dt, c.cum[nb])


LOADS = ("dec_avg", "ctx_avg", "dec_first", "dec_last", "mem_first", "mem_last", "dec_end", "mem_end", "ctx_end")
_I = {k: i for i, k in enumerate(LOADS)}


def _loads(xp, hist, c: Consts):
    """All history contractions of eq. sc3 at once, shape (len(LOADS),)."""
    return xp.einsum("lg,wlg->w", hist, c.wstack)


def _caps(xp, c: Consts, ld, extra_seq, extra_tok):
    """(cap, base) of the six linear constraints (eq. sc5): seqs, memory and tokens at the first / last step."""
    if xp is np:
        cap = np.array([c.S, c.S, c.M, c.M, c.B, c.B])
        base = np.array([ld[_I["dec_first"]] + extra_seq, ld[_I["dec_last"]] + extra_seq, ld[_I["mem_first"]],
                         ld[_I["mem_last"]], ld[_I["dec_first"]] + extra_tok, ld[_I["dec_last"]] + extra_tok])
        return cap, base
    cap = xp.stack([c.S, c.S, c.M, c.M, c.B, c.B])
    base = xp.stack([ld[_I["dec_first"]] + extra_seq, ld[_I["dec_last"]] + extra_seq, ld[_I["mem_first"]],
                     ld[_I["mem_last"]], ld[_I["dec_first"]] + extra_tok, ld[_I["dec_last"]] + extra_tok])
    return cap, base


def _theta(xp, cap, base, per_unit):
    """Largest theta in [0, 1] with base + theta * per_unit <= cap for all six constraints."""
    ok = per_unit > 0
    th = xp.where(ok, xp.clip((cap - base) / xp.where(ok, per_unit, 1.0), 0.0, 1.0), 1.0)
    return th.min()


def _victims(xp, hist, c: Consts, ld):
    """Eq. sc6: LIFO victims, youngest wholly-in-batch cohorts first, when memory overflows."""
    excess = xp.maximum(0.0, xp.maximum(ld[_I["mem_last"]], ld[_I["mem_first"]]) - c.M)
    relief = (hist * c.mem_pre).sum(-1)  # (L,)
    before = xp.cumsum(relief) - relief
    ok = relief > 0
    fv = xp.where(ok, xp.clip((excess - before) / xp.where(ok, relief, 1.0), 0.0, 1.0), 0.0)
    cut = fv[:, None] * c.w.pre * hist
    return hist - cut, (cut * c.h).sum(0), (cut * c.h * c.backdate[:, None]).sum(0)


def _returns(xp, hist, H, HJ, c: Consts, ld, free):
    """Eq. sc7: held mass returns (oldest first is implicit: all groups at one rate), back-dated by age."""
    h = c.h
    rc = c.recompute
    age = xp.where(H > 0, HJ / xp.where(H > 0, H, 1.0), 1.0)
    ok_b = c.kmax >= 1
    kb = xp.where(ok_b, xp.clip((age - 0.5) / h + 0.5, 1.0, xp.maximum(c.kmax, 1.0)), 0.0)
    L = hist.shape[0]
    k0 = xp.clip(xp.floor(kb), 0, L - 2).astype(int)
    fk = kb - k0
    gi = xp.arange(H.shape[0])
    per = (c.wstack[:, k0, gi] * (1 - fk) + c.wstack[:, k0 + 1, gi] * fk) / h  # (nw, G) per unit returned
    ret_seq = xp.where(ok_b, 0.0, 1.0 / h)
    ret_tok = (rc * (c.P + age) + (1 - rc)) / h
    pu = xp.stack([(H * (per[_I["dec_first"]] + ret_seq)).sum(), (H * (per[_I["dec_last"]] + ret_seq)).sum(),
                   (H * per[_I["mem_first"]]).sum(), (H * per[_I["mem_last"]]).sum(),
                   (H * (per[_I["dec_first"]] + ret_tok)).sum(), (H * (per[_I["dec_last"]] + ret_tok)).sum()])
    cap, base = _caps(xp, c, ld, 0.0, 0.0)
    th = _theta(xp, cap, base, pu) * free
    back = th * H
    add = xp.zeros_like(hist)
    if xp is np:
        np.add.at(add, (k0, gi), back / h * (1 - fk))
        np.add.at(add, (k0 + 1, gi), back / h * fk)
    else:
        add = add.at[k0, gi].add(back / h * (1 - fk)).at[k0 + 1, gi].add(back / h * fk)
    tok = (back * (c.P + age)).sum()
    return hist + add, H - back, HJ * (1 - th), back, (back * ret_seq).sum(), (back * ret_tok).sum(), tok


def step(xp, st: State, c: Consts):
    """One macro step of h engine steps (eqs. sc4-sc9). Returns (new state, outputs).

    With numpy the victim and return blocks run only when needed (same result: they are no-ops
    otherwise); under JAX every block is traced.
    """
    h, rc = c.h, c.recompute
    hist, H, HJ = st.hist, st.H, st.HJ
    ld = _loads(xp, hist, c)
    dense = xp is not np
    zero = xp.zeros_like(H)
    if dense or float(max(ld[_I["mem_last"]], ld[_I["mem_first"]])) > float(c.M):
        hist, victims, vict_age = _victims(xp, hist, c, ld)
        ld = _loads(xp, hist, c)
    else:
        victims, vict_age = zero, zero
    preempted = victims.sum() > c.empty_tol
    free = 1.0 - preempted
    swap_out_tok = (1 - rc) * (victims * c.P + vict_age).sum()
    H = H + victims
    HJ = HJ + vict_age
    if dense or float(H.sum()) > 0:
        hist, H, HJ, back, seq_new, tok_new, ret_tokens = _returns(xp, hist, H, HJ, c, ld, free)
        ld = _loads(xp, hist, c)
    else:
        back, seq_new, tok_new, ret_tokens = zero, 0.0, 0.0, 0.0
    swap_in_tok = (1 - rc) * ret_tokens
    reprefill_tok = rc * ret_tokens
    # step-time base (without fresh admissions), per engine step
    tau0 = (c.d0_s + c.d1_decode_s * ld[_I["dec_avg"]] + c.d2_kv_s * ld[_I["ctx_avg"]]
            + c.d1_prefill_s * reprefill_tok / h + c.swap_s_per_token * (swap_out_tok + swap_in_tok) / h)
    # eq. sc8: fresh FCFS admission (only without preemption and with nothing held)
    open_ = free * (H.sum() <= c.empty_tol)
    nb = c.lam.shape[0]
    # the bin in progress; a time on a bin edge is in the bin it starts (t / bin_s can round below
    # the integer: a jump to an empty bin's next edge must land in that edge's bin, or it repeats)
    b_now = xp.clip(xp.floor(st.t / c.bin_s + 1e-9), 0, nb).astype(int)
    lam_now = c.lam[xp.clip(b_now, 0, nb - 1)] * (b_now < nb)
    # the step time if the whole demand below is admitted: per step (W + lambda (h - 1) tau) / h
    den = xp.maximum(1.0 - (lam_now * c.kappa).sum() * (h - 1.0) / h, 0.05)
    tau_full = (tau0 + (st.W / h * c.kappa).sum()) / den
    # demand per engine step: the waiting mass and the arrivals of the predicted macro step's first
    # h - 1 steps (exact cumulative arrivals, so a rate-bin edge inside the macro step is not
    # missed). A request arriving during an engine step is scheduled at the next one (eq. sc8):
    # the arrivals of the macro step's last step wait for the next macro step.
    arr_before = _arrived(xp, st.t, c)
    arr_est = _arrived(xp, st.t + (h - 1) * tau_full, c) - arr_before
    q = (st.W + arr_est) / h
    cap, base = _caps(xp, c, ld, seq_new, tok_new)
    # eq. sc13: the first request of a prefix group computes the shared prompt too. Of the first A
    # admissions (FCFS: the first arrivals) 1 - exp(-s_p A) are expected to have missed in group
    # p (Poisson: no earlier request of the group). The x = a h requests admitted now add the
    # difference, so their mean miss falls with x: a few fixed-point passes find the admission
    # (the first pass charges the mean over the whole demand; the admitted are its head).
    A = arr_before.sum() - st.W.sum()
    x = q.sum() * h
    prefix = dense or float(c.pg_hit.max()) > 0
    for _ in range(4 if prefix else 1):
        xs = xp.maximum(x, 1e-12)
        miss_tok = (c.pg_hit * (xp.exp(-c.pg_share * A) - xp.exp(-c.pg_share * (A + xs)))).sum() / xs  # [tokens]
        lag0 = c.lag0 + miss_tok * TOKEN_ROWS[:, None]
        pu = (lag0 * q[None, :]).sum(-1)
        a = _theta(xp, cap, base, pu) * open_ * q
        x = a.sum() * h
    kappa = c.kappa + c.d1_prefill_s * miss_tok
    tau = tau0 + (a * kappa).sum()
    empty = (st.W.sum() + H.sum() + ld[_I["dec_end"]] + ld[_I["dec_first"]]) <= c.empty_tol
    jump = empty & (lam_now.sum() <= 0)
    # admit no more than has arrived by the macro step's last engine step; the step time is that of
    # what is admitted (two passes: capping shortens the steps, which moves the arrivals)
    for _ in range(2):
        t_new = xp.where(jump, xp.maximum(c.next_edge[b_now], st.t), st.t + h * tau)
        arr = _arrived(xp, t_new, c) - _arrived(xp, st.t, c)
        pending = _arrived(xp, t_new, c) - _arrived(xp, xp.maximum(t_new - tau, st.t), c)  # during the last step
        a = xp.where(jump, 0.0, xp.minimum(a, xp.maximum(st.W + arr - pending, 0.0) / h))
        tau = tau0 + (a * kappa).sum()
    t_new = xp.where(jump, xp.maximum(c.next_edge[b_now], st.t), st.t + h * tau)  # consistent with tau
    arr = _arrived(xp, t_new, c) - _arrived(xp, st.t, c)
    pending = _arrived(xp, t_new, c) - _arrived(xp, xp.maximum(t_new - tau, st.t), c)
    a = xp.where(jump, 0.0, xp.minimum(a, xp.maximum(st.W + arr - pending, 0.0) / h))
    W_new = st.W + arr - a * h
    seen = xp.maximum(W_new - xp.where(jump, 0.0, pending), 0.0)  # in the scheduler's queue after the step
    hist = hist.at[0].add(a) if dense else _add0(hist, a)
    ld_end = (c.wstack[_I["dec_end"]] * hist).sum(0)
    out = {
        "t0": st.t, "t1": t_new, "tau": xp.where(jump, 0.0, tau), "steps": xp.where(jump, 0.0, h * 1.0),
        "waiting": seen.sum() + rc * H.sum(), "pending": (W_new - seen).sum(), "swapped": (1 - rc) * H.sum(),
        "running": ld_end.sum(),
        # a group's cached blocks are held while one of its requests is in the batch (Poisson occupancy)
        "kv": (hist * c.wstack[_I["mem_end"]]).sum() + (c.pg_tokens * (1.0 - xp.exp(-c.pg_share * ld_end.sum()))).sum(),
        "kv_ctx": (hist * c.wstack[_I["ctx_end"]]).sum(),
        "done": (hist * c.w.done).sum(0), "admit": a * h, "returned": back.sum(), "victims": victims.sum(),
        "arrived": arr, "n_dec": ((hist * c.wstack[_I["dec_avg"]]).sum()) * h, "cls_run": ld_end,
        "cls_wait": seen + rc * H,
    }
    new_hist = xp.concatenate([xp.zeros_like(hist[:1]), hist[:-1]], axis=0)
    return State(new_hist, W_new, H, HJ, t_new, st.s + out["steps"]), out


def _add0(hist, a):
    hist = hist.copy()
    hist[0] += a
    return hist


# ---------------------------------------------------------------------------------- driver
def auto_stride(steps_estimate: float, steps_per_bin: float, target_macro_steps: float = TARGET_MACRO_STEPS) -> int:
    """Macro-step length h [engine steps] for ``fluid.step_stride: null``: about
    ``target_macro_steps`` macro steps per run, at most a quarter of an arrival-rate bin
    (``steps_per_bin``), 1 <= h <= MAX_STRIDE.

    The transport (delays, memory, context) is exact for any h; what h relaxes is the admission
    inside a macro step (a constant rate instead of step by step), an error that stays below the
    arrival-rate bins' resolution while h * tau << fluid.bin_s (measured in the README).
    """
    return int(max(1, min(MAX_STRIDE, np.ceil(steps_estimate / target_macro_steps), np.floor(steps_per_bin / 4.0))))


def prefix_hits(workload, system, first_miss: bool = True) -> tuple[np.ndarray, float]:
    """Prefix-cache hits [tokens] per request and the shared prefix memory [tokens].

    A request of prefix group g reuses the group's cached prefix in whole blocks, at most P - 1
    tokens (vLLM computes at least the last prompt token): floor(min(L_g, P - 1) / bs) * bs; the
    first request of a group computes it (``first_miss=False``: its tokens in the shared blocks
    all the same, which is its memory). The cached blocks are held once per group while the group
    has requests in the batch (eviction is not modeled).
    """
    bs = system.block_size
    grp = np.asarray(workload.prefix_group)
    L = np.asarray(workload.prefix_length)
    P = np.asarray(workload.prefill_tokens)
    hit = (np.minimum(L, P - 1) // bs) * bs * (grp >= 0)
    if not (grp >= 0).any():
        return np.zeros(len(P)), 0.0
    if not first_miss:
        return hit.astype(float), float(sum((L[grp == gid].max() // bs) * bs for gid in np.unique(grp[grp >= 0])))
    first = np.zeros(len(P), dtype=bool)
    _, idx = np.unique(np.where(grp >= 0, grp, -1), return_index=True)
    first[idx] = True
    first &= grp >= 0
    shared = float(sum((L[grp == gid].max() // bs) * bs for gid in np.unique(grp[grp >= 0])))
    return np.where(first, 0, hit).astype(float), shared


def prefix_groups(workload, system, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per prefix group: share of the admissible requests, mean hit [tokens], cached blocks [tokens].

    Zeros (one entry) when no request has a shared prefix.
    """
    grp = np.asarray(workload.prefix_group)[mask]
    if not (grp >= 0).any():
        return np.zeros(1), np.zeros(1), np.zeros(1)
    hit = prefix_hits(workload, system, first_miss=False)[0][mask]
    L = np.asarray(workload.prefix_length)[mask]
    bs = system.block_size
    ids = np.unique(grp[grp >= 0])
    share = np.array([(grp == g).mean() for g in ids])
    mean_hit = np.array([hit[grp == g].mean() for g in ids])
    tokens = np.array([float((L[grp == g].max() // bs) * bs) for g in ids])
    return share, mean_hit, tokens


_WEIGHTS_CACHE: dict = {}


def _weights(D, P, h: int, rounding_tokens: float, v1: bool, P_memory) -> Weights:
    """make_weights, cached on its inputs (sweep points share workloads; the cache keeps 64 tables)."""
    key = (np.asarray(D, float).tobytes(), np.asarray(P, float).tobytes(), int(h), float(rounding_tokens), bool(v1),
           np.asarray(P_memory, float).tobytes())
    w = _WEIGHTS_CACHE.get(key)
    if w is None:
        w = make_weights(D, P, h, rounding_tokens, v1, P_memory=P_memory)
        if len(_WEIGHTS_CACHE) >= 64:
            _WEIGHTS_CACHE.pop(next(iter(_WEIGHTS_CACHE)))
        _WEIGHTS_CACHE[key] = w
    return w


def build(cfg, workload, share: float = 1.0, batch_time=None, stride: int | None = None, pooled_mix: bool = False,
          target_macro_steps: float = TARGET_MACRO_STEPS, max_groups: int = MAX_GROUPS):
    """(Consts, Groups, h) for one replica receiving ``share`` of the arrivals.

    ``max_groups``: delay groups at most (quantile bins of D beyond; sweeps use fewer).

    ``pooled_mix``: every rate bin gets the workload's overall group mix (lengths i.i.d. in time,
    as in the crosscheck's scaled workloads) instead of the mix of the bin's own arrivals.
    """
    from fluidserve.fluid.classes import admissible

    s = cfg.system
    mask = admissible(workload, s.total_blocks, s.block_size, s.B, s.chunked_prefill)
    if not mask.any():
        raise InputError(
            f"workload '{workload.name}': every request is rejected by the engine "
            f"(KV blocks > {s.total_blocks} or prompt > B={s.B}); nothing for the fluid model to serve"
        )
    caching = getattr(s, "enable_prefix_caching", False)
    # every request's hit: the first requests' misses are a function of the admissions (eq. sc13),
    # and a first request's prompt blocks become the shared ones (its own memory is P - hit too)
    hits, shared_tokens = prefix_hits(workload, s, first_miss=False) if caching else (None, 0.0)
    groups = make_groups(workload.decode_tokens, workload.prefill_tokens, mask, max_groups=max_groups,
                         cached_tokens=hits)
    pg_share, pg_hit, pg_tokens = prefix_groups(workload, s, mask) if caching else (np.zeros(1),) * 3
    bin_s = float(cfg.fluid.bin_s)
    t_arr = workload.arrival_time_s[mask]
    nb = max(1, int(np.ceil((t_arr.max() + 1e-12) / bin_s)))
    b = np.minimum((t_arr // bin_s).astype(np.int64), nb - 1)
    G = len(groups.share)
    lam = np.zeros((nb, G))
    np.add.at(lam, (b, groups.group_of), 1.0)
    if pooled_mix:
        lam = np.outer(lam.sum(1), groups.share)
    lam *= share / bin_s
    cum = np.vstack([np.zeros((1, G)), np.cumsum(lam * bin_s, axis=0)])
    has = lam.sum(1) > 0
    nxt = np.full(nb + 1, nb * bin_s)
    for i in range(nb - 1, -1, -1):  # start of the first bin with arrivals at or after bin i + 1
        nxt[i] = (i + 1) * bin_s if (i + 1 < nb and has[i + 1]) else nxt[i + 1]
    bt = batch_time if batch_time is not None else cfg.batch_time_model()
    v1 = getattr(s, "scheduler", "vllm_v0") == "vllm_v1"
    if stride is None:
        stride = getattr(cfg.fluid, "step_stride", None)
    if stride is None:
        total = float(lam.sum() * bin_s)
        tau_guess = bt.d0_s + bt.d1_decode_s * min(s.max_num_seqs, 1.0 + total / max(nb * bin_s, 1e-9)
                                                   * bt.d0_s * groups.decode_tokens @ groups.share)
        stride = auto_stride(nb * bin_s / max(tau_guess, 1e-6), bin_s / max(tau_guess, 1e-6), target_macro_steps)
    h = int(stride)
    w = _weights(groups.decode_tokens, groups.prefill_tokens, h, (s.block_size - 1) / 2.0, v1, groups.computed_tokens)
    L = w.dec_avg.shape[0]
    backdate = np.where(np.arange(L) >= 1, (np.arange(L) - 0.5) * h + 0.5, 0.0)
    f = np.float64
    c = Consts(
        lam=lam, cum=cum, next_edge=nxt, bin_s=f(bin_s), P=groups.computed_tokens, D=groups.decode_tokens,
        w=w, backdate=backdate, h=f(h), d0_s=f(bt.d0_s), d1_prefill_s=f(bt.d1_prefill_s),
        d1_decode_s=f(bt.d1_decode_s), d2_kv_s=f(bt.d2_kv_s),
        swap_s_per_token=f(s.kv_bytes_per_token / (s.swap_bandwidth_GBps * 1e9)),
        M=f(s.total_blocks * s.block_size - shared_tokens), B=f(s.B), S=f(s.max_num_seqs),
        recompute=f(1.0 if (v1 or s.mode == "recompute") else 0.0),
        empty_tol=f(EMPTY_FRACTION * max(float(cum[-1].sum()), 1e-12)),
        wstack=np.stack([getattr(w, k) for k in LOADS]), mem_pre=w.mem_last * w.pre, kmax=w.pre.sum(0),
        kappa=bt.d1_prefill_s * groups.computed_tokens + bt.d1_decode_s * w.dec_avg[0] + bt.d2_kv_s * w.ctx_avg[0],
        pg_share=pg_share, pg_hit=pg_hit, pg_tokens=pg_tokens,
        lag0=np.stack([np.ones(G), w.dec_last[0] + 1.0, w.mem_first[0], w.mem_last[0], groups.computed_tokens,
                       groups.computed_tokens + w.dec_last[0]]),
    )
    return c, groups, h


def initial_state(c: Consts, xp=np) -> State:
    L, G = c.w.dec_avg.shape
    z = xp.zeros(G)
    return State(xp.zeros((L, G)), z, z, z, xp.float64(0.0), xp.float64(0.0))


OUT_KEYS = ("t0", "t1", "tau", "steps", "waiting", "pending", "swapped", "running", "kv", "kv_ctx", "done", "admit",
            "returned", "victims", "arrived", "n_dec", "cls_run", "cls_wait")


def _done_mask(outs: dict, c: Consts, horizon_s) -> np.ndarray:
    """Per macro step: the run may stop after it (drained after the window, or past the horizon)."""
    t1 = np.asarray(outs["t1"])
    if horizon_s is not None:
        return t1 >= horizon_s
    window = c.lam.shape[0] * float(c.bin_s)
    mass = (np.asarray(outs["waiting"]) + np.asarray(outs["pending"]) + np.asarray(outs["swapped"])
            + np.asarray(outs["running"]))
    return (t1 >= window - 1e-9) & (mass <= float(c.empty_tol))


def run_numpy(c: Consts, horizon_s=None, max_iter: int = 2_000_000, progress=None) -> dict:
    """Iterate :func:`step` in a numpy loop; per-macro-step outputs stacked (dict of arrays)."""
    st = initial_state(c)
    rec = {k: [] for k in OUT_KEYS}
    window = c.lam.shape[0] * float(c.bin_s)
    tol = float(c.empty_tol)
    for i in range(max_iter):
        st, out = step(np, st, c)
        for k in OUT_KEYS:
            rec[k].append(out[k])
        t1 = float(out["t1"])
        if (t1 >= horizon_s) if horizon_s is not None else (
                t1 >= window - 1e-9 and float(out["waiting"] + out["pending"] + out["swapped"] + out["running"]) <= tol):
            break
        if progress is not None and i % CHUNK == CHUNK - 1:
            progress(float(st.t))
    else:
        raise RuntimeError(f"step-clock model did not drain within {max_iter} macro steps (t = {float(st.t):.1f} s)")
    return {k: np.asarray(v, dtype=float) for k, v in rec.items()}


_CHUNK_FN = None


def _chunk_fn():
    global _CHUNK_FN
    if _CHUNK_FN is None:
        from fluidserve.fluid.jax_backend import _jax

        jax = _jax()
        jnp = jax.numpy


        @jax.jit
        def chunk(st, c):
            def b(s, _):
                s2, out = step(jnp, s, c)
                return s2, {k: out[k] for k in OUT_KEYS}

            return jax.lax.scan(b, st, None, length=CHUNK)

        _CHUNK_FN = chunk
    return _CHUNK_FN


def run_jax(c: Consts, horizon_s=None, max_iter: int = 2_000_000, progress=None) -> dict:
    """The same recursion compiled with ``jax.lax.scan`` in chunks of CHUNK macro steps.

    Macro steps after the end (drained, or past the horizon) are cut off on the host.
    """
    from fluidserve.fluid.jax_backend import _jax

    jax = _jax()
    jnp = jax.numpy
    fn = _chunk_fn()
    cj = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=jnp.float64), c)
    st = initial_state(cj, jnp)
    pieces = []
    n = 0
    while True:
        st, outs = fn(st, cj)
        outs = {k: np.asarray(v) for k, v in outs.items()}
        done_at = np.nonzero(_done_mask(outs, c, horizon_s))[0]
        if len(done_at):
            pieces.append({k: v[: int(done_at[0]) + 1] for k, v in outs.items()})
            break
        pieces.append(outs)
        n += CHUNK
        if progress is not None:
            progress(float(st.t))
        if n >= max_iter:
            raise RuntimeError(f"step-clock model did not drain within {max_iter} macro steps")
    return {k: np.concatenate([p[k] for p in pieces]) for k in OUT_KEYS}
