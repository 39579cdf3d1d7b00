import json
import math

import numpy as np

from fluidserve.jsonout import to_json


def test_nan_and_inf_become_null_and_numpy_values_plain():
    text = to_json({"a": float("nan"), "b": [np.float64(1.5), np.inf, np.int64(3)], "c": np.array([1.0, np.nan]),
                    "d": np.bool_(True)})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, 3], "c": [1.0, None], "d": True}
    assert not math.isnan(json.loads(to_json(0.0)))
