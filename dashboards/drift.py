"""Feature drift between the training data and served traffic: the Population Stability Index per feature.

Numeric (and datetime) features: PSI = sum over bins of (p_cur - p_ref) * ln(p_cur / p_ref), with bins at
the reference's deciles (each holds about a tenth of the training data) plus one below its minimum and one
above its maximum, so values outside the training range show as drift. Categorical (and boolean) features:
the same sum over the training data's categories plus one bin for categories never seen in training
(counted in `unseen`); a missing value is a category of its own. The usual reading: below 0.1 stable,
0.1-0.25 a moderate shift worth watching, above 0.25 a significant shift. Used by the monitoring dashboard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

WATCH = 0.1
DRIFT = 0.25
_EPS = 1e-4  # empty bins would make the logarithm infinite
MISSING = "(missing)"
UNSEEN = "(unseen)"
NUMERIC, CATEGORICAL, BOOLEAN, DATETIME = "numeric", "categorical", "boolean", "datetime"
KINDS = (NUMERIC, CATEGORICAL, BOOLEAN, DATETIME)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    status: str  # "stable" | "watch" | "drift"
    kind: str = NUMERIC
    reference_mean: float | None = None  # numeric and datetime (epoch seconds) only
    current_mean: float | None = None
    unseen: int = 0  # categorical: recent values whose category the training data never had
    top_shift: str | None = None  # categorical: the category whose share moved most

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "psi": round(self.psi, 4),
            "status": self.status,
            "kind": self.kind,
            "reference_mean": self.reference_mean,
            "current_mean": self.current_mean,
            "unseen": self.unseen,
            "top_shift": self.top_shift,
        }


def _psi_of_shares(p_ref: np.ndarray, p_cur: np.ndarray) -> float:
    p_ref, p_cur = np.clip(p_ref, _EPS, None), np.clip(p_cur, _EPS, None)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))


def psi(reference: Sequence[Any] | np.ndarray, current: Sequence[Any] | np.ndarray, bins: int = 10) -> float:
    """Population Stability Index of numeric `current` against `reference` (the reference's quantile bins)."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if ref.size == 0 or cur.size == 0:
        raise ValueError("PSI needs at least one finite value in both the reference and the current data")
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    lo, hi = ref.min(), ref.max()

    def shares(x: np.ndarray) -> np.ndarray:
        # bins: below the reference's minimum, the deciles, above its maximum (new ranges show as drift)
        idx = np.where(
            x < lo, 0, np.where(x > hi, inner.size + 2, 1 + np.searchsorted(inner, x, side="right"))
        )
        return np.bincount(idx, minlength=inner.size + 3) / x.size

    return _psi_of_shares(shares(ref), shares(cur))


def _category(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA or value is pd.NaT:
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def category_shares(
    reference: Sequence[Any], current: Sequence[Any], categories: Sequence[Any] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(bin names, training shares, recent shares): the known categories, then UNSEEN for the others."""
    ref = Counter(_category(v) for v in reference)
    cur = Counter(_category(v) for v in current)
    known = sorted({_category(c) for c in categories} if categories is not None else set(ref))
    names = [*known, UNSEEN]
    known_set = set(known)
    n_ref, n_cur = sum(ref.values()), sum(cur.values())
    if n_ref == 0 or n_cur == 0:
        raise ValueError("PSI needs at least one value in both the reference and the current data")
    p_ref = np.array([ref.get(c, 0) for c in known] + [sum(n for c, n in ref.items() if c not in known_set)])
    p_cur = np.array([cur.get(c, 0) for c in known] + [sum(n for c, n in cur.items() if c not in known_set)])
    return names, p_ref / n_ref, p_cur / n_cur


def categorical_psi(
    reference: Sequence[Any], current: Sequence[Any], categories: Sequence[Any] | None = None
) -> tuple[float, int]:
    """(PSI over the categories, how many recent values had a category the training data never had)."""
    names, p_ref, p_cur = category_shares(reference, current, categories)
    unseen = int(round(p_cur[-1] * len(current)))
    return _psi_of_shares(p_ref, p_cur), unseen


def status_of(value: float) -> str:
    return "drift" if value > DRIFT else "watch" if value > WATCH else "stable"


def infer_kind(values: Sequence[Any] | np.ndarray | pd.Series) -> str:
    """The kind of a reference column from its dtype: numeric, boolean, datetime or categorical."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values))
    if pd.api.types.is_bool_dtype(series):
        return BOOLEAN
    if pd.api.types.is_datetime64_any_dtype(series):
        return DATETIME
    if pd.api.types.is_numeric_dtype(series):
        return NUMERIC
    return CATEGORICAL


def as_numbers(values: Sequence[Any] | np.ndarray | pd.Series, kind: str) -> np.ndarray:
    """Numeric values (datetimes as epoch seconds; unparseable values become NaN)."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    if kind == DATETIME:
        stamps = pd.to_datetime(series, errors="coerce", utc=True)
        out = stamps.astype("int64").to_numpy(dtype=np.float64) / 1e9
        return np.where(stamps.isna().to_numpy(), np.nan, out)
    return np.asarray(pd.to_numeric(series, errors="coerce"), dtype=np.float64)


def feature_drift(
    name: str,
    reference: Sequence[Any] | np.ndarray | pd.Series,
    current: Sequence[Any] | np.ndarray | pd.Series,
    kind: str | None = None,
    categories: Sequence[Any] | None = None,
) -> FeatureDrift:
    kind = kind or infer_kind(reference)
    if kind not in KINDS:
        raise ValueError(f"feature {name!r}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if kind in (CATEGORICAL, BOOLEAN):
        names, p_ref, p_cur = category_shares(list(reference), list(current), categories)
        value = _psi_of_shares(p_ref, p_cur)
        moved = int(np.argmax(np.abs(p_cur - p_ref)))
        return FeatureDrift(
            feature=name,
            psi=value,
            status=status_of(value),
            kind=kind,
            unseen=int(round(p_cur[-1] * len(current))),
            top_shift=names[moved],
        )
    ref, cur = as_numbers(reference, kind), as_numbers(current, kind)
    value = psi(ref, cur)
    return FeatureDrift(
        feature=name,
        psi=value,
        status=status_of(value),
        kind=kind,
        reference_mean=float(np.nanmean(ref)),
        current_mean=float(np.nanmean(cur)),
    )


def drift_report(
    reference: Mapping[str, Any],
    current: Mapping[str, Any],
    features: Sequence[str],
    kinds: Mapping[str, str | None] | None = None,
    categories: Mapping[str, Sequence[Any] | None] | None = None,
) -> list[FeatureDrift]:
    """PSI of every feature, most drifted first. Kinds (and categories) come from the model when it has
    them, else from the reference data's dtypes. Features missing from either side raise ValueError."""
    missing = [f for f in features if f not in reference or f not in current]
    if missing:
        raise ValueError(
            f"no data for feature(s) {', '.join(missing)} in the reference or the current window"
        )
    kinds, categories = kinds or {}, categories or {}
    report = [feature_drift(f, reference[f], current[f], kinds.get(f), categories.get(f)) for f in features]
    return sorted(report, key=lambda d: d.psi, reverse=True)
