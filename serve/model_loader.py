"""The served model: load `models:/<name>@<alias>` through mlflow.pyfunc, poll the alias, swap atomically.

Every flavor is loaded with `mlflow.pyfunc.load_model`. The serving path is chosen ONCE, at load time, and
shown in GET /v1/model as `path`:

- "sklearn": a scikit-learn model with an all-numeric signature. The hot path calls the estimator directly
  on a float64 numpy array in signature order; MLflow's pyfunc wrapper (pandas conversion and schema
  enforcement) costs about five times the prediction itself on such a model (PERF-NOTES).
- "pyfunc": everything else (mixed-type pipelines, PythonModel, other flavors). Rows are validated by the
  pydantic models generated from the signature (`serve.signature`), turned into a DataFrame with MLflow's
  dtypes, and handed to the pyfunc implementation. MLflow's own enforcement is skipped because the same
  schema was just enforced (it would cost most of the request); the /invocations tests compare the
  answers with `mlflow models serve` on the same models.

A request takes ONE reference to the current `ServingModel` at its start and uses it to the end, so a
swap (a single attribute assignment) never changes the model under a running request and never fails one:
the old version stays alive until its last request drops the reference.
"""

from __future__ import annotations

import gc
import inspect
import itertools
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal

import numpy as np

from serve.errors import FeatureError, ModelNotReady, Unprocessable
from serve.pipeline_plan import verified_plan
from serve.signature import (
    MAX_DOUBLE,
    NUMERIC_TYPES,
    Column,
    ColumnRows,
    Param,
    RequestSchema,
    columns_of,
    json_value,
    params_of,
)

log = logging.getLogger(__name__)

_NUMBER = (int, float)
MAX_PROBLEMS = 20
Path = Literal["sklearn", "pyfunc"]
Task = Literal["classification", "regression", "other"]


@dataclass
class Batch:
    """One request's rows in the form the model's path takes, plus what the prediction log stores."""

    n_rows: int
    X: np.ndarray | None = None  # sklearn path
    frame: Any = None  # pyfunc path: a pandas DataFrame
    params: dict[str, Any] | None = None
    logged: Any = None  # rows in signature order (an array, or an object with tolist() for the writer)
    enforce: bool = False  # parsed by MLflow, not validated here: predict with MLflow's schema enforcement
    arrays: dict[str, np.ndarray] | None = None  # pyfunc path with a column plan: one array per column


@dataclass
class Answer:
    """Per-row results: labels (+ probabilities) for classifiers, values for regressors, else outputs."""

    labels: list[Any] | None = None
    probabilities: np.ndarray | None = None
    values: list[float] | None = None
    outputs: list[Any] | None = None
    class_index: np.ndarray | None = None

    def per_row(self) -> list[Any]:
        for v in (self.labels, self.values, self.outputs):
            if v is not None:
                return v
        return []


class LoggedRows:
    """Validated rows, converted to JSON lists in signature order only when the writer serialises them."""

    __slots__ = ("names", "rows")

    def __init__(self, rows: list[Any], names: tuple[str, ...]):
        self.rows, self.names = rows, names

    def tolist(self) -> list[list[Any]]:
        return [[json_value(getattr(r, n)) for n in self.names] for r in self.rows]


