"""The served model: load `models:/<name>@<alias>`, poll the alias, swap versions atomically.

A request takes ONE reference to the current `ServingModel` at its start and uses it to the end, so a
swap (a single attribute assignment) never changes the model under a running request and never fails one:
the old version stays alive until its last request drops the reference.

The hot path calls the scikit-learn estimator directly on a float64 numpy array whose column order comes
from the model's MLflow signature; MLflow's pyfunc wrapper (pandas conversion and schema enforcement)
costs about five times the prediction itself on this model.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import numpy as np

from serve.errors import FeatureError, ModelNotReady, Unprocessable

log = logging.getLogger(__name__)

NUMERIC_TYPES = {"double", "float", "long", "integer"}
_NUMBER = (int, float)
MAX_PROBLEMS = 20


@dataclass
class ServingModel:
    """One loaded model version with everything a request needs; never mutated after loading."""

    name: str
    alias: str
    version: str
    run_id: str | None
    estimator: Any
    features: tuple[str, ...]
    feature_types: tuple[str, ...]
    classes: np.ndarray
    loaded_at: datetime
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.features)
        getter = itemgetter(*self.features)
        self._n = n
        self._get: Callable[[dict], tuple] = getter if n > 1 else (lambda row: (getter(row),))
        self._feature_set = frozenset(self.features)
        self.class_keys = [str(c) for c in self.classes.tolist()]
        self.class_values = self.classes.tolist()

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id}

    # -- input ----------------------------------------------------------------------------------------
    def to_matrix(self, rows: list[Any]) -> np.ndarray:
        """JSON records -> float64 matrix in signature order; FeatureError names every bad feature."""
        try:
            # itemgetter raises KeyError for a missing feature; equal lengths then rule out extra ones
            flat = list(itertools.chain.from_iterable(map(self._get, rows)))
            if all(len(r) == self._n for r in rows) and set(map(type, flat)) <= {float, int}:
                X = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(len(rows), self._n)
                if np.isfinite(X).all():
                    return X
        except (KeyError, TypeError, IndexError):
            pass
        raise FeatureError(self._problems(rows), self.features)

    def split_to_matrix(self, columns: Any, data: Any) -> np.ndarray:
        """The compact form `{"columns": [...], "data": [[...], ...]}` -> float64 matrix in signature order."""
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise FeatureError(
                [
                    {
                        "row": None,
                        "feature": None,
                        "problem": "type",
                        "message": "columns must be a list of feature names",
                    }
                ],
                self.features,
            )
        given = set(columns)
        problems = [
            {"row": None, "feature": f, "problem": "missing", "message": f"feature '{f}' is not in columns"}
            for f in self.features
            if f not in given
        ] + [
            {
                "row": None,
                "feature": c[:60],
                "problem": "unknown",
                "message": f"unknown feature '{c:.60}' in columns",
            }
            for c in columns
            if c not in self._feature_set
        ]
        if len(given) != len(columns):
            problems.append(
                {
                    "row": None,
                    "feature": None,
                    "problem": "duplicate",
                    "message": "columns names a feature twice",
                }
            )
        if problems:
            raise FeatureError(problems[:MAX_PROBLEMS], self.features)
        n = len(columns)
        try:
            flat = list(itertools.chain.from_iterable(data))
            if all(len(r) == n for r in data) and set(map(type, flat)) <= {float, int}:
                X = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(len(data), n)
                if np.isfinite(X).all():
                    if tuple(columns) != self.features:
                        X = np.ascontiguousarray(X[:, [columns.index(f) for f in self.features]])
                    return X
        except TypeError:
            pass
        bad = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != n:
                bad.append(
                    {
                        "row": i,
                        "feature": None,
                        "problem": "type",
                        "message": f"row {i} must be a list of {n} numbers",
                    }
                )
                continue
            for name, value in zip(columns, row, strict=True):
                if isinstance(value, bool) or not isinstance(value, _NUMBER) or not np.isfinite(value):
                    bad.append(
                        {
                            "row": i,
                            "feature": name,
                            "problem": "type",
                            "message": f"row {i}: feature '{name}' must be a finite number, got {value!r:.40}",
                        }
                    )
            if len(bad) >= MAX_PROBLEMS:
                break
        raise FeatureError(bad[:MAX_PROBLEMS], self.features)

    def _problems(self, rows: list[Any]) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                problems.append(
                    {
                        "row": i,
                        "feature": None,
                        "problem": "type",
                        "message": f"row {i} must be an object of feature name -> number",
                    }
                )
                continue
            for name in self.features:
                if name not in row:
                    problems.append(
                        {
                            "row": i,
                            "feature": name,
                            "problem": "missing",
                            "message": f"row {i}: feature '{name}' is missing",
                        }
                    )
                else:
                    value = row[name]
                    if isinstance(value, bool) or not isinstance(value, _NUMBER) or not np.isfinite(value):
                        problems.append(
                            {
                                "row": i,
                                "feature": name,
                                "problem": "type",
                                "message": f"row {i}: feature '{name}' must be a finite number, got {value!r:.40}",
                            }
                        )
            for name in row:
                if name not in self._feature_set:
                    problems.append(
                        {
                            "row": i,
                            "feature": str(name),
                            "problem": "unknown",
                            "message": f"row {i}: unknown feature '{name:.60}'; the model takes: "
                            + ", ".join(self.features),
                        }
                    )
            if len(problems) >= MAX_PROBLEMS:
                break
        return problems[:MAX_PROBLEMS]

    # -- prediction -----------------------------------------------------------------------------------
    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class index per row, probability matrix); values the model cannot compute with are a 422."""
        try:
            with np.errstate(all="ignore"):
                proba = self.estimator.predict_proba(X)
        except ValueError as exc:  # e.g. finite inputs that overflow to infinity inside the pipeline
            raise Unprocessable(
                f"the model cannot compute a prediction for these values ({exc}); check the rows for "
                "values far outside the range of the training data"
            ) from exc
        if not np.isfinite(proba).all():
            raise Unprocessable(
                "the model produced no finite probabilities for some rows; check the rows for "
                "values far outside the range of the training data"
            )
        return proba.argmax(axis=1), proba


