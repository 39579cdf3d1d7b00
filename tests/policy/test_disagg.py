"""Tandem fluid model and the prefill/decode split, checked against the disaggregated simulator."""

from __future__ import annotations

import pytest
import yaml

from fluidserve.policy.disagg import choose_split, tandem_steady_state
from fluidserve.policy.lp_config import load_lp_config, lp_config_from_dict
from fluidserve.policy.validate import _pool_config, class_workload
from fluidserve.sim.disagg import simulate_disagg

from .conftest import EXAMPLE, H100


def test_split_on_the_example_and_tandem_matches_the_simulator():
    # the tandem model on a synthetic H100 pool (the coefficients of the earlier example; the
    # calibrated example's split is exercised by test_cli)
    data = yaml.safe_load(EXAMPLE.read_text())
    data["pools"] = [dict(H100, count=6, clocks_mhz=[1980], system=dict(H100["system"], kv_bytes_per_token=131072))]
    cfg = lp_config_from_dict(data)
    split = choose_split(cfg)
    assert split.status == "optimal"
    assert split.n_prefill + split.n_decode <= cfg.disagg.gpus
    st = split.state
    assert st.rho_prefill <= cfg.safety.rho_max + 1e-9 and st.rho_decode <= cfg.safety.rho_max + 1e-9
    # one fewer GPU in either stage breaks a constraint (minimality)
    for dp, dd in ((-1, 0), (0, -1)):
        if split.n_prefill + dp >= 1 and split.n_decode + dd >= 1:
            s2 = tandem_steady_state(cfg, split.n_prefill + dp, split.n_decode + dd, cfg.disagg.link_GBps, "h100")
            ok = (s2.rho_prefill <= cfg.safety.rho_max and s2.rho_decode <= cfg.safety.rho_max
                  and s2.tbt_s <= min(c.tpot_s for c in cfg.classes) * cfg.safety.slo_headroom * cfg.safety.tpot_mean_share)
            assert not ok or s2.ttft_s.max() > st.ttft_s.max()
    wl = class_workload(cfg, 5000, 11)
    res = simulate_disagg(_pool_config(cfg, 0), wl, split.n_prefill, split.n_decode, cfg.disagg.link_GBps)
    r = res.requests[res.requests.arrival_time > 0.15 * wl.arrival_time_s[-1]]
    assert r.tbt.mean() == pytest.approx(st.tbt_s, rel=0.05)
    kvb = cfg.pools[0].system.kv_bytes_per_token
    assert r.kv_transfer_s.mean() == pytest.approx(r.prefill_length.mean() * kvb / (cfg.disagg.link_GBps * 1e9), rel=1e-9)
    for k, c in enumerate(cfg.classes):
        m = wl.priority[r.req_id.to_numpy()] == k
        assert r.e2e[m].mean() == pytest.approx(st.e2e_s[k], rel=0.15)
        assert r.ttft[m].mean() <= c.ttft_s  # SLO met on average
        assert r.ttft[m].mean() == pytest.approx(st.ttft_s[k], rel=0.5)  # crude stage-delay model


def test_too_few_gpus_is_reported(small):
    data = small(pools=[H100], classes=[{"name": "c", "rate": 200.0, "prefill_tokens": [1000, 1000],
                                         "decode_tokens": [100, 100], "ttft_s": 2.0, "tpot_s": 0.1}],
                 disagg={"pool": "h100", "gpus": 2})
    split = choose_split(lp_config_from_dict(data))
    assert split.status == "infeasible" and "too few" in split.reason
