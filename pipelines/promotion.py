"""Model promotion: register a candidate and move the `champion` alias only when it is better.

The source project switched the served model to whichever run had the best F1 with no threshold and no
record. Here the decision is explicit: the current champion is re-scored on the SAME holdout as the
candidate, the candidate must beat it by `min_improvement` on the chosen metric, and the decision with
both scores is written onto the model version as tags (and returned for the notebook to log).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall")


def score(model: Any, X: Any, y: Any) -> dict[str, float]:
    """Holdout scores of a binary classifier (predict_proba for ROC AUC)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    predicted = model.predict(X)
    proba = model.predict_proba(X)[:, 1] if hasattr(model, "predict_proba") else predicted
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted)),
        "roc_auc": float(roc_auc_score(y, proba)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted)),
    }


@dataclass(frozen=True)
class Decision:
    model_name: str
    alias: str
    metric: str
    min_improvement: float
    candidate_version: int
    candidate_score: float
    champion_version: int | None  # the champion before this decision
    champion_score: float | None
    promoted: bool
    reason: str

    @property
    def decision(self) -> str:
        return "promoted" if self.promoted else "kept"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision}

    def summary(self) -> str:
        head = (
            f"{self.model_name} v{self.candidate_version} {self.metric}={self.candidate_score:.4f}"
        )
        if self.promoted:
            return f"PROMOTED {head} to @{self.alias} ({self.reason})"
        return f"KEPT v{self.champion_version} as @{self.alias}; {head} ({self.reason})"


def decide(candidate: float, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """Pure decision rule: promote the first model, or one that beats the champion by min_improvement."""
    if champion is None:
        return True, "first model: no champion yet"
    gain = candidate - champion
    if gain > 0 and gain >= min_improvement:
        return True, f"beats champion by {gain:+.4f} (needed {min_improvement})"
    return False, f"improvement {gain:+.4f} below the required {min_improvement}"


def promote(
    *,
    model_name: str,
    model_uri: str,
    candidate_scores: dict[str, float],
    metric: str,
    min_improvement: float,
    X: Any,
    y: Any,
    alias: str = "champion",
    source_run_id: str | None = None,
    client: Any = None,
) -> Decision:
    """Register `model_uri` as a new version of `model_name` and move `alias` to it if it wins."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if metric not in METRICS:
        raise ValueError(f"unknown promotion metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not np.isfinite(min_improvement) or min_improvement < 0:
        raise ValueError(f"min_improvement must be a number >= 0, got {min_improvement}")
    client = client or MlflowClient()

    champion = None
    try:
        champion = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        champion = None  # no registered model yet, or no alias on it
    champion_score = None
    if champion is not None:
        champion_model = mlflow.sklearn.load_model(f"models:/{model_name}@{alias}")
        champion_score = score(champion_model, X, y)[metric]

    version = mlflow.register_model(model_uri, model_name)
    _wait_ready(client, model_name, version.version)
    candidate = candidate_scores[metric]
    promoted, reason = decide(candidate, champion_score, min_improvement)
    tags = {f"holdout_{k}": f"{v:.6f}" for k, v in candidate_scores.items()}
    tags.update(
        {
            "promotion.metric": metric,
            "promotion.decision": "promoted" if promoted else "kept",
            "promotion.reason": reason,
            "promotion.champion_before": str(champion.version) if champion else "none",
            "promotion.champion_score": f"{champion_score:.6f}" if champion_score is not None else "none",
        }
    )
    if source_run_id:
        tags["source_run_id"] = source_run_id
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    if promoted:
        client.set_registered_model_alias(model_name, alias, version.version)
    decision = Decision(
        model_name=model_name,
        alias=alias,
        metric=metric,
        min_improvement=float(min_improvement),
        candidate_version=int(version.version),
        candidate_score=float(candidate),
        champion_version=int(champion.version) if champion else None,
        champion_score=champion_score,
        promoted=promoted,
        reason=reason,
    )
    log.info(decision.summary())
    return decision


def _wait_ready(client: Any, name: str, version: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise RuntimeError(f"registering {name} v{version} failed")
        time.sleep(0.2)
    raise TimeoutError(f"{name} v{version} not READY after {timeout}s")
