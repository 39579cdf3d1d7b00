"""A heterogeneous plan costs no more than the best single-GPU-type plan, both verified in the simulator."""

from __future__ import annotations

from fluidserve.plan.search import run_search
from fluidserve.plan.store import ResultStore
from fluidserve.plan.traffic import build_traffic

FAST = {"type": "H100-SXM", "cost_per_hour": 4.0, "count": 4,
        "batch_time": {"d0_s": 0.007, "d1_prefill_s": 2.5e-5, "d1_decode_s": 1.2e-5, "d2_kv_s": 5e-8}}
CHEAP = {"type": "L40S", "cost_per_hour": 1.0, "count": 6, "power": {"f_max_mhz": 2520, "idle_w": 36, "peak_w": 350},
         "batch_time": {"d0_s": 0.023, "d1_prefill_s": 6.4e-5, "d1_decode_s": 3.5e-5, "d2_kv_s": 1.9e-7}}
CHAT = {"name": "chat", "rate": 30.0, "prefill_tokens": [100, 800], "decode_tokens": [50, 200],
        "slo": {"ttft_p99_s": 0.3, "tpot_p99_s": 0.03}}
BATCH = {"name": "batch", "rate": 6.0, "prefill_tokens": [2000, 4000], "decode_tokens": [50, 150],
         "slo": {"e2e_p99_s": 40.0}}


def test_mix_no_costlier_than_best_single_type(make_plan):
    plan = make_plan(gpus=[FAST, CHEAP], classes=[CHAT, BATCH],
                     traffic={"duration_s": 40.0, "warmup_s": 5.0},
                     candidates={"model": "Llama-3.1-8B", "gpus": [FAST, CHEAP],
                                 "scheduler": {"max_num_batched_tokens": [4096]}},
                     search={"verify_top": 2, "heterogeneous": True})
    out = run_search(plan, build_traffic(plan), ResultStore(None, "t"), progress=False)
    assert out.hetero["status"] == "ok", out.hetero
    mix = out.hetero["recommended"]
    assert mix["meets_slo"]  # measured on the union of the groups' requests
    single = [r for r in out.single_type_best.values() if r["meets_slo"]]
    assert single, "no verified single-type plan"
    best_single = min(r["cost_per_hour"] for r in single)
    # the heterogeneous search's answer (the LP mix or a single type, whichever verified cheaper)
    assert out.recommended["cost_per_hour"] <= best_single + 1e-9
    # on this example the LP mix itself is the cheaper plan, and a real mix of both GPU types
    print(mix["key"], mix["cost_per_hour"], {g: r["cost_per_hour"] for g, r in out.single_type_best.items()})
    assert mix["cost_per_hour"] < best_single
    assert len({g["gpu_type"] for g in mix["groups"]}) == 2
