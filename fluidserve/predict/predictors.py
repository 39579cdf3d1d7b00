"""The predictors behind one fit / predict / predict_quantiles / save contract (see the package doc).

All of them model ``log(output_tokens)``: output lengths are positive and right-skewed, so errors
are closer to constant on the log scale. Predictions are returned in tokens (>= 1).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from fluidserve.errors import InputError, require
from fluidserve.predict.features import category_column, check_frame, check_target, numeric_features

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)


class LengthPredictor(ABC):
    """Base class: the shared contract. Subclasses set ``name`` and implement ``_fit``/``_predict_log``."""

    name = "base"
    needs_text = False

    def __init__(self, quantiles: Sequence[float] = DEFAULT_QUANTILES):
        qs = tuple(float(q) for q in quantiles)
        if not qs or any(not 0 < q < 1 for q in qs):
            raise InputError(f"predictor quantiles must lie in (0, 1), got {list(quantiles)}")
        self.quantiles = tuple(sorted(set(qs) | {0.5}))
        self.is_fitted_ = False

    # -- contract ------------------------------------------------------------------------------

    def fit(self, frame: pd.DataFrame, output_tokens) -> "LengthPredictor":
        require("sklearn", "predict")
        check_frame(frame, self.needs_text)
        y = check_target(output_tokens, len(frame))
        if len(frame) < 10:
            raise InputError(f"{self.name} predictor: need at least 10 training requests, got {len(frame)}")
        self._fit(frame.reset_index(drop=True), np.log(y))
        self.is_fitted_ = True
        self.n_train_ = int(len(frame))
        self.train_median_tokens_ = float(np.median(y))
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted median output tokens (>= 1) per request."""
        return self.predict_quantiles(frame, [0.5])[:, 0]

    def predict_quantiles(self, frame: pd.DataFrame, qs: Sequence[float]) -> np.ndarray:
        """Predicted quantiles of the output length, shape ``(len(frame), len(qs))``, tokens."""
        self._check_fitted()
        check_frame(frame, self.needs_text)
        out = np.column_stack([self._quantile_log(frame.reset_index(drop=True), float(q)) for q in qs])
        return np.maximum(np.exp(out), 1.0)

    def save(self, path: str | Path) -> Path:
        joblib = require("joblib", "predict")

        self._check_fitted()
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path} is a directory; give a file name for the predictor (e.g. model.joblib)")
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path)
        return path

    # -- helpers -------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not getattr(self, "is_fitted_", False):
            raise InputError(f"{self.name} predictor is not fitted: call fit() first")

    @abstractmethod
    def _fit(self, frame: pd.DataFrame, log_y: np.ndarray) -> None:
        """Learn from the training rows and their log output lengths."""

    @abstractmethod
    def _quantile_log(self, frame: pd.DataFrame, q: float) -> np.ndarray:
        """The predicted ``q`` quantile of the log output length, per row."""


class _ResidualQuantiles(LengthPredictor):
    """A mean model on log lengths plus the empirical quantiles of its training residuals."""

    def _set_residuals(self, log_y: np.ndarray, fitted: np.ndarray) -> None:
        self.residuals_ = np.sort(log_y - fitted)

    def _quantile_log(self, frame: pd.DataFrame, q: float) -> np.ndarray:
        return self._mean_log(frame) + float(np.quantile(self.residuals_, q))


def _design(frame: pd.DataFrame, categories: list | None) -> np.ndarray:
    x = numeric_features(frame)
    if categories:
        col = category_column(frame)
        values = frame[col].astype(str).to_numpy() if col else np.array([""] * len(frame))
        onehot = (values[:, None] == np.asarray(categories, dtype=object)[None, :]).astype(float)
        x = np.column_stack([x, onehot])
    return x


class LinearPredictor(_ResidualQuantiles):
    """Least squares on ``[log1p(prompt), prompt, one-hot(app)]`` -> log(output tokens)."""

    name = "linear"

    def _fit(self, frame, log_y):
        from sklearn.linear_model import LinearRegression

        col = category_column(frame)
        self.categories_ = sorted(frame[col].astype(str).unique().tolist()) if col else []
        x = _design(frame, self.categories_)
        self.model_ = LinearRegression().fit(x, log_y)
        self._set_residuals(log_y, self.model_.predict(x))

    def _mean_log(self, frame):
        return self.model_.predict(_design(frame, self.categories_))


