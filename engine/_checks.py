"""Input checks shared by the engine's numeric modules."""
from __future__ import annotations

from typing import Any

import numpy as np


def feature_matrix(features: Any, error_type: type[Exception]) -> np.ndarray:
    """`features` as a 2-D numeric ndarray (memmaps stay memmaps), else `error_type` saying what was given."""
    arr = features if isinstance(features, np.ndarray) else np.asarray(features)
    if arr.ndim != 2 or arr.dtype.kind not in "fiu":
        raise error_type(
            f"Features must be a 2-D numeric array (rows x features); got shape {arr.shape}, "
            f"dtype {arr.dtype}. Pass one row of features per image (a layer's feature matrix).")
    return arr
