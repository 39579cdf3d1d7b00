"""Models from Hugging Face config.json files: parameter counts against the published numbers."""

import json

import pytest

from fluidserve import specs
from fluidserve.config import config_from_dict
from fluidserve.errors import InputError

# Abridged copies of the published config.json files (the keys fluidserve reads).
CONFIGS = {
    "Llama-2-7b-hf": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
                      "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
                      "vocab_size": 32000, "max_position_embeddings": 4096, "tie_word_embeddings": False,
                      "torch_dtype": "float16"},
    "Llama-3.1-8B": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                     "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
                     "vocab_size": 128256, "max_position_embeddings": 131072, "tie_word_embeddings": False,
                     "rope_theta": 500000.0, "torch_dtype": "bfloat16"},
    "Mistral-7B-v0.1": {"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
                        "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
                        "vocab_size": 32000, "max_position_embeddings": 32768, "tie_word_embeddings": False,
                        "torch_dtype": "bfloat16"},
    "Qwen2-7B": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
                 "num_attention_heads": 28, "num_hidden_layers": 28, "num_key_value_heads": 4,
                 "vocab_size": 152064, "max_position_embeddings": 131072, "tie_word_embeddings": False,
                 "torch_dtype": "bfloat16"},
    "Mixtral-8x7B-v0.1": {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                          "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
                          "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
                          "max_position_embeddings": 32768, "tie_word_embeddings": False,
                          "torch_dtype": "bfloat16"},
    "CodeLlama-34b-Instruct-hf": {"model_type": "llama", "hidden_size": 8192, "intermediate_size": 22016,
                                  "num_attention_heads": 64, "num_hidden_layers": 48, "num_key_value_heads": 8,
                                  "vocab_size": 32000, "max_position_embeddings": 16384,
                                  "tie_word_embeddings": False, "torch_dtype": "bfloat16"},
    "opt-13b": {"model_type": "opt", "hidden_size": 5120, "ffn_dim": 20480, "num_attention_heads": 40,
                "num_hidden_layers": 40, "vocab_size": 50272, "max_position_embeddings": 2048,
                "word_embed_proj_dim": 5120, "do_layer_norm_before": True, "torch_dtype": "float16"},
    "Qwen3-30B-A3B": {"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
                      "moe_intermediate_size": 768, "num_attention_heads": 32, "num_hidden_layers": 48,
                      "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
                      "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
                      "torch_dtype": "bfloat16"},
}

# Published totals (model cards / safetensors metadata), and active parameters for MoE models.
PUBLISHED = {
    "Llama-2-7b-hf": (6.74e9, None),
    "Llama-3.1-8B": (8.03e9, None),
    "Mistral-7B-v0.1": (7.24e9, None),
    "Qwen2-7B": (7.62e9, None),
    "Mixtral-8x7B-v0.1": (46.7e9, 12.9e9),
    "CodeLlama-34b-Instruct-hf": (33.7e9, None),
    "opt-13b": (12.85e9, None),
    "Qwen3-30B-A3B": (30.5e9, 3.3e9),
}


@pytest.fixture
def models_dir(tmp_path):
    for name, cfg in CONFIGS.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
    return tmp_path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_param_count_from_config_json_matches_published(models_dir, name):
    m = specs.model(str(models_dir / name / "config.json"))
    total, active = PUBLISHED[name]
    assert specs.param_count(m) == pytest.approx(total, rel=0.006)
    if active is not None:
        assert m.is_moe
        assert specs.param_count(m, active_only=True) == pytest.approx(active, rel=0.03)
    else:
        assert specs.param_count(m, active_only=True) == specs.param_count(m)


def test_exact_counts_and_derived_bytes(models_dir):
    llama2 = specs.model("meta-llama/Llama-2-7b-hf", models_dir=models_dir)
    assert specs.param_count(llama2) == 6_738_415_616  # safetensors total on the hub
    assert specs.weight_bytes(llama2) == 2 * 6_738_415_616
    # multi-head attention: 2 (K, V) x 32 layers x 4096 x 2 bytes = 512 KiB per token
    assert specs.kv_bytes_per_token(llama2) == 524288
    mixtral = specs.model(str(models_dir / "Mixtral-8x7B-v0.1"))
    assert specs.param_count(mixtral) == 46_702_792_704
    # GQA with 8 KV heads: 2 x 32 x 8 x 128 x 2 = 128 KiB per token
    assert specs.kv_bytes_per_token(mixtral) == 131072
    code = specs.model("codellama/CodeLlama-34b-Instruct-hf", models_dir=models_dir)
    assert specs.kv_bytes_per_token(code, tensor_parallel=2) == 2 * 48 * 4 * 128 * 2


def test_config_accepts_a_config_json_path(models_dir):
    path = str(models_dir / "Qwen2-7B" / "config.json")
    cfg = config_from_dict({"system": {"gpu": "H100-SXM", "model": path}, "batch_time": {"d0_s": 0.01, "d1_s": 1e-4}})
    # Qwen2-7B: 2 x 28 layers x 4 KV heads x 128 x 2 bytes
    assert cfg.system.kv_bytes_per_token == 57344
    assert cfg.system.M_total == specs.derive_m_total("H100-SXM", path)


def test_bad_config_json_names_the_key(models_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    with pytest.raises(InputError, match="num_attention_heads"):
        specs.model(str(bad))
    bad.write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(InputError, match="mamba"):
        specs.model(str(bad))
    with pytest.raises(InputError, match="not found"):
        specs.model(str(tmp_path / "missing.json"))


def test_moe_roofline_streams_active_experts(models_dir):
    """Mixtral on 2 H100s: one decode token streams the published 12.9B active parameters, a large
    batch all 46.7B (embedding rows aside), at the roofline's bandwidth."""
    from fluidserve.calibration.roofline import Efficiency, predict

    eff = Efficiency(step_overhead_s=0.0, layer_overhead_s=0.0, all_reduce_latency_s=0.0)
    pred = predict("H100-SXM", str(models_dir / "Mixtral-8x7B-v0.1"), 2, eff)
    bt = pred.batch_time
    assert (bt.moe_num_experts, bt.moe_top_k) == (8, 2)
    bw = 3.35e12 * eff.memory
    emb = 32000 * 4096

    def weight_time(tokens):  # the step time without its per-token compute, KV and all-reduce terms
        return bt.step_time(0, tokens) - tokens * bt.d1_decode_s

    assert weight_time(1) == pytest.approx((12.9e9 - emb) * 2 / 2 / bw, rel=0.01)
    assert weight_time(4096) == pytest.approx((46.7e9 - emb) * 2 / 2 / bw, rel=0.01)
    dense = predict("H100-SXM", str(models_dir / "Mistral-7B-v0.1"), 1, eff).batch_time
    assert dense.moe_expert_s == 0 and dense.step_time(0, 64) == pytest.approx(dense.d0_s + 64 * dense.d1_decode_s)
