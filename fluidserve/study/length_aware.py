"""Length-aware scheduling in the simulator: shortest-predicted-first against FCFS, by predictor quality.

On a trace (the Azure conversation hour by default) the first part trains the fitted predictor
(``python -m fluidserve predict`` models, by arrival time) and the later part is served under:
FCFS; shortest-predicted-first with aging using the exact output lengths (an oracle), the fitted
predictor, and the exact lengths with log-normal noise of growing ``sigma``. Reported per policy:
mean and p99 of E2E and TTFT, and the starvation tail: the p99 E2E of the 10% longest requests
and the maximum E2E. The gain of each policy is its mean E2E against FCFS's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from fluidserve.config import Config, config_from_dict
from fluidserve.errors import InputError


def _with_policy(cfg: Config, **policy) -> Config:
    data = cfg.to_yaml_dict()
    data["policy"].update(policy)
    data["fluid"]["enabled"] = False
    data["sim"]["record_events"] = False
    data["sim"]["snapshot_every"] = max(int(data["sim"].get("snapshot_every") or 1), 1000)
    return config_from_dict(data, f"{cfg.name} ({policy.get('queue_policy')})", cfg.base_dir)


def _metrics(requests) -> dict[str, float]:
    e2e = requests["total_delay"].to_numpy(float)
    ttft = requests["ttft"].to_numpy(float)
    out_len = requests["decode_length"].to_numpy(float)
    ok = np.isfinite(e2e)
    long = out_len >= np.quantile(out_len, 0.9)
    return {
        "completed": int(ok.sum()),
        "e2e_mean_s": float(np.mean(e2e[ok])), "e2e_p99_s": float(np.percentile(e2e[ok], 99)),
        "ttft_mean_s": float(np.nanmean(ttft)), "ttft_p99_s": float(np.nanpercentile(ttft, 99)),
        "long10_e2e_p99_s": float(np.percentile(e2e[ok & long], 99)), "e2e_max_s": float(np.max(e2e[ok])),
    }


def run_length_aware(cfg: Config, noise_sigmas: Sequence[float] = (0.25, 0.5, 1.0, 2.0), aging_tokens_per_s: float = 50.0,
                     train_frac: float = 0.5, predictor: str = "gbt", predictor_path: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
    """Run every policy on the later part of ``cfg``'s workload; returns rows and the setup."""
    import pandas as pd

    from fluidserve.predict import make_predictor
    from fluidserve.sim import simulate
    from fluidserve.workload import make_workload

    if cfg.policy.queue_policy != "FCFS":
        raise InputError("length-aware study: start from a config with policy.queue_policy: FCFS")
    workload = make_workload(cfg)
    if not 0 < train_frac < 1:
        raise InputError(f"--train-frac must be in (0, 1), got {train_frac}")
    n_train = int(len(workload) * train_frac)
    if n_train < 10 or len(workload) - n_train < 10:
        raise InputError(f"workload of {len(workload)} requests is too small to split at {train_frac}")
    idx = np.arange(len(workload))
    train, test = workload.subset(idx < n_train), workload.subset(idx >= n_train)
    test = dataclasses.replace(test, arrival_time_s=test.arrival_time_s - test.arrival_time_s[0])
    if predictor_path is None:
        import tempfile

        model = make_predictor(predictor).fit(pd.DataFrame({"prefill_tokens": train.prefill_tokens}), train.decode_tokens)
        predictor_path = str(model.save(tempfile.mkdtemp(prefix="fluidserve_pred_") + "/model.joblib"))
    policies = [("FCFS", {"queue_policy": "FCFS"}, None),
                ("SPF exact", {"queue_policy": "shortest_predicted", "length_predictor": "exact"}, 0.0),
                (f"SPF {predictor} predictor", {"queue_policy": "shortest_predicted", "length_predictor": predictor_path}, None)]
    for s in noise_sigmas:
        policies.append((f"SPF exact x lognormal({s:g})",
                         {"queue_policy": "shortest_predicted", "length_predictor": "noisy", "prediction_noise": float(s)}, s))
    from tqdm import tqdm

    rows = []
    for name, pol, sigma in tqdm(policies, desc="policies", disable=not progress):
        if pol["queue_policy"] != "FCFS":
            pol = {**pol, "aging_tokens_per_s": aging_tokens_per_s}
        c = _with_policy(cfg, **pol)
        res = simulate(c, test)
        m = _metrics(res.requests)
        if pol["queue_policy"] != "FCFS":  # how well the predictions rank the requests
            from scipy import stats

            from fluidserve.sim.length_aware import predicted_output_tokens

            pred = predicted_output_tokens(test, pol["length_predictor"], pol.get("prediction_noise", 0.0), c.seed, c.base_dir)
            m["spearman"] = float(stats.spearmanr(pred, test.decode_tokens).statistic)
        rows.append({"policy": name, "noise_sigma": sigma, **m})
    base = rows[0]["e2e_mean_s"]
    for r in rows:
        r["e2e_mean_gain_pct"] = 100.0 * (base - r["e2e_mean_s"]) / base
    return {"config": cfg.name, "train_requests": int(n_train), "test_requests": int(len(test)),
            "aging_tokens_per_s": aging_tokens_per_s, "predictor": predictor, "policies": rows}
