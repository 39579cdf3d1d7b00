"""Config validation: errors name the file and the dotted field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fluidserve.batch_time import BatchTimeModel
from fluidserve.config import load_config
from fluidserve.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def base() -> dict:
    return yaml.safe_load((ROOT / "config" / "default.yaml").read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_shipped_configs_load(name):
    if name.startswith(("sweep", "lp_", "plan_")):
        pytest.skip("not a run config")
    if name.startswith("plan_"):  # planner configs have their own schema
        from fluidserve.plan.config import load_plan_config

        plan = load_plan_config(ROOT / "config" / name)
        assert plan.traffic and plan.candidates
        return
    cfg = load_config(ROOT / "config" / name)
    assert cfg.system.M_total > 0
    assert isinstance(cfg.batch_time_model(), BatchTimeModel)


def test_default_values():
    cfg = load_config(ROOT / "config" / "default.yaml")
    bt = cfg.batch_time_model()
    assert bt.d0_s == pytest.approx(0.0068)
    assert cfg.system.scheduler == "vllm_v1" and cfg.system.enable_prefix_caching and cfg.system.chunked_prefill
    assert cfg.system.total_blocks == 32000 // 16 - 1  # vLLM's null block
    assert cfg.workload.arrival_rate == 200.0


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"system": {"M_totl": 5}}, "system.M_totl: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"system": {"M_total": "lots"}}, "system.M_total"),
        ({"system": {"M_total": -5}}, "system.M_total: Input should be greater than 0"),
        ({"workload": {"arrival_rate": -1.0}}, "workload.arrival_rate: Input should be greater than 0"),
        ({"system": {"mode": "swap"}}, "system.mode"),
        ({"policy": {"victim_policy": "oldest"}}, "policy.victim_policy"),
        ({"cluster": {"replicas": 2, "router": "weighted", "weights": [1.0]}}, "cluster.weights has 1 entries"),
        ({"batch_time": {"d0_s": 0.01, "d1_s": 1e-5, "d1_decode_s": 1e-5}}, "cannot be combined"),
    ],
)
def test_bad_fields_are_named(tmp_path, patch, message):
    data = base()
    for section, values in patch.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    with pytest.raises(InputError) as exc:
        load_config(write(tmp_path, data))
    text = str(exc.value)
    assert message in text
    assert "cfg.yaml" in text
    assert "\n" not in text


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(InputError, match="empty"):
        load_config(tmp_path / "empty.yaml")
    (tmp_path / "bad.yaml").write_text("system: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_overrides_by_dotted_path():
    cfg = load_config(ROOT / "config" / "default.yaml", {"system.M_total": 999, "workload.num_requests": 10})
    assert cfg.system.M_total == 999
    assert cfg.workload.num_requests == 10


def test_two_parameter_shortcut_and_preset(tmp_path):
    data = base()
    data["batch_time"] = {"d0_s": 0.01, "d1_s": 2e-5}
    bt = load_config(write(tmp_path, data)).batch_time_model()
    assert bt == BatchTimeModel(0.01, 2e-5, 2e-5, 0.0)
    (tmp_path / "preset.yaml").write_text(
        yaml.safe_dump({"d0_s": 0.007, "d1_prefill_s": 4e-5, "d1_decode_s": 3e-5, "d2_kv_s": 4e-8})
    )
    data["batch_time"] = {"preset": "preset.yaml", "d0_s": 0.008}
    bt = load_config(write(tmp_path, data)).batch_time_model()
    assert bt == BatchTimeModel(0.008, 4e-5, 3e-5, 4e-8)  # explicit d0 overrides the preset's
    data["batch_time"] = {"preset": "missing.yaml"}
    with pytest.raises(InputError, match="preset file not found"):
        load_config(write(tmp_path, data)).batch_time_model()


def test_batch_time_model_formula():
    bt = BatchTimeModel(0.005, 1e-4, 2e-4, 1e-6)
    assert bt.step_time(100, 10, 1000) == pytest.approx(0.005 + 0.01 + 0.002 + 0.001)
    # work of one request: prefill once, D decode iterations with context P..P+D-1
    P, D = 50, 4
    direct = 1e-4 * P + sum(2e-4 + 1e-6 * (P + j) for j in range(D))
    assert bt.work_per_request(P, D) == pytest.approx(direct)
    with pytest.raises(InputError, match="d0_s"):
        BatchTimeModel(0.0, 1e-4, 1e-4)
    with pytest.raises(InputError, match="d2_kv_s"):
        BatchTimeModel(0.01, 1e-4, 1e-4, -1.0)
