"""Output-length predictors: recover known generating processes, calibrated quantiles, save/load, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fluidserve.errors import InputError
from fluidserve.predict import load, make_predictor
from fluidserve.predict.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[2]
SIGMA = 0.3
Z90 = 1.2815515655446004  # standard normal 0.9 quantile


def _lognormal_requests(n, seed):
    """Output = 3 * sqrt(prompt) * exp(N(0, 0.3^2)): median 3 sqrt(p), q0.9 = median * exp(0.3 z_0.9)."""
    rng = np.random.default_rng(seed)
    p = rng.integers(100, 4000, n)
    y = np.maximum(1, np.round(3 * np.sqrt(p) * np.exp(rng.normal(0, SIGMA, n))))
    return pd.DataFrame({"prefill_tokens": p}), y


@pytest.mark.parametrize("name", ["linear", "gbt"])
def test_recovers_known_median_and_quantile(name):
    frame, y = _lognormal_requests(3000, 1)
    pred = make_predictor(name, **({"max_iter": 100} if name == "gbt" else {})).fit(frame, y)
    grid = pd.DataFrame({"prefill_tokens": [400, 1600, 2800]})  # inside the training range (100..4000)
    median_true = 3 * np.sqrt(grid["prefill_tokens"].to_numpy(float))
    q = pred.predict_quantiles(grid, [0.5, 0.9])
    assert q[:, 0] == pytest.approx(median_true, rel=0.08 if name == "linear" else 0.10)
    # a quantile-loss tree ensemble is pointwise noisier than the two-parameter linear fit
    assert q[:, 1] == pytest.approx(median_true * np.exp(SIGMA * Z90), rel=0.10 if name == "linear" else 0.15)
    # calibration on fresh requests: each quantile covers about its share
    test, yt = _lognormal_requests(2000, 2)
    m = evaluate(pred, test, yt)
    for qq in ("0.1", "0.5", "0.9"):
        assert abs(m["coverage"][qq] - float(qq)) < 0.05
    assert m["mae_tokens"] < m["mae_baseline_tokens"]
    assert m["spearman"] > 0.6


def test_category_feature_separates_applications():
    rng = np.random.default_rng(3)
    n = 800
    app = rng.choice(["chat", "code"], n)
    y = np.where(app == "chat", 300, 30) * np.exp(rng.normal(0, 0.1, n))
    frame = pd.DataFrame({"prefill_tokens": rng.integers(50, 500, n), "app": app})
    for name, kw in (("linear", {}), ("gbt", {"max_iter": 40})):
        pred = make_predictor(name, **kw).fit(frame, y)
        out = pred.predict(pd.DataFrame({"prefill_tokens": [200, 200], "app": ["chat", "code"]}))
        assert out == pytest.approx([300, 30], rel=0.08)
        # an application never seen in training still gets a prediction, not an error
        assert np.isfinite(pred.predict(pd.DataFrame({"prefill_tokens": [200], "app": ["new"]}))).all()


def test_save_load_roundtrip_and_errors(tmp_path):
    frame, y = _lognormal_requests(500, 4)
    pred = make_predictor("linear").fit(frame, y)
    path = pred.save(tmp_path / "m.joblib")
    again = load(path)
    assert np.array_equal(again.predict(frame), pred.predict(frame))
    with pytest.raises(InputError, match="not fitted"):
        make_predictor("gbt").predict(frame)
    with pytest.raises(InputError, match="prefill_tokens"):
        pred.predict(pd.DataFrame({"x": [1]}))
    with pytest.raises(InputError, match=">= 1 token"):
        make_predictor("linear").fit(frame, np.zeros(len(frame)))
    (tmp_path / "junk.joblib").write_text("not a model")
    with pytest.raises(InputError, match="not a saved fluidserve predictor"):
        load(tmp_path / "junk.joblib")
    with pytest.raises(InputError, match="unknown predictor"):
        make_predictor("bert")


def _tiny_encoder(tmp_path: Path) -> Path:
    """A randomly initialised DistilBERT with a word-level tokenizer, saved locally (no download)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "please", "write", "a", "short", "long", "answer",
             "essay", "word", "story", "about", "cats", "dogs", "the", "sea"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    cfg = transformers.DistilBertConfig(vocab_size=len(words), dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                                        max_position_embeddings=64)
    import torch

    torch.manual_seed(0)
    model = transformers.DistilBertModel(cfg)
    out = tmp_path / "tiny-distilbert"
    model.save_pretrained(out)
    fast.save_pretrained(out)
    return out


def test_text_predictor_learns_from_words(tmp_path):
    model_dir = _tiny_encoder(tmp_path)
    rng = np.random.default_rng(5)
    topics = ["cats", "dogs", "the sea"]
    rows = []
    for i in range(160):
        kind = ["short", "long"][i % 2]
        text = f"please write a {kind} {rng.choice(['answer', 'essay', 'story'])} about {rng.choice(topics)}"
        rows.append((text, 20 if kind == "short" else 400))
    frame = pd.DataFrame({"prompt": [r[0] for r in rows], "prefill_tokens": [len(r[0].split()) for r in rows]})
    y = np.array([r[1] for r in rows], float) * np.exp(rng.normal(0, 0.05, len(rows)))
    pred = make_predictor("text", model_dir=model_dir).fit(frame.iloc[:120], y[:120])
    test = frame.iloc[120:].reset_index(drop=True)
    m = evaluate(pred, test, y[120:])
    assert m["spearman"] > 0.8
    assert m["mae_tokens"] < 0.3 * m["mae_baseline_tokens"]
    path = pred.save(tmp_path / "text.joblib")
    assert np.allclose(load(path).predict(test), pred.predict(test))
    with pytest.raises(InputError, match="prompt"):
        pred.predict(pd.DataFrame({"prefill_tokens": [3]}))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "fluidserve", "predict", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_cli_fit_eval_and_bad_input(tmp_path):
    frame, y = _lognormal_requests(600, 6)
    trace = tmp_path / "t.csv"
    pd.DataFrame({"arrival_time": np.arange(len(y)) * 0.1, "prefill_length": frame["prefill_tokens"],
                  "decode_length": y.astype(int)}).to_csv(trace, index=False)
    proc = _run("fit", "--trace", str(trace), "--predictor", "linear", "--output-dir", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["train_requests"] == 420 and out["test"]["requests"] == 180
    assert (tmp_path / "metrics.json").exists()
    proc = _run("eval", "--model", out["model"], "--trace", str(trace), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout)["test"]["requests"] == 180
    bad = _run("fit", "--trace", str(trace), "--train-frac", "1.5")
    assert bad.returncode == 2 and "--train-frac" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    bad = _run("fit", "--trace", str(trace), "--predictor", "text")
    assert bad.returncode == 2 and "--text-model" in bad.stderr
