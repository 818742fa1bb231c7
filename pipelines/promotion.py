"""Model promotion: register a candidate and move the `champion` alias only when it is better.

The source project switched the served model to whichever run had the best F1 with no threshold and no
record. Here the decision is explicit: the current champion is re-scored on the SAME holdout as the
candidate, the candidate must beat it by `min_improvement` on the chosen metric (lower is better for
rmse and mae), and the decision with both scores is written onto the model version as tags (and
returned for the notebook to log). A candidate that answers a different question than the champion -
another task, target or feature set - is refused (not registered): compare it under another model name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pipelines.metrics import CLASSIFICATION_METRICS, LOWER_IS_BETTER, resolve_metric, score

log = logging.getLogger(__name__)

METRICS = CLASSIFICATION_METRICS  # kept for callers of the binary-classification era
__all__ = ["Decision", "compatibility", "decide", "promote", "score"]


@dataclass(frozen=True)
class Decision:
    model_name: str
    alias: str
    metric: str
    min_improvement: float
    candidate_version: int | None  # None: refused, not registered
    candidate_score: float
    champion_version: int | None  # the champion before this decision
    champion_score: float | None
    promoted: bool
    reason: str
    refused: bool = False

    @property
    def decision(self) -> str:
        return "refused" if self.refused else ("promoted" if self.promoted else "kept")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "decision": self.decision}

    def summary(self) -> str:
        if self.refused:
            return (
                f"REFUSED candidate for {self.model_name}@{self.alias} "
                f"(v{self.champion_version} stays): {self.reason}"
            )
        head = f"{self.model_name} v{self.candidate_version} {self.metric}={self.candidate_score:.4f}"
        if self.promoted:
            return f"PROMOTED {head} to @{self.alias} ({self.reason})"
        return f"KEPT v{self.champion_version} as @{self.alias}; {head} ({self.reason})"


def decide(
    candidate: float, champion: float | None, min_improvement: float, lower_is_better: bool = False
) -> tuple[bool, str]:
    """Pure decision rule: promote the first model, or one that beats the champion by min_improvement."""
    if champion is None:
        return True, "first model: no champion yet"
    gain = (champion - candidate) if lower_is_better else (candidate - champion)
    if not np.isfinite(gain):
        return False, f"cannot compare candidate {candidate} with champion {champion}"
    better = "lower" if lower_is_better else "higher"
    if gain > 0 and gain >= min_improvement:
        return True, f"beats champion by {gain:+.4f} ({better} is better; needed {min_improvement})"
    return False, f"improvement {gain:+.4f} below the required {min_improvement} ({better} is better)"


def _contract(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    block = (metadata or {}).get("jobrunner")
    return block if isinstance(block, dict) else None


def compatibility(
    candidate: Mapping[str, Any] | None,
    champion: Mapping[str, Any] | None,
    champion_inputs: list[str] | None = None,
) -> str | None:
    """Why the candidate cannot replace the champion (another task, target or feature set), or None.

    `candidate`/`champion` are MLflow model metadata (the `jobrunner` block written by 03_train). A champion
    without it (any other MLflow model) is compared by its signature's input names, when it has one.
    """
    cand, champ = _contract(candidate), _contract(champion)
    if cand is None:
        return None
    if champ is None:
        if champion_inputs is not None:
            names = [f["name"] for f in cand.get("features", [])]
            if sorted(names) != sorted(champion_inputs):
                return (
                    f"the candidate's features {sorted(names)} differ from the champion's inputs "
                    f"{sorted(champion_inputs)}"
                )
        return None
    for key in ("task", "target"):
        if cand.get(key) != champ.get(key):
            return (
                f"the candidate's {key} is {cand.get(key)!r}, the champion's is {champ.get(key)!r}: "
                "register it under another evaluate.model_name"
            )
    theirs = {f["name"]: f["kind"] for f in champ.get("features", [])}
    ours = {f["name"]: f["kind"] for f in cand.get("features", [])}
    if ours != theirs:
        added, removed = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
        changed = sorted(n for n in set(ours) & set(theirs) if ours[n] != theirs[n])
        return (
            f"the candidate's features differ from the champion's (new: {added}, missing: {removed}, "
            f"other kind: {changed}): register it under another evaluate.model_name"
        )
    return None


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
    task: str = "classification",
    candidate_metadata: Mapping[str, Any] | None = None,
) -> Decision:
    """Register `model_uri` as a new version of `model_name` and move `alias` to it if it wins."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    metric = resolve_metric(metric, task)
    if not np.isfinite(min_improvement) or min_improvement < 0:
        raise ValueError(f"min_improvement must be a number >= 0, got {min_improvement}")
    client = client or MlflowClient()
    candidate = candidate_scores[metric]

    champion = None
    try:
        champion = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        champion = None  # no registered model yet, or no alias on it
    champion_score = None
    if champion is not None:
        reference = f"models:/{model_name}@{alias}"
        info = mlflow.models.get_model_info(reference)
        inputs = info.signature.inputs.input_names() if info.signature is not None else None
        problem = compatibility(candidate_metadata, info.metadata, inputs)
        if problem is None:
            try:
                champion_score = score(mlflow.sklearn.load_model(reference), X, y, task)[metric]
            except Exception as exc:  # noqa: BLE001 - any failure to score the champion here is a refusal
                problem = f"the champion v{champion.version} cannot be scored on this holdout: {exc}"
        if problem is not None:
            decision = Decision(
                model_name,
                alias,
                metric,
                float(min_improvement),
                None,
                float(candidate),
                int(champion.version),
                None,
                False,
                problem,
                refused=True,
            )
            log.warning(decision.summary())
            return decision

    version = mlflow.register_model(model_uri, model_name)
    _wait_ready(client, model_name, version.version)
    promoted, reason = decide(candidate, champion_score, min_improvement, metric in LOWER_IS_BETTER)
    tags = {f"holdout_{k}": f"{v:.6f}" for k, v in candidate_scores.items()}
    tags.update(
        {
            "promotion.metric": metric,
            "promotion.task": task,
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
