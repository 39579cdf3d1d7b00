"""GPU / model presets: datasheet values, parameter counts, KV bytes and KV capacity."""

import pytest

from fluidserve import specs
from fluidserve.config import config_from_dict
from fluidserve.errors import InputError

REQUIRED_GPUS = ["V100", "T4", "A10", "A100-40GB", "A100-80GB", "A6000", "A40", "L40", "L40S",
                 "RTX 3090", "RTX 4080", "RTX 4090", "H100 SXM", "H200"]
REQUIRED_MODELS = ["Qwen3-8B", "Llama-3.1-8B", "OPT-6.7B", "Mistral-7B", "Llama-3.1-70B"]


@pytest.mark.parametrize("name", REQUIRED_GPUS)
def test_every_required_gpu_has_sane_numbers(name):
    g = specs.gpu(name)
    assert 50e12 <= g.peak_flops <= 1000e12
    assert 300e9 <= g.mem_bandwidth_Bps <= 5e12
    assert 16 * 2**30 <= g.memory_bytes <= 141 * 2**30
    assert 70 <= g.tdp_w <= 700
    assert g.source and ("datasheet" in g.source or "whitepaper" in g.source)
    assert g.interconnect_Bps > 0


def test_h100_sxm_datasheet_values():
    g = specs.gpu("h100-sxm")
    assert g.peak_flops == pytest.approx(989.4e12)
    assert g.mem_bandwidth_Bps == pytest.approx(3.35e12)
    assert g.memory_bytes == 80 * 2**30
    assert g.tdp_w == 700
    assert g.max_sm_clock_mhz == 1980
    assert g.ridge_flops_per_byte == pytest.approx(295.3, abs=0.1)
    # nvidia-smi's product name resolves too (profile CSVs record it)
    assert specs.gpu("NVIDIA H100 80GB HBM3") is g
    assert specs.gpu("H100_SXM") is g


def test_dense_not_sparse_flops():
    assert specs.gpu("A100-80GB").peak_flops == pytest.approx(312e12)
    assert specs.gpu("L40S").peak_flops == pytest.approx(362.05e12)
    assert specs.gpu("RTX 4090").peak_flops == pytest.approx(165.2e12)  # FP32 accumulate
    assert specs.gpu("H200").mem_bandwidth_Bps == pytest.approx(4.8e12)


@pytest.mark.parametrize("name", REQUIRED_MODELS + ["Mistral-7B-v0.1", "OPT-13B"])
def test_param_count_matches_published(name):
    m = specs.model(name)
    assert specs.param_count(m) == pytest.approx(m.params, rel=0.015)
    assert m.source.startswith("https://huggingface.co/") and m.source.endswith("config.json")


def test_exact_param_counts():
    assert specs.param_count("Llama-3.1-8B") == 8_030_261_248
    assert specs.param_count("Llama-3.1-70B") == 70_553_706_496
    assert specs.param_count("OPT-6.7B") == 6_658_473_984
    assert specs.param_count("Qwen3-8B") == 8_190_735_360
    assert specs.weight_bytes("Llama-3.1-8B") == 2 * 8_030_261_248
    assert specs.weight_bytes("Llama-3.1-8B", dtype_bytes=1) == 8_030_261_248


def test_llama31_8b_shape_and_kv_bytes():
    m = specs.model("meta-llama/llama-3.1-8b")
    assert (m.layers, m.kv_heads, m.heads, m.head_dim, m.hidden) == (32, 8, 32, 128, 4096)
    assert specs.kv_bytes_per_token(m) == 131072
    assert specs.kv_bytes_per_token("OPT-6.7B") == 2 * 32 * 32 * 128 * 2
    assert specs.kv_bytes_per_token("Llama-3.1-70B") == 2 * 80 * 8 * 128 * 2
    # tensor parallel: a GPU holds its KV heads only; replicated once tp > kv_heads
    assert specs.kv_bytes_per_token(m, tensor_parallel=2) == 65536
    assert specs.kv_bytes_per_token("Llama-3.1-70B", tensor_parallel=16) == 2 * 80 * 1 * 128 * 2


def test_unknown_names_list_the_known_ones():
    with pytest.raises(InputError, match="unknown GPU preset 'B300'.*H100-SXM"):
        specs.gpu("B300")
    with pytest.raises(InputError, match="unknown model preset 'gpt-5'.*Llama-3.1-8B"):
        specs.model("gpt-5")


def test_derive_m_total_by_hand():
    # 0.9 * 80 GiB - 16.06 GB weights - 3% of 80 GiB reserve, over 128 KiB per token
    mem = 80 * 2**30
    budget = 0.9 * mem - 2 * 8_030_261_248 - 0.03 * mem
    expected = int(budget // 131072)
    got = specs.derive_m_total("H100 SXM", "Llama-3.1-8B", 0.9)
    assert got == expected == 447_631
    # by hand: 72 GiB usable - 14.96 GiB weights - 2.4 GiB reserve = 54.6 GiB / 128 KiB = 447k tokens
    assert 440_000 < got < 455_000
    # more memory for the KV cache -> more tokens; tp=2 halves weights per GPU and KV per token
    assert specs.derive_m_total("H100 SXM", "Llama-3.1-8B", 0.95) > got
    tp2 = specs.derive_m_total("H100 SXM", "Llama-3.1-8B", 0.9, tensor_parallel=2)
    assert tp2 == int((0.9 * mem - 2 * 8_030_261_248 / 2 - 0.03 * mem) // 65536)


def test_derive_m_total_errors():
    with pytest.raises(InputError, match="does not fit on T4"):
        specs.derive_m_total("T4", "Llama-3.1-70B")
    with pytest.raises(InputError, match="does not divide"):
        specs.derive_m_total("H100", "Llama-3.1-8B", tensor_parallel=3)
    with pytest.raises(InputError, match="gpu_memory_utilization"):
        specs.derive_m_total("H100", "Llama-3.1-8B", 1.5)


def test_config_derives_m_total_from_presets():
    cfg = config_from_dict({
        "system": {"gpu": "H100-SXM", "model": "Llama-3.1-8B"},
        "batch_time": {"d0_s": 0.007, "d1_s": 2e-5},
    })
    assert cfg.system.M_total == 447_631
    assert cfg.system.kv_bytes_per_token == 131072


def test_torch_backend_reads_model_spec():
    pytest.importorskip("fluidserve.calibration.torch_backend")
    from fluidserve.calibration.torch_backend import DecoderShape

    shape = DecoderShape.from_spec(specs.model("Qwen3-8B"))
    assert (shape.layers, shape.kv_heads, shape.head_dim, shape.intermediate) == (36, 8, 128, 12288)
