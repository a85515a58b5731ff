"""Multiple-testing corrections: Holm (family-wise) and Benjamini-Hochberg (false discovery rate)
adjusted p-values within each family of rows of a table (the deltas, correlations and controls).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests


def holm_adjust(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values, equal to ``multipletests(p, method="holm")[1]``.

    Written out because statsmodels' Holm branch calls ``gc.collect()`` on every call, which costs
    ~60 ms per family once pandas tables fill the heap (hundreds of families per run).
    """
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def adjusted_p_values(p_values: pd.Series, method: str, alpha: float) -> pd.Series:
    """Adjusted p-values of one family; NaN entries (untestable cells) stay NaN and do not count."""
    p = p_values.to_numpy(dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = (
            holm_adjust(p[finite])
            if method == "holm"
            else multipletests(p[finite], alpha=alpha, method=method)[1]
        )
    return pd.Series(out, index=p_values.index)


def correct_pvalues(frame: pd.DataFrame, family: list[str], alpha: float) -> pd.DataFrame:
    """Holm and Benjamini-Hochberg adjusted p-values of ``p_value`` within each family of rows."""
    frame = frame.copy()
    groups = frame.groupby(family, dropna=False, sort=False)["p_value"]
    frame["p_holm"] = groups.transform(adjusted_p_values, "holm", alpha)
    frame["p_bh"] = groups.transform(adjusted_p_values, "fdr_bh", alpha)
    frame["significant_holm"] = frame["p_holm"] < alpha
    frame["significant_bh"] = frame["p_bh"] < alpha
    return frame
