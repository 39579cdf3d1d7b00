"""Turn client-side token timestamps of many concurrent streams into an engine-step profile.

An iteration-level engine releases the tokens of one step together, at the step's end. A client
that streams many requests at once therefore sees its token arrivals fall into tight clusters,
one per step end. From the clusters and the requests' prompt lengths this module rebuilds, for
every step it can identify, the step profile row that ``calibrate fit`` takes
(fluidserve/calibration/profiler.py: phase, batch_size, prefill_tokens, decode_tokens,
kv_tokens, time_ms):

* two consecutive clusters are *consecutive steps* when some request has token ``j`` in the
  first and token ``j + 1`` in the second (a decoding request emits in every step);
* the step ending at cluster ``k`` lasted ``t_k - t_{k-1}``; its ``decode_tokens`` are the
  requests that emitted at ``t_k``; its ``kv_tokens`` the sum of their contexts ``P + j`` (token
  ``j``, 0-based, comes from decode iteration ``j``, which reads ``P + j`` KV tokens);
* its ``prefill_tokens`` are the prompts of the requests whose *first* token is in cluster
  ``k + 1`` (a request prefilled in step ``s`` emits its first token at the end of ``s + 1``);
  when cluster ``k + 1`` is not a consecutive step, that is ambiguous and the row is dropped.

Prefill-only steps (nothing decoding) emit no token and are never rows. Assumptions, true for
a calibration run: no chunked prefill and no preemption (swapping or recompute changes which
step processes which tokens); each request's prompt length is known exactly. Cluster times are
the earliest arrival in the cluster. Times are seconds on any common clock (scale client wall
times by the endpoint's time scale first).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fluidserve.errors import InputError

PROFILE_COLUMNS = ["phase", "batch_size", "prefill_tokens", "decode_tokens", "kv_tokens", "time_ms"]


def cluster_threshold_s(tokens: pd.DataFrame, fraction: float = 0.3) -> float:
    """A gap that separates step ends: ``fraction`` of the 5th percentile of the requests' own
    inter-token gaps (each such gap spans at least one step)."""
    t = tokens.sort_values(["req_id", "token_index"])
    gaps = np.diff(t["time"].to_numpy())
    same = np.diff(t["req_id"].to_numpy()) == 0
    gaps = gaps[same & (gaps > 0)]
    if len(gaps) == 0:
        raise InputError("token table: no request has two tokens, so step ends cannot be told apart")
    return fraction * float(np.percentile(gaps, 5))


def step_profile(tokens: pd.DataFrame, prefill_tokens: dict[int, int] | pd.Series, threshold_s: float | None = None) -> pd.DataFrame:
    """The step profile of a streaming run.

    Args:
        tokens: one row per received token: ``req_id``, ``token_index`` (0-based), ``time`` [s].
        prefill_tokens: prompt tokens of each ``req_id``.
        threshold_s: arrivals closer than this belong to one step end (default:
            :func:`cluster_threshold_s`).

    Returns:
        PROFILE_COLUMNS plus ``step_end_s`` (cluster time), one row per identified step.
    """
    missing = [c for c in ("req_id", "token_index", "time") if c not in tokens.columns]
    if missing:
        raise InputError(f"token table is missing column(s) {', '.join(missing)}")
    tok = tokens.dropna(subset=["time"]).sort_values("time", kind="stable")
    if len(tok) == 0:
        raise InputError("token table is empty")
    prompt = dict(prefill_tokens.items()) if isinstance(prefill_tokens, pd.Series) else dict(prefill_tokens)
    unknown = set(tok["req_id"].unique()) - set(prompt)
    if unknown:
        raise InputError(f"no prompt length for req_id {sorted(unknown)[:5]}")
    thr = cluster_threshold_s(tok) if threshold_s is None else float(threshold_s)

    times = tok["time"].to_numpy(dtype=float)
    cid = np.concatenate([[0], np.cumsum(np.diff(times) > thr)])
    n_clusters = int(cid[-1]) + 1
    req = tok["req_id"].to_numpy()
    idx = tok["token_index"].to_numpy(dtype=np.int64)
    members: list[dict[int, int]] = [dict() for _ in range(n_clusters)]
    valid = np.ones(n_clusters, dtype=bool)
    t_cluster = np.full(n_clusters, np.inf)
    for c, r, j, t in zip(cid.tolist(), req.tolist(), idx.tolist(), times.tolist()):
        if r in members[c]:
            valid[c] = False  # two tokens of one request in one cluster: not one step end
        members[c][r] = j
        if t < t_cluster[c]:
            t_cluster[c] = t

    def consecutive(k: int) -> bool:
        """Clusters k and k+1 are the ends of two consecutive steps."""
        if not (valid[k] and valid[k + 1]):
            return False
        a, b = members[k], members[k + 1]
        return any(a.get(r) == j - 1 for r, j in b.items())

    rows = []
    for k in range(1, n_clusters):
        if not consecutive(k - 1):
            continue
        emit = members[k]
        nxt_first = [r for r, j in members[k + 1].items() if j == 0] if k + 1 < n_clusters else []
        if nxt_first and not consecutive(k):
            continue  # whoever starts at k+1 may have been prefilled in a hidden prefill-only step
        decode = len(emit)
        kv = sum(prompt[r] + j for r, j in emit.items())
        prefill = sum(prompt[r] for r in nxt_first)
        rows.append(
            (
                "mixed" if prefill else "decode",
                decode + len(nxt_first),
                prefill,
                decode,
                kv,
                (t_cluster[k] - t_cluster[k - 1]) * 1000.0,
                t_cluster[k],
            )
        )
    return pd.DataFrame(rows, columns=PROFILE_COLUMNS + ["step_end_s"])


def drop_outliers(profile: pd.DataFrame, k: float = 5.0) -> tuple[pd.DataFrame, int]:
    """Remove rows disturbed by scheduling hiccups; returns (kept rows, number dropped).

    A client or server that is descheduled for a moment delivers one step end late, which makes
    one measured step too long and the next too short by the same amount: heavy-tailed errors
    that plain least squares cannot absorb. The rows are fitted robustly to the batch-time
    model (``scipy.optimize.least_squares`` with the soft-L1 loss) and rows whose residual
    exceeds ``k`` robust standard deviations (1.4826 * median absolute residual) are dropped.
    """
    from scipy.optimize import least_squares

    if len(profile) < 8:
        return profile, 0
    X = profile[["prefill_tokens", "decode_tokens", "kv_tokens"]].to_numpy(dtype=float)
    X = np.column_stack([np.ones(len(X)), X])
    y = profile["time_ms"].to_numpy(dtype=float)
    scale = np.where(X.max(axis=0) > 0, X.max(axis=0), 1.0)
    Xs = X / scale
    x0 = np.linalg.lstsq(Xs, y, rcond=None)[0]
    mad0 = 1.4826 * np.median(np.abs(y - Xs @ x0)) or 1e-9
    sol = least_squares(lambda b: Xs @ b - y, x0, loss="soft_l1", f_scale=mad0)
    resid = y - Xs @ sol.x
    sigma = 1.4826 * np.median(np.abs(resid))
    keep = np.abs(resid) <= k * max(sigma, 1e-9)
    return profile[keep].reset_index(drop=True), int((~keep).sum())


def tokens_from_times(token_times: dict[int, list[float]]) -> pd.DataFrame:
    """``{req_id: [t_token0, t_token1, ...]}`` -> the token table (req_id, token_index, time)."""
    rows = [(r, j, t) for r, ts in token_times.items() for j, t in enumerate(ts)]
    return pd.DataFrame(rows, columns=["req_id", "token_index", "time"])
