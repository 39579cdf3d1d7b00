"""The fluid vector field f(t, y, params): one pure function for both backends.

Written against an array namespace ``xp`` (numpy or jax.numpy) with leading batch axes allowed
on ``t``/``y`` (``...``), so the same code integrates under SciPy, under diffrax (jit, vmap,
grad) and evaluates derived series on a whole time grid at once. Equation numbers refer to
``theory/fluid_model.tex``.

State layout (length 2*K*J + 6*K): W (K) | r (K*J) | H (K*J) | A (K) | C (K) | IW (K) | IT (K) | IS (K)
  W waiting mass, r running (decoding) mass by stage, H held mass by stage (swapped, or recompute
  victims queued at the head of the waiting line), A cumulative fresh admissions, C cumulative
  completions, IW/IT/IS time integrals of waiting / before-first-token / in-system mass.
"""

from __future__ import annotations

import numpy as np

from fluidserve.fluid.params import FluidParams


def unpack(y, K: int, J: int):
    """Split a state (..., N) into named parts; r and H are (..., K, J)."""
    lead = y.shape[:-1]
    o = 0

    def take(n, shape=None):
        nonlocal o
        part = y[..., o:o + n]
        o += n
        return part if shape is None else part.reshape(lead + shape)

    W = take(K)
    r = take(K * J, (K, J))
    H = take(K * J, (K, J))
    A, C, IW, IT, IS = (take(K) for _ in range(5))
    return W, r, H, A, C, IW, IT, IS


def pack(xp, W, r, H, A, C, IW, IT, IS):
    lead = W.shape[:-1]
    flat = [W, r.reshape(lead + (-1,)), H.reshape(lead + (-1,)), A, C, IW, IT, IS]
    return xp.concatenate(flat, axis=-1)


def initial_state(params: FluidParams, xp=np):
    """The empty system."""
    return xp.zeros(params.state_size)


def _safe(xp, d):
    return xp.where(d > 0, d, 1.0)


def _sum2(x):
    return x.sum(axis=(-2, -1))


def arrival_rate(t, p: FluidParams, xp=np):
    """lambda_k(t) [req/s], piecewise constant in bins of p.bin_s; zero after the last bin."""
    nb = p.lam.shape[-2]
    b = xp.floor(t / p.bin_s)
    inside = (b >= 0) & (b < nb)
    idx = xp.clip(b, 0, nb - 1).astype(int)
    lam = p.lam[idx]
    return xp.where(inside[..., None], lam, 0.0)


def _quadratic_tau(xp, tau_b, XW, Xl, ell, PW, Pl, d1p):
    """Root of tau = tau_b + d1p * ell * (PW + Pl tau) / (XW + Xl tau) (eq. 11, one regime)."""
    a = Xl
    b = XW - tau_b * Xl - d1p * ell * Pl
    c = tau_b * XW + d1p * ell * PW
    disc = xp.sqrt(b * b + 4.0 * a * c + 1e-300)
    root = xp.where(b > 0, 2.0 * c / _safe(xp, b + disc), (disc - b) / _safe(xp, 2.0 * a))
    return xp.where(XW + Xl > 0, root, xp.inf)


def step_quantities(t, y, p: FluidParams, xp=np) -> dict:
    """One step of the relaxed step map (see :func:`_step_quantities`)."""
    # divisions by tiny per-stage masses are masked by where(); silence numpy's overflow notes
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return _step_quantities(t, y, p, xp)


