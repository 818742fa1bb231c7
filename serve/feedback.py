"""Feedback: true labels for stored predictions, live accuracy, and the retraining trigger.

Live accuracy is computed over the newest `feedback_window` labels of the served model version, from the
database, so every worker process sees the same figure. When it falls below the threshold (with at least
`feedback_min_samples` labels) the trigger of that version is disarmed by a conditional UPDATE: exactly
one request, in whichever worker, wins and submits ONE retraining job through `jobrunner.jobs.submit`
(with an idempotency key per crossing, a second safety net). Accuracy back at or above the threshold
re-arms it, so the next crossing submits again. A newly served version starts with an armed trigger.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import Engine

from serve.config import Settings
from serve.model_loader import ServingModel
from serve.observability import Metrics
from serve.store import feedback, retrain
from serve.store.predictions import StoredPrediction

log = logging.getLogger(__name__)


def typed_label(key: str | None, like: Any, classes: list[Any] | None = None) -> Any:
    """A stored label (kept as text) in the JSON type the model answers with: one of `classes` when they
    are known, else the type of the prediction's own answer `like` (1 for a model that predicted 0, 1.5 for
    a regressor's value, "yes" for string classes). One label type in /v1/predict, feedback and lineage."""
    if key is None:
        return None
    for value in classes or ():
        if str(value) == key:
            return value.item() if hasattr(value, "item") else value
    try:
        if isinstance(like, bool):
            return {"True": True, "False": False}.get(key, key)
        if isinstance(like, int):
            return int(key)
        if isinstance(like, float):
            return float(key)
    except ValueError:
        pass
    return key


class FeedbackService:
    def __init__(self, engine: Engine, settings: Settings, metrics: Metrics):
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self._threads: list[threading.Thread] = []

    def record(
        self,
        prediction: StoredPrediction,
        true_label: str,
        served: ServingModel | None,
        *,
        regression: bool = False,
    ) -> dict[str, Any]:
        correct = None
        if regression:  # "correct" means the exact value; the live metrics are MAE and RMSE
            correct = abs(float(prediction.label) - float(true_label)) <= 1e-12 * max(
                1.0, abs(float(true_label))
            )
        item = feedback.record_feedback(
            self.engine, prediction=prediction, true_label=true_label, correct=correct
        )
        self.metrics.feedback.labels(
            prediction.model_name, prediction.model_version, str(item.correct).lower()
        ).inc()
        acc = self.accuracy(
            prediction.model_name,
            prediction.model_version,
            served.alias if served else prediction.model_alias,
            prediction.run_id,
            task="regression" if regression else "classification",
        )
        is_served = (
            served is not None
            and served.name == prediction.model_name
            and served.version == prediction.model_version
        )
        if is_served:
            self._check_threshold(prediction.model_name, prediction.model_version, acc)
            acc["retrain"] = self._retrain_state(prediction.model_name, prediction.model_version)
        classes = (
            served.class_values if served is not None and served.version == prediction.model_version else None
        )
        return {
            "prediction_id": prediction.prediction_id,
            "predicted_label": prediction.label,
            "true_label": typed_label(item.true_label, prediction.label, classes),
            "correct": item.correct,
            "accuracy": acc,
        }

    def accuracy(
        self, name: str, version: str, alias: str, run_id: str | None = None, *, task: str = "classification"
    ) -> dict[str, Any]:
        """The live metric over the feedback window: accuracy for classifiers, MAE/RMSE for regressors."""
        s = self.settings
        out: dict[str, Any] = {
            "model": {"name": name, "version": version, "alias": alias, "run_id": run_id},
            "task": task,
            "window": s.feedback_window,
            "min_samples": s.feedback_min_samples,
            "retrain": self._retrain_state(name, version),
        }
        if task == "regression":
            n, mae, rmse = feedback.window_errors(
                self.engine, model_name=name, model_version=version, window=s.feedback_window
            )
            limit = s.feedback_mae_threshold
            worse = mae is not None and limit is not None and n >= s.feedback_min_samples and mae > limit
            return out | {
                "labelled": n,
                "accuracy": None,
                "mae": mae,
                "rmse": rmse,
                "threshold": limit,
                "below_threshold": worse,
            }
        n, acc = feedback.window_accuracy(
            self.engine, model_name=name, model_version=version, window=s.feedback_window
        )
        if acc is not None:
            self.metrics.accuracy.labels(name, version).set(acc)
        return out | {
            "labelled": n,
            "accuracy": acc,
            "threshold": s.feedback_threshold,
            "below_threshold": acc is not None and n >= s.feedback_min_samples and acc < s.feedback_threshold,
        }

    def _retrain_state(self, name: str, version: str) -> dict[str, Any] | None:
        row = retrain.get_retrain(self.engine, model_name=name, model_version=version)
        if row is None:
            return None
        return {
            "armed": row["armed"],
            "crossings": row["crossings"],
            "last_job_id": row["last_job_id"],
            "last_triggered_at": row["last_triggered_at"],
        }

    def _check_threshold(self, name: str, version: str, acc: dict[str, Any]) -> None:
        metric = acc["mae"] if acc["task"] == "regression" else acc["accuracy"]
        if metric is None or acc["threshold"] is None or acc["labelled"] < self.settings.feedback_min_samples:
            return
        if not acc["below_threshold"]:
            retrain.rearm_retrain(self.engine, model_name=name, model_version=version)
            return
        if retrain.claim_retrain(self.engine, model_name=name, model_version=version, accuracy=metric):
            state = retrain.get_retrain(self.engine, model_name=name, model_version=version)
            crossings = state["crossings"] if state is not None else 1
            log.warning(
                "live %s %.4g of %s v%s is worse than %.4g over %d labels: submitting a retraining job",
                "MAE" if acc["task"] == "regression" else "accuracy",
                metric,
                name,
                version,
                acc["threshold"],
                acc["labelled"],
                extra={"event": "retrain_triggered", "model": name, "version": version},
            )
            # Submitting validates the notebook and writes the job store: do it off the request.
            t = threading.Thread(
                target=self._submit,
                args=(name, version, crossings, metric),
                name="serve-retrain-submit",
                daemon=True,
            )
            self._threads.append(t)
            t.start()

    def _submit(self, name: str, version: str, crossing: int, accuracy: float) -> None:
        try:
            from jobrunner.jobs import submit

            job = submit(
                self.settings.retrain_notebook,
                dict(self.settings.retrain_parameters),
                idempotency_key=f"serve-retrain:{name}:{version}:{crossing}",
                submitter=f"serve:feedback (live metric {accuracy:.4g} worse than the threshold)",
            )
        except Exception as exc:  # noqa: BLE001 - reported in metrics and logs; the trigger stays disarmed
            self.metrics.retrains.labels(name, "error").inc()
            log.error(
                "retraining job for %s v%s could not be submitted: %s",
                name,
                version,
                exc,
                extra={"event": "retrain_submit_failed"},
            )
            return
        retrain.set_retrain_job(self.engine, model_name=name, model_version=version, job_id=job.id)
        self.metrics.retrains.labels(name, "submitted").inc()
        log.warning(
            "retraining job %s submitted for %s v%s (%s)",
            job.id,
            name,
            version,
            self.settings.retrain_notebook,
            extra={"event": "retrain_submitted", "job_id": job.id},
        )

    def join(self, timeout: float = 10.0) -> None:
        for t in self._threads:
            t.join(timeout)
