"""Plan YAML validation: errors name the field, the shipped examples load."""

from __future__ import annotations

from pathlib import Path

import pytest

from fluidserve.errors import InputError
from fluidserve.plan.config import load_plan_config, plan_config_from_dict

from .conftest import CHAT, plan_dict

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("name", ["plan_azure_h100.yaml", "plan_hetero.yaml"])
def test_shipped_examples_load(name):
    plan = load_plan_config(CONFIG / name)
    assert plan.traffic.classes and plan.candidates.gpus


def test_slo_thresholds_parsed():
    cls = dict(CHAT, slo={"ttft_p99_s": 1.0, "tpot_p99.9_s": 0.05, "e2e_p90_s": 20, "attainment": 0.95})
    plan = plan_config_from_dict(plan_dict(classes=[cls]))
    slo = plan.traffic.classes[0].slo
    assert slo.thresholds == [("ttft", 99.0, 1.0), ("tpot", 99.9, 0.05), ("e2e", 90.0, 20.0)]
    assert slo.attainment == 0.95


@pytest.mark.parametrize("slo, needle", [
    ({"ttft_p99": 1.0}, "unknown SLO key 'ttft_p99'"),
    ({"ttft_p99_s": -1}, "ttft_p99_s"),
    ({"attainment": 0.9}, "at least one threshold"),
    ({"latency_p99_s": 1.0}, "unknown SLO key"),
])
def test_bad_slo_names_the_field(slo, needle):
    with pytest.raises(InputError) as exc:
        plan_config_from_dict(plan_dict(classes=[dict(CHAT, slo=slo)]), "p.yaml")
    msg = str(exc.value)
    assert msg.startswith("p.yaml: traffic.classes.0.slo") and needle in msg


def test_class_needs_trace_or_synthetic_fields():
    bad = {k: v for k, v in CHAT.items() if k != "rate"}
    with pytest.raises(InputError, match="give a trace, or all of rate"):
        plan_config_from_dict(plan_dict(classes=[bad]))


def test_unknown_gpu_and_model():
    with pytest.raises(InputError, match="unknown GPU preset 'B300'"):
        plan_config_from_dict(plan_dict(gpus=[{"type": "B300", "cost_per_hour": 1, "count": 1}]))
    with pytest.raises(InputError, match="unknown model preset"):
        plan_config_from_dict(plan_dict(candidates={"model": "gpt-9"}))


def test_clock_above_f_max_names_the_field(make_plan):
    from fluidserve.plan.space import replica_types

    gpu = {"type": "H100-SXM", "cost_per_hour": 4.0, "count": 2, "clocks_mhz": [1980, 2500]}
    with pytest.raises(InputError, match=r"candidates.gpus.0\(H100-SXM\).clocks_mhz: 2500 MHz"):
        replica_types(make_plan(gpus=[gpu], candidates={"model": "Llama-3.1-8B", "gpus": [gpu]}))


def test_scheduler_candidates(make_plan):
    from fluidserve.plan.space import replica_types

    plan = make_plan(candidates={"model": "Llama-3.1-8B", "scheduler": {
        "max_num_batched_tokens": [2048], "scheduler": ["vllm_v1", "vllm_v0"], "enable_prefix_caching": [True, False]}})
    types, skipped = replica_types(plan)
    # 2 x 2 combinations less prefix caching under vllm_v0 (vLLM V0 here has none)
    assert sorted((t.scheduler, t.enable_prefix_caching) for t in types) == [
        ("vllm_v0", False), ("vllm_v1", False), ("vllm_v1", True)]
    assert any("prefix caching needs the vllm_v1 scheduler" in s for s in skipped)
    for t in types:
        cfg = t.run_config(2, plan)
        assert (cfg.system.scheduler, cfg.system.enable_prefix_caching) == (t.scheduler, t.enable_prefix_caching)
    with pytest.raises(InputError, match=r"unknown \['vllm_v2'\]"):
        make_plan(candidates={"model": "Llama-3.1-8B", "scheduler": {"scheduler": ["vllm_v2"]}})
