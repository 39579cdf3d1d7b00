"""Output-length predictors for length-aware scheduling and routing.

One fit/predict contract (scikit-learn style) for every predictor:

* ``fit(frame, output_tokens)`` learns from a request table (``prefill_tokens``, optional
  ``app`` / ``class`` / ``prompt`` columns) and the observed output lengths (tokens);
* ``predict(frame)`` returns the predicted output tokens (the median, tokens >= 1);
* ``predict_quantiles(frame, qs)`` the predicted quantiles, one column per ``q``;
* ``save(path)`` / :func:`load` persist it (joblib).

Predictors: ``linear`` (least squares on log lengths, quantiles from the residuals), ``gbt``
(scikit-learn's histogram gradient boosting with a quantile loss per quantile), and ``text``
(a Hugging Face encoder such as DistilBERT, loaded from a local directory with ``transformers``,
mean-pooled embeddings and a ridge head; optional extra ``predict-text``). See
:mod:`fluidserve.predict.evaluate` for MAE, Spearman rank correlation and quantile calibration.
"""

from fluidserve.predict.predictors import PREDICTORS, LengthPredictor, load, make_predictor

__all__ = ["PREDICTORS", "LengthPredictor", "load", "make_predictor"]