class GradientBoostedPredictor(LengthPredictor):
    """scikit-learn ``HistGradientBoostingRegressor`` with a quantile loss, one model per quantile."""

    name = "gbt"

    def __init__(self, quantiles: Sequence[float] = DEFAULT_QUANTILES, max_iter: int = 200, seed: int = 0):
        super().__init__(quantiles)
        self.max_iter, self.seed = int(max_iter), int(seed)

    def _fit(self, frame, log_y):
        from sklearn.ensemble import HistGradientBoostingRegressor

        col = category_column(frame)
        self.categories_ = sorted(frame[col].astype(str).unique().tolist()) if col else []
        x = self._x(frame)
        cat_mask = [False, False] + ([True] if self.categories_ else [])
        self.models_ = {
            q: HistGradientBoostingRegressor(loss="quantile", quantile=q, max_iter=self.max_iter, random_state=self.seed,
                                             categorical_features=cat_mask if any(cat_mask) else None).fit(x, log_y)
            for q in self.quantiles
        }

    def _x(self, frame):
        x = numeric_features(frame)
        if self.categories_:
            col = category_column(frame)
            values = frame[col].astype(str).to_numpy() if col else np.array([""] * len(frame))
            index = {c: i for i, c in enumerate(self.categories_)}
            codes = np.array([index.get(v, np.nan) for v in values], dtype=float)  # unseen -> missing
            x = np.column_stack([x, codes])
        return x

    def _quantile_log(self, frame, q):
        if q not in self.models_:
            raise InputError(f"gbt predictor was fitted for quantiles {list(self.models_)}, not {q}")
        out = self.models_[q].predict(self._x(frame))
        return out


class TextPredictor(_ResidualQuantiles):
    """A local Hugging Face encoder (DistilBERT-style) -> mean-pooled embedding + prompt length -> ridge.

    Args:
        model_dir: a directory with the encoder's ``config.json``, weights and tokenizer files
            (nothing is downloaded: ``local_files_only=True``).
        max_length: tokens of each prompt the encoder reads.
        batch_size: prompts per encoder forward.
        alpha: ridge penalty.
    """

    name = "text"
    needs_text = True

    def __init__(self, model_dir: str | Path, quantiles: Sequence[float] = DEFAULT_QUANTILES, max_length: int = 256,
                 batch_size: int = 32, alpha: float = 1.0):
        super().__init__(quantiles)
        self.model_dir = str(model_dir)
        if not Path(self.model_dir, "config.json").is_file():
            raise InputError(f"text predictor: {self.model_dir} has no config.json (give a local encoder directory)")
        self.max_length, self.batch_size, self.alpha = int(max_length), int(batch_size), float(alpha)
        self._encoder = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_encoder"] = None  # reloaded from model_dir on first use
        return state

    def _load_encoder(self):
        if self._encoder is None:
            transformers = require("transformers", "predict-text")
            require("torch", "predict-text")
            tok = transformers.AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = transformers.AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
            self._encoder = (tok, model)
        return self._encoder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden states, shape ``(len(texts), hidden)``."""
        import torch

        tok, model = self._load_encoder()
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = tok(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                            max_length=self.max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy())
        return np.concatenate(out, axis=0)

    def _x(self, frame):
        texts = frame["prompt"].fillna("").astype(str).tolist()
        return np.column_stack([self.embed(texts), numeric_features(frame)])

    def _fit(self, frame, log_y):
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        x = self._x(frame)
        self.model_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha)).fit(x, log_y)
        self._set_residuals(log_y, self.model_.predict(x))

    def _mean_log(self, frame):
        return self.model_.predict(self._x(frame))


PREDICTORS = {"linear": LinearPredictor, "gbt": GradientBoostedPredictor, "text": TextPredictor}


def make_predictor(name: str, **kwargs) -> LengthPredictor:
    """A predictor by name (``linear``, ``gbt``, ``text``; ``text`` needs ``model_dir``)."""
    if name not in PREDICTORS:
        raise InputError(f"unknown predictor '{name}'; choose one of: {', '.join(PREDICTORS)}")
    if name == "text" and not kwargs.get("model_dir"):
        raise InputError("the text predictor needs --text-model DIR (a local encoder directory)")
    if name != "text":
        kwargs.pop("model_dir", None)
    return PREDICTORS[name](**kwargs)


def load(path: str | Path) -> LengthPredictor:
    """A predictor saved with :meth:`LengthPredictor.save`."""
    joblib = require("joblib", "predict")

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such predictor file")
    try:
        obj = joblib.load(path)
    except Exception as exc:  # joblib raises many types for a non-joblib file
        raise InputError(f"{path}: not a saved fluidserve predictor ({type(exc).__name__})") from None
    if not isinstance(obj, LengthPredictor):
        raise InputError(f"{path}: holds a {type(obj).__name__}, not a fluidserve predictor")
    return obj
