"""How good a length predictor is: MAE, Spearman rank correlation, quantile calibration.

* ``mae_tokens``: mean absolute error of the predicted median, tokens;
* ``spearman``: rank correlation of predicted and true lengths (what a shortest-first scheduler
  needs: the order, not the values);
* ``coverage``: for each predicted quantile q, the fraction of requests whose true length is at
  or below it (calibrated: close to q); ``pinball`` the mean quantile loss per q, tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from fluidserve.predict.predictors import LengthPredictor


def evaluate(predictor: LengthPredictor, frame: pd.DataFrame, output_tokens, qs=(0.1, 0.5, 0.9)) -> dict:
    y = np.asarray(output_tokens, dtype=float)
    qs = [q for q in qs if q in predictor.quantiles or predictor.name != "gbt"]
    pq = predictor.predict_quantiles(frame, qs)
    median = predictor.predict(frame)
    rho = stats.spearmanr(median, y).statistic if len(y) > 2 and np.ptp(median) > 0 else float("nan")
    out = {
        "predictor": predictor.name,
        "requests": int(len(y)),
        "mae_tokens": float(np.mean(np.abs(median - y))),
        # the constant predictor: the training set's median length for every request
        "mae_baseline_tokens": float(np.mean(np.abs(predictor.train_median_tokens_ - y))),
        "spearman": float(rho),
        "coverage": {},
        "pinball": {},
    }
    for j, q in enumerate(qs):
        err = y - pq[:, j]
        out["coverage"][str(q)] = float(np.mean(y <= pq[:, j]))
        out["pinball"][str(q)] = float(np.mean(np.maximum(q * err, (q - 1) * err)))
    return out
