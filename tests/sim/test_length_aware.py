"""Length-aware scheduling (shortest predicted first with aging) and predicted-work routing,
on hand-checked traces."""

from __future__ import annotations

import numpy as np
import pytest

from fluidserve.config import config_from_dict
from fluidserve.errors import InputError
from fluidserve.sim import simulate
from fluidserve.sim.length_aware import predicted_output_tokens, spf_priorities
from fluidserve.workload.base import Workload


def _cfg(**policy):
    return config_from_dict({
        "system": {"scheduler": "vllm_v1", "M_total": 100000, "block_size": 16, "B": 2048, "max_num_seqs": 1},
        "batch_time": {"d0_s": 0.01, "d1_s": 0.0},
        "policy": policy,
        "fluid": {"enabled": False},
    })


# A (40 tokens) arrives alone and runs; B (40) and C (3) wait behind it (one sequence at a time).
TRACE = Workload(np.array([0.0, 0.001, 0.002]), np.array([10, 10, 10]), np.array([40, 40, 3]))


def _finish_order(cfg):
    res = simulate(cfg, TRACE)
    return list(res.requests.sort_values("completion_time")["req_id"])


def test_spf_serves_the_short_request_before_an_earlier_long_one():
    assert _finish_order(_cfg(queue_policy="FCFS")) == [0, 1, 2]
    assert _finish_order(_cfg(queue_policy="shortest_predicted", aging_tokens_per_s=0.0)) == [0, 2, 1]


def test_aging_lets_the_waiting_long_request_go_first():
    # key = predicted + aging * arrival: B 40 + a*0.001, C 3 + a*0.002 -> B first once a > 37000 tokens/s
    assert _finish_order(_cfg(queue_policy="shortest_predicted", aging_tokens_per_s=36000.0)) == [0, 2, 1]
    assert _finish_order(_cfg(queue_policy="shortest_predicted", aging_tokens_per_s=38000.0)) == [0, 1, 2]


def test_spf_times_hand_checked():
    """Each step is 10 ms. A: prefill step (token 1) + 39 decode steps = 40 steps -> done at 0.40 s.
    Under SPF C runs next: 3 steps -> 0.43 s; then B: 40 steps -> 0.83 s."""
    res = simulate(_cfg(queue_policy="shortest_predicted", aging_tokens_per_s=0.0), TRACE)
    done = res.requests.set_index("req_id")["completion_time"]
    assert done[0] == pytest.approx(0.40) and done[2] == pytest.approx(0.43) and done[1] == pytest.approx(0.83)


def test_priorities_and_predictions():
    p = spf_priorities([0.0, 1.0], [100.0, 10.0], aging_tokens_per_s=50.0)
    assert list(p) == [100_000, 60_000]
    with pytest.raises(InputError, match="aging"):
        spf_priorities([0.0], [1.0], -1.0)
    w = Workload(np.zeros(2000), np.full(2000, 5), np.full(2000, 100))
    noisy = predicted_output_tokens(w, "noisy", 0.5, seed=1)
    assert np.median(noisy) == pytest.approx(100, rel=0.05)  # log-normal noise keeps the median
    assert np.std(np.log(noisy)) == pytest.approx(0.5, rel=0.05)
    assert np.array_equal(predicted_output_tokens(w, "exact"), np.full(2000, 100.0))


def test_least_predicted_work_router_hand_checked():
    cfg = config_from_dict({
        "system": {"scheduler": "vllm_v1", "M_total": 100000, "B": 2048, "max_num_seqs": 8},
        "batch_time": {"d0_s": 0.01, "d1_s": 0.0},
        "cluster": {"replicas": 2, "router": "least_predicted_work"},
        "fluid": {"enabled": False},
    })
    # at t=0: 400-token request -> replica 0 (tie, first); then 10, 10, 10 tokens all go to replica 1
    # (0+10 < 400, 20 < 400, ...); least_loaded would have alternated 0, 1, 0, 1.
    w = Workload(np.zeros(4), np.full(4, 8), np.array([400, 10, 10, 10]))
    res = simulate(cfg, w)
    assert list(res.requests.sort_values("req_id")["replica"]) == [0, 1, 1, 1]
    ll = config_from_dict({**cfg.to_yaml_dict(), "cluster": {"replicas": 2, "router": "least_loaded"}})
    assert list(simulate(ll, w).requests.sort_values("req_id")["replica"]) == [0, 1, 0, 1]


def test_length_aware_study_oracle_beats_fcfs_on_a_queue():
    """A queue of mixed lengths behind one sequence slot: serving the short ones first lowers the
    mean E2E (the SPT rule); heavy noise on the predictions loses most of that gain."""
    from fluidserve.study.length_aware import run_length_aware

    cfg = config_from_dict({
        "system": {"scheduler": "vllm_v1", "M_total": 100000, "B": 2048, "max_num_seqs": 2},
        "batch_time": {"d0_s": 0.01, "d1_s": 0.0},
        "workload": {"source": "synthetic", "scenario": "heavy", "arrival_rate": 40.0, "num_requests": 400},
        "fluid": {"enabled": False},
    })
    res = run_length_aware(cfg, noise_sigmas=(3.0,), aging_tokens_per_s=0.0, predictor="linear", progress=False)
    rows = {r["policy"]: r for r in res["policies"]}
    assert rows["SPF exact"]["e2e_mean_s"] < 0.9 * rows["FCFS"]["e2e_mean_s"]
    assert rows["SPF exact"]["spearman"] == pytest.approx(1.0)
    noisy = rows["SPF exact x lognormal(3)"]
    assert noisy["e2e_mean_gain_pct"] < rows["SPF exact"]["e2e_mean_gain_pct"]