def _step_quantities(t, y, p: FluidParams, xp=np) -> dict:
    """One step of the relaxed step map at state y (theory section 4): per-step flows and tau.

    Returns a dict of arrays (leading axes of t/y kept): ``tau`` [s], per-step masses
    ``victims``, ``held_in`` (swap-in or recompute re-admission), ``admit`` (K), ``complete`` (K),
    the stage arrays ``r_next``, and ``dy`` (the time derivative, eq. 2).
    """
    K, J = p.mem.shape[-2], p.mem.shape[-1]
    W, r, H, A, C, IW, IT, IS = unpack(y, K, J)
    # masses are >= 0; the integrator's round-off (below atol) must not drive tau below d0
    W, r, H = xp.maximum(W, 0.0), xp.maximum(r, 0.0), xp.maximum(H, 0.0)
    lam = arrival_rate(t, p, xp)
    rc = p.recompute
    m, g, ctx = p.mem, p.grow, p.ctx

    # eq. 6-7: growth demand and LIFO victims (youngest stages first)
    N = _sum2(r)
    used = _sum2(r * m)
    free = p.M_total - used
    G = _sum2(r * g)
    relief_need = xp.maximum(0.0, G - free)
    relief = (r * (m + g)).sum(axis=-2)  # (..., J)
    before = xp.cumsum(relief, axis=-1) - relief
    fv = xp.clip((relief_need[..., None] - before) / _safe(xp, relief), 0.0, 1.0)
    fv = xp.where(relief > 0, fv, 0.0)
    v = fv[..., None, :] * r
    N1 = N - _sum2(v)

    # eq. 8: capacities left for swap-in / admission
    k_mem = xp.maximum(0.0, free - G + _sum2(v * (m + g)))
    k_tok = xp.maximum(0.0, p.B - N1)
    k_seq = xp.maximum(0.0, p.max_num_seqs - N1)

    # eq. 9: held mass, oldest stage first
    nu_mem = m + (1.0 - rc) * g
    nu_tok = (1.0 - rc) + rc * ctx
    f_in = None
    lefts = []
    for cap, nu in ((k_mem, nu_mem), (k_tok, nu_tok), (k_seq, 1.0)):
        per_age = (H * nu).sum(axis=-2)
        total = per_age.sum(axis=-1)
        after = total[..., None] - xp.cumsum(per_age, axis=-1)
        frac = xp.where(per_age > 0, (cap[..., None] - after) / _safe(xp, per_age), 1.0)
        f_in = frac if f_in is None else xp.minimum(f_in, frac)
        lefts.append(xp.maximum(0.0, cap - total))
    u = xp.clip(f_in, 0.0, 1.0)[..., None, :] * H
    l_mem, l_tok, l_seq = lefts

    # decoding set of this step and the step-time base (eq. 1, 11)
    dec = r - v + (1.0 - rc) * u
    n_dec = _sum2(dec)
    kv_read = _sum2(dec * ctx)
    pre_rec = rc * _sum2(u * ctx)
    swap_tok = (1.0 - rc) * _sum2((v + u) * ctx)
    tau_b = p.d0_s + p.d1_decode_s * n_dec + p.d2_kv_s * kv_read + p.d1_prefill_s * pre_rec \
        + p.swap_s_per_token * swap_tok

    # eq. 10-11: admission fraction theta and the step time
    P = p.prefill
    PW, Pl = (W * P).sum(-1), (lam * P).sum(-1)
    m0 = m[..., 0]
    XW = {"mem": (W * m0).sum(-1), "tok": PW, "seq": W.sum(-1)}
    Xl = {"mem": (lam * m0).sum(-1), "tok": Pl, "seq": lam.sum(-1)}
    ell = {"mem": l_mem, "tok": l_tok, "seq": l_seq}
    d1p = p.d1_prefill_s
    denom = 1.0 - d1p * Pl
    tau = xp.where(denom > 0, (tau_b + d1p * PW) / _safe(xp, denom), xp.inf)
    for key in ("mem", "tok", "seq"):
        tau = xp.minimum(tau, _quadratic_tau(xp, tau_b, XW[key], Xl[key], ell[key], PW, Pl, d1p))
    theta = xp.ones_like(tau)
    for key in ("mem", "tok", "seq"):
        offered = XW[key] + Xl[key] * tau
        theta = xp.minimum(theta, xp.where(offered > 0, ell[key] / _safe(xp, offered), 1.0))
    admit = theta[..., None] * (W + lam * tau[..., None])  # per step, (..., K)

    # eq. 13-15: stage transitions
    leave = dec * p.adv
    done = leave * p.haz
    moved = leave - done
    shifted = xp.concatenate([xp.zeros_like(moved[..., :1]), moved[..., :-1]], axis=-1)
    fresh = xp.concatenate([admit[..., None], xp.zeros_like(r[..., 1:])], axis=-1)
    r_next = dec - leave + shifted + fresh + rc * u
    complete = done.sum(axis=-1)
    inv = 1.0 / tau
    dW = lam - admit * inv[..., None]
    dr = (r_next - r) * inv[..., None, None]
    dH = (v - u) * inv[..., None, None]
    dA = admit * inv[..., None]
    dC = complete * inv[..., None]
    first = W + (r[..., 0] + H[..., 0]) * p.adv[..., 0]
    dy = pack(xp, dW, dr, dH, dA, dC, W, first, W + r.sum(-1) + H.sum(-1))
    return {
        "tau": tau, "victims": v, "held_in": u, "admit": admit, "complete": complete, "lam": lam,
        "n_dec": n_dec, "kv_read": kv_read, "used": used, "theta": theta, "dy": dy,
        "W": W, "r": r, "H": H,
    }


def vector_field(t, y, p: FluidParams, xp=np):
    """dy/dt (theory eq. 2 with eqs. 6-15)."""
    return step_quantities(t, y, p, xp)["dy"]
