"""All-reduce fit and TP overhead table, on hand-computed numbers."""

import pandas as pd
import pytest

from fluidserve.calibration.tp_fit import fit_allreduce, tp_overhead
from fluidserve.errors import InputError


def test_fit_recovers_hand_computed_latency_and_bandwidth():
    # TP=2: ring factor 2*(2-1)/2 = 1. 8 us + bytes / 200 GB/s: 1 MB -> 13 us, 4 MB -> 28 us, 16 MB -> 88 us.
    sweep = pd.DataFrame({"tensor_parallel": 2, "bytes": [1e6, 4e6, 16e6], "time_us": [13.0, 28.0, 88.0]})
    fit = fit_allreduce(sweep, datasheet_Bps=450e9)
    assert fit.all_reduce_latency_s == pytest.approx(8e-6, rel=1e-9)
    assert fit.bandwidth_Bps == pytest.approx(200e9, rel=1e-9)
    assert fit.interconnect_efficiency == pytest.approx(200 / 450, rel=1e-9)
    assert fit.mape_pct < 1e-6
    # TP=4: ring factor 1.5, so the same times mean 1.5x the link bandwidth
    fit4 = fit_allreduce(sweep.assign(tensor_parallel=4))
    assert fit4.bandwidth_Bps == pytest.approx(300e9, rel=1e-9)


def test_fit_refuses_what_it_cannot_fit():
    with pytest.raises(InputError, match="tensor_parallel=1"):
        fit_allreduce(pd.DataFrame({"tensor_parallel": 1, "bytes": [1, 2], "time_us": [1, 2]}))
    with pytest.raises(InputError, match="two message sizes"):
        fit_allreduce(pd.DataFrame({"tensor_parallel": 2, "bytes": [5, 5], "time_us": [1, 2]}))
    with pytest.raises(InputError, match="bytes"):
        fit_allreduce(pd.DataFrame({"tensor_parallel": [2], "time_us": [1]}))


def test_tp_overhead_table():
    key = dict(phase=["decode", "decode"], prefill_tokens=[0, 0], decode_tokens=[1, 64], kv_tokens=[512, 65536])
    tp1 = pd.DataFrame({**key, "time_ms": [10.0, 20.0]})
    tp2 = pd.DataFrame({**key, "time_ms": [6.0, 11.0], "tensor_parallel": 2})
    out = tp_overhead(tp1, tp2)
    assert list(out["ideal_ms"]) == [5.0, 10.0]
    assert list(out["overhead_ms"]) == pytest.approx([1.0, 1.0])
    assert list(out["speedup"]) == pytest.approx([10 / 6, 20 / 11])


def test_fit_tp_cli(tmp_path, capsys):
    import json

    from fluidserve.__main__ import main

    f = tmp_path / "ar.csv"
    pd.DataFrame({"tensor_parallel": 2, "bytes": [1e6, 4e6, 16e6], "time_us": [13.0, 28.0, 88.0]}).to_csv(f, index=False)
    assert main(["calibrate", "fit-tp", "--allreduce", str(f), "--gpu", "H200", "--json", "--output-dir", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["allreduce"][0]["all_reduce_latency_s"] == pytest.approx(8e-6)
    assert (tmp_path / "tp_fit.json").exists()
    assert main(["calibrate", "fit-tp", "--allreduce", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
