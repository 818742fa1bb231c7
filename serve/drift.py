"""Feature drift between the training data and served traffic: the Population Stability Index per feature.

PSI = sum over bins of (p_cur - p_ref) * ln(p_cur / p_ref), with bins at the reference's deciles (each
holds about a tenth of the training data) plus one below its minimum and one above its maximum. The usual reading: below 0.1 stable, 0.1-0.25 a moderate
shift worth watching, above 0.25 a significant shift. Used by the monitoring dashboard; pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

WATCH = 0.1
DRIFT = 0.25
_EPS = 1e-4  # empty bins would make the logarithm infinite


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    psi: float
    status: str  # "stable" | "watch" | "drift"
    reference_mean: float
    current_mean: float

    def as_dict(self) -> dict[str, float | str]:
        return {
            "feature": self.feature,
            "psi": round(self.psi, 4),
            "status": self.status,
            "reference_mean": self.reference_mean,
            "current_mean": self.current_mean,
        }


def psi(
    reference: Sequence[float] | np.ndarray, current: Sequence[float] | np.ndarray, bins: int = 10
) -> float:
    """Population Stability Index of `current` against `reference` (quantile bins of the reference)."""
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

    p_ref, p_cur = shares(ref), shares(cur)
    p_ref, p_cur = np.clip(p_ref, _EPS, None), np.clip(p_cur, _EPS, None)
    return float(np.sum((p_cur - p_ref) * np.log(p_cur / p_ref)))


def status_of(value: float) -> str:
    return "drift" if value > DRIFT else "watch" if value > WATCH else "stable"


def drift_report(
    reference: Mapping[str, Sequence[float]], current: Mapping[str, Sequence[float]], features: Sequence[str]
) -> list[FeatureDrift]:
    """PSI of every feature, most drifted first. Features missing from either side raise ValueError."""
    missing = [f for f in features if f not in reference or f not in current]
    if missing:
        raise ValueError(
            f"no data for feature(s) {', '.join(missing)} in the reference or the current window"
        )
    report = []
    for f in features:
        value = psi(reference[f], current[f])
        report.append(
            FeatureDrift(
                feature=f,
                psi=value,
                status=status_of(value),
                reference_mean=float(np.nanmean(np.asarray(reference[f], dtype=np.float64))),
                current_mean=float(np.nanmean(np.asarray(current[f], dtype=np.float64))),
            )
        )
    return sorted(report, key=lambda d: d.psi, reverse=True)