@dataclass
class ServingModel:
    """One loaded model version with everything a request needs; never mutated after loading."""

    name: str
    alias: str
    version: str
    run_id: str | None
    pyfunc: Any
    estimator: Any  # the raw scikit-learn model (sklearn flavor), else None
    path: Path
    task: Task
    flavor: str
    columns: tuple[Column, ...] | None
    params: tuple[Param, ...]
    classes: list[Any]
    loaded_at: datetime
    batch_limit: int = 10_000
    plan: Callable[[dict[str, np.ndarray]], Any] | None = None  # serve.pipeline_plan, verified at load
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.features: tuple[str, ...] = tuple(c.name for c in self.columns or ())
        self.feature_types: tuple[str, ...] = tuple(c.type for c in self.columns or ())
        n = len(self.features)
        self._n = n
        if n:
            getter = itemgetter(*self.features)
            self._get: Callable[[dict[str, Any]], tuple[Any, ...]] = (
                getter if n > 1 else (lambda row: (getter(row),))
            )
        self._feature_set = frozenset(self.features)
        self.class_values = list(self.classes)
        self.class_keys = [str(c) for c in self.class_values]
        self.request = (
            RequestSchema(f"{self.name} v{self.version}", self.columns, self.params, self.batch_limit)
            if self.columns is not None
            else None
        )
        impl = getattr(self.pyfunc, "_model_impl", None)
        fn = getattr(self.pyfunc, "_predict_fn", None) or getattr(impl, "predict", None)
        self._predict_fn = fn
        params_arg = inspect.signature(fn).parameters.get("params") if fn is not None else None
        self._fn_takes_params = params_arg is not None and params_arg.kind != inspect.Parameter.VAR_KEYWORD
        self._has_proba = self.estimator is not None and hasattr(self.estimator, "predict_proba")

    @property
    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "alias": self.alias, "run_id": self.run_id}

    # -- parsing a request ----------------------------------------------------------------------------
    def parse(self, data: Any) -> Batch:
        """A decoded body (`{"rows": [...]}` or `{"columns": [...], "data": [...]}`, optional `params`)."""
        split = isinstance(data, dict) and "columns" in data and "data" in data
        rows = data.get("data" if split else "rows") if isinstance(data, dict) else data
        if not isinstance(rows, list):
            raise Unprocessable(
                'the body must be {"rows": [{"<feature>": <value>, ...}, ...]} '
                'or {"columns": ["<feature>", ...], "data": [[<value>, ...], ...]}'
            )
        if isinstance(data, dict) and not split and not set(data) <= {"rows", "params"}:
            unknown = sorted(str(k)[:60] for k in set(data) - {"rows", "params"})[:10]
            raise Unprocessable(
                f"unknown key(s) in the body: {', '.join(unknown)}; "
                "the records form takes 'rows' (and 'params')"
            )
        params = data.get("params") if isinstance(data, dict) else None
        if self.path == "sklearn" and (params is None or params == {}):  # false, 0, [] are validated: 422
            X = self.split_to_matrix(data["columns"], rows) if split else self.to_matrix(rows)
            return Batch(len(X), X=X, logged=X)
        if self.request is not None:
            fast = self._fast_batch(self.request, data["columns"] if split else None, rows, params, split)
            if fast is not None:
                return fast
        return self.batch_from_records(
            self.request.records_from_split(data["columns"], rows) if split and self.request else rows,
            params,
            columns=data.get("columns") if split and not self.request else None,
            frame=False,
        )

    def _fast_batch(
        self, request: RequestSchema, columns: Any, rows: list[Any], params: Any, split: bool
    ) -> Batch | None:
        """Rows whose every value already has its column's type, converted column-wise (no per-row
        models); None sends them through the per-row validation, which names what is wrong."""
        cols = request.columns_from_split(columns, rows) if split else request.columns_from_records(rows)
        arrays = request.fast_arrays(cols) if cols is not None else None
        if arrays is None or cols is None:
            return None
        p = request.validate_params(params)
        logged = ColumnRows(cols)
        if self.plan is not None:
            return Batch(len(rows), arrays=arrays, params=p, logged=logged)
        import pandas as pd

        frame = pd.DataFrame(arrays, columns=list(self.features), copy=False)
        return Batch(len(rows), frame=frame, params=p, logged=logged)

    def batch_from_records(
        self, records: list[Any], params: Any, columns: Any = None, *, frame: bool = True
    ) -> Batch:
        """Records (dicts) -> a validated Batch for either path (`frame=False`: arrays for the plan)."""
        import pandas as pd

        if self.request is None:  # no named signature: hand the rows to the model as they are
            try:
                df = pd.DataFrame(records, columns=columns) if columns else pd.DataFrame(records)
            except (TypeError, ValueError) as exc:
                raise Unprocessable(f"the rows cannot be read as a table: {exc}") from exc
            if params is not None and not isinstance(params, dict):
                raise Unprocessable("params must be an object of parameter name -> value")
            return Batch(len(df), frame=df, params=params or None, logged=df.to_numpy().tolist())
        p = self.request.validate_params(params)
        if self.path == "sklearn":
            X = self.to_matrix(records)
            return Batch(len(X), X=X, params=p, logged=X)
        validated = self.request.validate(records)
        logged = LoggedRows(validated, self.features)
        if not frame and self.plan is not None:
            return Batch(len(validated), arrays=self.request.arrays(validated), params=p, logged=logged)
        return Batch(len(validated), frame=self.request.frame(validated), params=p, logged=logged)

    # -- the numeric fast path: JSON -> float64 matrix ----------------------------------------------
    def to_matrix(self, rows: list[Any]) -> np.ndarray:
        """JSON records -> float64 matrix in signature order; FeatureError names every bad feature."""
        try:
            # itemgetter raises KeyError for a missing feature; equal lengths then rule out extra ones
            flat = list(itertools.chain.from_iterable(map(self._get, rows)))
            if all(len(r) == self._n for r in rows) and set(map(type, flat)) <= {float, int}:
                X = np.fromiter(flat, dtype=np.float64, count=len(flat)).reshape(len(rows), self._n)
                if (np.abs(X) <= MAX_DOUBLE).all():  # finite and within the schema's bounds
                    return X
        except (KeyError, TypeError, IndexError):
            pass
        raise FeatureError(self._problems(rows), self.features)

    def split_to_matrix(self, columns: Any, data: Any) -> np.ndarray:
        """The compact form `{"columns": [...], "data": [[...], ...]}` -> float64 matrix, signature order."""
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
                if (np.abs(X) <= MAX_DOUBLE).all():  # finite and within the schema's bounds
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
                if isinstance(value, bool) or not isinstance(value, _NUMBER) or not abs(value) <= MAX_DOUBLE:
                    bad.append(
                        {
                            "row": i,
                            "feature": name,
                            "problem": "type",
                            "message": f"row {i}: feature '{name}' must be a number within ±1e150, "
                            f"got {value!r:.40}",
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
                    if (
                        isinstance(value, bool)
                        or not isinstance(value, _NUMBER)
                        or not abs(value) <= MAX_DOUBLE
                    ):
                        problems.append(
                            {
                                "row": i,
                                "feature": name,
                                "problem": "type",
                                "message": f"row {i}: feature '{name}' must be a number within ±1e150, "
                                f"got {value!r:.40}",
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
    def answer(self, batch: Batch) -> Answer:
        """The answer that fits the model: label (+ probabilities), value, or the pyfunc output."""
        if self.task == "classification" and self._has_proba:
            proba = self._guard(lambda: self._predict_proba(batch))
            proba = np.asarray(proba, dtype=np.float64)
            if not np.isfinite(proba).all():
                raise Unprocessable(
                    "the model produced no finite probabilities for some rows; check the rows for "
                    "values far outside the range of the training data"
                )
            idx = proba.argmax(axis=1)
            classes = self.class_values
            return Answer(labels=[classes[i] for i in idx.tolist()], probabilities=proba, class_index=idx)
        raw = self.invoke(batch)
        values = per_row(raw, batch.n_rows)
        if self.task == "regression" and values is not None:
            try:
                floats = [float(v[0] if isinstance(v, list) and len(v) == 1 else v) for v in values]
            except (TypeError, ValueError):
                floats = None
            if floats is not None:
                if not all(np.isfinite(floats)):
                    raise Unprocessable("the model produced no finite value for some rows")
                return Answer(values=floats)
        if self.task == "classification" and values is not None:
            return Answer(labels=values)
        return Answer(outputs=values if values is not None else [_jsonable(raw)])

    def invoke(self, batch: Batch) -> Any:
        """The model's own predict output (what `mlflow models serve` returns under "predictions")."""
        if batch.X is not None:
            return self._guard(lambda: self.estimator.predict(batch.X))
        if batch.frame is None and batch.arrays is not None:
            import pandas as pd

            batch.frame = pd.DataFrame(batch.arrays, columns=list(self.features), copy=False)
        fn = self._predict_fn
        if fn is None or batch.enforce:
            return self._guard(lambda: self.pyfunc.predict(batch.frame, params=batch.params))
        if self._fn_takes_params:
            return self._guard(lambda: fn(batch.frame, params=batch.params))
        return self._guard(lambda: fn(batch.frame))

    def _predict_proba(self, batch: Batch) -> Any:
        if batch.arrays is not None and self.plan is not None:
            X, rest = self.plan(batch.arrays)
            return rest.predict_proba(X)
        if batch.frame is None and self.request is not None and batch.arrays is not None:
            import pandas as pd

            batch.frame = pd.DataFrame(batch.arrays, columns=list(self.features), copy=False)
        return self.estimator.predict_proba(batch.X if batch.X is not None else batch.frame)

    @staticmethod
    def _guard(call: Callable[[], Any]) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            with np.errstate(all="ignore"):
                return call()
        except MlflowException as exc:  # MLflow's schema enforcement (invocations of unnamed-column models)
            raise Unprocessable(f"the rows do not match the model's signature: {exc.message[:500]}") from exc
        except (ValueError, TypeError, KeyError) as exc:  # the model refuses these rows: the caller's data
            raise Unprocessable(
                "the model cannot compute a prediction for these rows "
                f"({type(exc).__name__}: {str(exc)[:300]}); "
                "check the rows against GET /v1/model (types, and values far outside the training data)"
            ) from exc

    def describe(self) -> dict[str, Any]:
        """The model as GET /v1/model and GET /v1/models/{name} show it."""
        return {
            "model": self.identity,
            "loaded_at": self.loaded_at,
            "path": self.path,
            "column_plan": self.plan is not None,
            "flavor": self.flavor,
            "task": self.task,
            "classes": self.class_values if self.task == "classification" else None,
            "features": [c.as_dict() for c in self.columns or ()],
            "params": [
                {"name": p.name, "type": p.type, "default": _jsonable(p.default), "shape": p.shape}
                for p in self.params
            ],
            "lineage": self.lineage,
        }


def _jsonable(value: Any) -> Any:
    from mlflow.utils.proto_json_utils import _get_jsonable_obj

    # MLflow's own JSON conversion of a model output; a private, unannotated helper of MLflow's
    out = _get_jsonable_obj(value, pandas_orient="records")  # type: ignore[no-untyped-call]
    return out.tolist() if hasattr(out, "tolist") else out


def per_row(raw: Any, n: int) -> list[Any] | None:
    """The model's output split into one JSON value per row, or None when it is not per row."""
    out = _jsonable(raw)
    if isinstance(out, dict) and out and all(isinstance(v, list) and len(v) == n for v in out.values()):
        keys = list(out)
        return [{k: out[k][i] for k in keys} for i in range(n)]  # a dict of columns -> one dict per row
    if isinstance(out, list) and len(out) == n:
        return [json_value(v) if not isinstance(v, list | dict) else v for v in out]
    return None


def load_serving_model(name: str, alias: str, tracking_uri: str, batch_limit: int = 10_000) -> ServingModel:
    """Resolve the alias to a version and load it with mlflow.pyfunc (blocking: MLflow calls, unpickling)."""
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
    # Explicit URIs, no process-wide state: mlflow.set_registry_uri also exports MLFLOW_REGISTRY_URI, which
    # every child process (and, in tests, every later subprocess) would inherit and use as its registry.
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, tracking_uri=tracking_uri, registry_uri=tracking_uri
        )
        pyfunc = mlflow.pyfunc.load_model(local)
    except Exception as exc:
        raise ModelNotReady(f"cannot load {uri}: {exc}") from exc
    meta = pyfunc.metadata
    flavor = str(meta.flavors.get("python_function", {}).get("loader_module", "unknown"))
    estimator = pyfunc.get_raw_model() if flavor == "mlflow.sklearn" else None
    described = (meta.metadata or {}).get("jobrunner") if isinstance(meta.metadata, dict) else None
    try:
        columns = columns_of(meta.signature, described)
    except Unprocessable as exc:
        raise ModelNotReady(f"{uri}: {exc.message}") from exc
    if columns is None and estimator is not None and hasattr(estimator, "feature_names_in_"):
        columns = tuple(Column(str(n), "double", kind="numeric") for n in estimator.feature_names_in_)
    params = params_of(meta.signature)
    task = _task(described, estimator)
    classes = _classes(described, estimator, task)
    path = _path(estimator, columns, params, task)
    column_plan = None
    if path == "pyfunc" and task == "classification" and estimator is not None and columns is not None:
        column_plan = verified_plan(estimator, _example(pyfunc))
    return ServingModel(
        name=name,
        alias=alias,
        version=str(mv.version),
        run_id=mv.run_id or mv.tags.get("source_run_id"),
        pyfunc=pyfunc,
        estimator=estimator,
        path=path,
        plan=column_plan,
        task=task,
        flavor=flavor,
        columns=columns,
        params=params,
        classes=classes,
        loaded_at=datetime.now(UTC),
        batch_limit=batch_limit,
        tags=dict(mv.tags),
    )


def _example(pyfunc: Any) -> Any:
    try:
        example = pyfunc.input_example
    except Exception:  # noqa: BLE001 - no (readable) example: the plan is not verified, not used
        return None
    return example if hasattr(example, "columns") else None


def _task(described: dict[str, Any] | None, estimator: Any) -> Task:
    told = (described or {}).get("task")
    if told == "classification" or told == "regression":
        return "classification" if told == "classification" else "regression"
    if estimator is not None:
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(estimator) and hasattr(estimator, "classes_"):
            return "classification"
        if is_regressor(estimator):
            return "regression"
    return "other"


def _classes(described: dict[str, Any] | None, estimator: Any, task: Task) -> list[Any]:
    if task != "classification":
        return []
    if estimator is not None and hasattr(estimator, "classes_"):
        classes: list[Any] = np.asarray(estimator.classes_).tolist()  # the order of predict_proba's columns
        return classes
    told = (described or {}).get("classes")
    return list(told) if isinstance(told, list) else []


def _path(estimator: Any, columns: tuple[Column, ...] | None, params: tuple[Param, ...], task: Task) -> Path:
    """The direct scikit-learn path where it applies (numeric signature, predict/predict_proba)."""
    if estimator is None or columns is None or params:
        return "pyfunc"
    if not all(c.type in NUMERIC_TYPES and not c.optional for c in columns):
        return "pyfunc"
    if not hasattr(estimator, "predict") or (
        task == "classification" and not hasattr(estimator, "predict_proba")
    ):
        return "pyfunc"
    return "sklearn"


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
        batch_limit: int = 10_000,
    ):
        self.name, self.alias, self.tracking_uri = name, alias, tracking_uri
        self.poll_interval = poll_interval
        self.batch_limit = batch_limit
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
                model = load_serving_model(self.name, self.alias, self.tracking_uri, self.batch_limit)
                if self._enrich is not None:
                    self._enrich(model)
            except Exception as exc:  # noqa: BLE001 - keep serving the old version; report and retry
                self.last_error = str(exc)
                log.warning(
                    "model reload of %s failed, keeping version %s: %s",
                    self.name,
                    self.current.version if self.current else None,
                    exc,
                )
                self._on_reload("error", None)
                return False
            old = self.current
            self.current = model  # the swap: one reference assignment
            self.last_error = None
            log.info(
                "serving %s version %s (alias %s, was %s, path %s), loaded in %.2fs",
                self.name,
                model.version,
                self.alias,
                old.version if old else None,
                model.path,
                time.perf_counter() - started,
            )
            self._on_reload("success", model)
            _freeze_heap()
            return True

    def start_polling(self) -> None:
        if self.poll_interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._poll, name=f"serve-model-poll-{self.name}", daemon=True)
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
