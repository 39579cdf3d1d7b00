"""Roofline batch-time predictions from presets, and the roofline plot."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fluidserve import specs
from fluidserve.batch_time import BatchTimeModel
from fluidserve.calibration.roofline import (
    Efficiency, plot_roofline, predict, predict_batch_time, step_flops_and_bytes, streamed_weight_bytes,
    write_preset,
)
from fluidserve.errors import InputError

REAL_PROFILE = Path(__file__).resolve().parents[2] / "calibration" / "data" / "h100_llama31_8b_profile.csv"


def test_llama31_8b_on_h100_d0_in_expected_range():
    bt = predict_batch_time("H100-SXM", "Llama-3.1-8B")
    assert isinstance(bt, BatchTimeModel)
    # 16 GB of weights / 3.35 TB/s = 4.8 ms at peak; derated and with overheads < 8 ms
    assert 4e-3 < bt.d0_s < 8e-3
    eff = Efficiency()
    weights = (specs.param_count("Llama-3.1-8B") - 128256 * 4096) * 2
    assert streamed_weight_bytes("Llama-3.1-8B") == weights
    expected_d0 = weights / (3.35e12 * eff.memory) + eff.step_overhead_s + 32 * eff.layer_overhead_s
    assert bt.d0_s == pytest.approx(expected_d0, rel=1e-12)
    assert bt.d2_kv_s == pytest.approx(131072 / (3.35e12 * eff.memory), rel=1e-12)
    stack = 32 * specs.layer_params("Llama-3.1-8B")
    assert bt.d1_prefill_s == pytest.approx(2 * stack / (989.4e12 * eff.compute), rel=1e-12)
    assert 0 < bt.d1_decode_s < bt.d1_prefill_s


def test_efficiency_scales_the_terms():
    base = predict_batch_time("A100-80GB", "Mistral-7B")
    slow = predict_batch_time("A100-80GB", "Mistral-7B", efficiency=Efficiency(memory=0.4, compute=0.3))
    assert slow.d2_kv_s == pytest.approx(2 * base.d2_kv_s)
    assert slow.d1_prefill_s == pytest.approx(2 * base.d1_prefill_s)
    with pytest.raises(InputError, match="efficiency.memory"):
        Efficiency(memory=1.5)


def test_tensor_parallel_splits_work_and_adds_all_reduce():
    eff = Efficiency()
    one = predict("H100", "Llama-3.1-70B", 1)
    four = predict("H100", "Llama-3.1-70B", 4)
    assert four.streamed_weight_bytes_per_gpu == pytest.approx(one.streamed_weight_bytes_per_gpu / 4)
    # all-reduce: 2 per layer, ring moves 2(tp-1)/tp of hidden * 2 bytes per token over 0.8 * 450 GB/s
    ar = 2 * 80 * 1.5 * 8192 * 2 / (450e9 * eff.interconnect)
    assert four.all_reduce_per_token_s == pytest.approx(ar)
    assert four.batch_time.d1_prefill_s == pytest.approx(one.batch_time.d1_prefill_s / 4 + ar)
    assert four.batch_time.d0_s == pytest.approx(
        one.batch_time.d0_s - 0.75 * one.streamed_weight_bytes_per_gpu / (3.35e12 * eff.memory)
        + 2 * 80 * eff.all_reduce_latency_s
    )
    assert four.batch_time.d2_kv_s == pytest.approx(one.batch_time.d2_kv_s / 4)
    assert four.m_total_tokens is not None and one.m_total_tokens is None  # 141 GB of weights on one 80 GB GPU
    # PCIe GPUs pay far more for the same all-reduce
    assert predict("L40S", "Llama-3.1-8B", 2).all_reduce_per_token_s > 10 * predict("H100", "Llama-3.1-8B", 2).all_reduce_per_token_s


def test_faster_memory_gives_smaller_decode_cost():
    h100 = predict_batch_time("H100", "Qwen3-8B")
    h200 = predict_batch_time("H200", "Qwen3-8B")
    assert h200.d0_s < h100.d0_s and h200.d2_kv_s == pytest.approx(h100.d2_kv_s * 3.35 / 4.8)
    assert h200.d1_prefill_s == pytest.approx(h100.d1_prefill_s)


def test_step_flops_and_bytes():
    m = specs.model("Llama-3.1-8B")
    flops, nbytes = step_flops_and_bytes(m, 0, 1, 0)
    assert flops == pytest.approx(2 * (32 * specs.layer_params(m) + specs.lm_head_params(m)))
    assert flops / nbytes == pytest.approx(1.0, rel=0.01)  # batch-1 decode: ~1 FLOP per weight byte
    flops, _ = step_flops_and_bytes(m, [4096], [0], [0], [1])
    attn = 2 * 32 * 32 * 128 * 4096 * 4097
    assert flops[0] == pytest.approx(2 * 32 * specs.layer_params(m) * 4096 + 2 * specs.lm_head_params(m) + attn)


def test_write_roofline_preset(tmp_path):
    pred = predict("H100", "Llama-3.1-8B")
    path = write_preset(pred, tmp_path / "roofline.yaml")
    assert BatchTimeModel.from_yaml(path) == pred.batch_time


def test_roofline_plot_with_measured_points():
    profile = pd.DataFrame({
        "phase": ["decode", "decode", "prefill"], "batch_size": [1, 64, 1], "prefill_tokens": [0, 0, 2048],
        "decode_tokens": [1, 64, 0], "kv_tokens": [128, 65536, 0], "time_ms": [6.7, 10.5, 57.7],
    })
    fig = plot_roofline("H100", "Llama-3.1-8B", profile)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.collections) == 2  # decode and prefill points
    offsets = np.vstack([c.get_offsets() for c in ax.collections])
    assert np.all(offsets[:, 1] <= 989.4e12)
    import matplotlib.pyplot as plt

    plt.close(fig)
    with pytest.raises(InputError, match="needs a model"):
        plot_roofline("H100", None, profile)


@pytest.mark.skipif(not REAL_PROFILE.is_file(), reason="H100 profile not present")
def test_roofline_close_to_measured_h100():
    from fluidserve.calibration.fit import fit_batch_time, read_profile, select_phase

    fitted = fit_batch_time(select_phase(read_profile(REAL_PROFILE), "decode")).model
    pred = predict_batch_time("H100", "Llama-3.1-8B")
    assert pred.d0_s == pytest.approx(fitted.d0_s, rel=0.15)
    assert pred.d2_kv_s == pytest.approx(fitted.d2_kv_s, rel=0.25)
    assert pred.d1_decode_s == pytest.approx(fitted.d1_decode_s, rel=0.5)