def load_serving_model(name: str, alias: str, tracking_uri: str) -> ServingModel:
    """Resolve the alias to a version and load it (blocking: MLflow calls and unpickling)."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelNotReady(
            f"no model version has alias '{alias}' on registered model '{name}': {exc.message}"
        ) from exc
    uri = f"models:/{name}/{mv.version}"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri)
        from mlflow.models import Model

        meta = Model.load(local)
        estimator = mlflow.sklearn.load_model(local)
    except Exception as exc:
        raise ModelNotReady(f"cannot load {uri}: {exc}") from exc
    features, types = _features(meta, estimator, uri)
    if not hasattr(estimator, "predict_proba"):
        raise ModelNotReady(f"{uri} has no predict_proba; the API serves probabilistic classifiers")
    classes = np.asarray(getattr(estimator, "classes_", []))
    return ServingModel(
        name=name,
        alias=alias,
        version=str(mv.version),
        run_id=mv.run_id or mv.tags.get("source_run_id"),
        estimator=estimator,
        features=features,
        feature_types=types,
        classes=classes,
        loaded_at=datetime.now(UTC),
        tags=dict(mv.tags),
    )


def _features(meta: Any, estimator: Any, uri: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    sig = meta.signature
    if sig is not None and sig.inputs is not None and sig.inputs.has_input_names():
        cols = sig.inputs.inputs
        names = tuple(c.name for c in cols)
        types = tuple(getattr(c.type, "name", str(c.type)) for c in cols)
    elif hasattr(estimator, "feature_names_in_"):
        names = tuple(str(n) for n in estimator.feature_names_in_)
        types = ("double",) * len(names)
    else:
        raise ModelNotReady(f"{uri} has no input signature with column names; log it with a signature")
    bad = [f"{n} ({t})" for n, t in zip(names, types, strict=True) if t not in NUMERIC_TYPES]
    if bad:
        raise ModelNotReady(f"{uri} has non-numeric inputs the API does not serve: {', '.join(bad)}")
    return names, types


class ModelHolder:
    """Holds the current ServingModel; a daemon thread polls the alias and swaps on change."""

    def __init__(
        self,
        name: str,
        alias: str,
        tracking_uri: str,
        poll_interval: float,
        *,
        on_reload: Callable[[str, ServingModel | None], None] | None = None,
        enrich: Callable[[ServingModel], None] | None = None,
    ):
        self.name, self.alias, self.tracking_uri = name, alias, tracking_uri
        self.poll_interval = poll_interval
        self.current: ServingModel | None = None
        self.last_error: str | None = None
        self._on_reload = on_reload or (lambda outcome, model: None)
        self._enrich = enrich
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def get(self) -> ServingModel:
        model = self.current
        if model is None:
            raise ModelNotReady(
                f"no model is loaded yet (models:/{self.name}@{self.alias}): {self.last_error or 'loading'}"
            )
        return model

    def refresh(self) -> bool:
        """Load the alias's version if it differs from the served one; True when a swap happened."""
        from mlflow.tracking import MlflowClient

        with self._lock:
            try:
                if self.current is not None:
                    client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
                    mv = client.get_model_version_by_alias(self.name, self.alias)
                    if str(mv.version) == self.current.version:
                        return False
                started = time.perf_counter()
                model = load_serving_model(self.name, self.alias, self.tracking_uri)
                if self._enrich is not None:
                    self._enrich(model)
            except Exception as exc:  # noqa: BLE001 - keep serving the old version; report and retry
                self.last_error = str(exc)
                log.warning(
                    "model reload failed, keeping version %s: %s",
                    self.current.version if self.current else None,
                    exc,
                )
                self._on_reload("error", None)
                return False
            old = self.current
            self.current = model  # the swap: one reference assignment
            self.last_error = None
            log.info(
                "serving %s version %s (alias %s, was %s), loaded in %.2fs",
                self.name,
                model.version,
                self.alias,
                old.version if old else None,
                time.perf_counter() - started,
            )
            self._on_reload("success", model)
            _freeze_heap()
            return True

    def start_polling(self) -> None:
        if self.poll_interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name="serve-model-poll", daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_interval):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


def _freeze_heap() -> None:
    # Move the loaded model (and everything imported) out of the collector's generations: full
    # collections then skip it, which cut p99 for 1000-row batches about tenfold (PERF-NOTES).
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def silence_feature_name_warning() -> None:
    """The estimator was fitted on a DataFrame but is called on a numpy array in signature order, on
    purpose; scikit-learn would warn on every request. Filter exactly that warning, process-wide."""
    warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
