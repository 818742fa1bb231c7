"""Column kinds of a tidy table and the preprocessing that turns raw columns into model features.

The pipeline notebooks keep the user's columns as they are (numbers, booleans, strings for categories,
datetimes, missing values included) and the trained model is one scikit-learn Pipeline that starts from
those RAW columns: this module builds its first step, a ColumnTransformer chosen from the column kinds.
The transformers defined here live in an importable module (not in a notebook) so that a cloudpickled
model refers to them by name and loads in any process that has the project installed (the API).

Datetime columns are kept as datetimes in the prepared data and turned into numbers inside the model
(`DatetimeParts`), so a caller sends the date itself, not derived numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

Kind = Literal["numeric", "boolean", "categorical", "datetime"]
KINDS: tuple[str, ...] = ("numeric", "boolean", "categorical", "datetime")
MISSING_CATEGORY = "__missing__"  # what a missing categorical value becomes before encoding
DATETIME_PARTS = ("year", "month", "day", "weekday", "hour", "days")  # days: since 1970-01-01


def kind_of(series: pd.Series) -> Kind | None:
    """The kind of a column, or None when no kind fits (timedeltas, complex numbers, nested values)."""
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_complex_dtype(dtype):
        return "numeric"
    if pd.api.types.is_object_dtype(dtype):  # before the string test, which object columns also pass
        values = series.dropna()
        if len(values) and all(isinstance(v, (bool, np.bool_)) for v in values):
            return "boolean"
        return "categorical" if all(isinstance(v, str) for v in values) else None
    if isinstance(dtype, pd.CategoricalDtype) or pd.api.types.is_string_dtype(dtype):
        return "categorical"
    return None


def infer_kinds(frame: pd.DataFrame) -> dict[str, Kind | None]:
    return {str(name): kind_of(frame[name]) for name in frame.columns}


@dataclass(frozen=True)
class Feature:
    name: str
    kind: Kind
    categories: tuple[Any, ...] | None = None  # categorical only: the values seen in training, sorted

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            out["categories"] = list(self.categories or ())
        return out


def describe_features(frame: pd.DataFrame, kinds: Mapping[str, str]) -> list[Feature]:
    """The model's feature contract (names, kinds, categories seen in training), in column order."""
    features = []
    for name in frame.columns:
        kind = kinds[str(name)]
        categories = None
        if kind == "categorical":
            categories = tuple(sorted({str(v) for v in frame[name].dropna()}))
        features.append(Feature(str(name), kind, categories))  # type: ignore[arg-type]
    return features


def _json_value(value: Any) -> Any:
    """A class label as a JSON value of its own type (numpy scalars unwrapped)."""
    return value.item() if isinstance(value, np.generic) else value


def model_metadata(
    *, task: str, target: str, features: Sequence[Feature], classes: Sequence[Any] | None = None
) -> dict[str, Any]:
    """The `jobrunner` block of the MLflow model metadata (the contract with serving and dashboards)."""
    block: dict[str, Any] = {"task": task, "target": target}
    if task == "classification":
        block["classes"] = [_json_value(c) for c in (classes or [])]
    block["features"] = [f.as_dict() for f in features]
    return {"jobrunner": block}


# -- transformers (importable: the pickled model refers to them by module and name) ---------------------
class BooleanToFloat(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # sklearn ships no types: bases are Any
    """True/False (bool, nullable boolean or object columns, None for missing) -> 1.0/0.0/NaN."""

    def fit(self, X: Any, y: Any = None) -> BooleanToFloat:
        self.n_features_in_ = np.asarray(X).shape[1] if not hasattr(X, "columns") else len(X.columns)
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = pd.DataFrame(X)
        out = np.empty(frame.shape, dtype="float64")
        for i, name in enumerate(frame.columns):
            values = frame[name].astype(object)
            out[:, i] = [np.nan if _missing(v) else float(bool(v)) for v in values]
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(input_features if input_features is not None else [], dtype=object)


class CategoryToText(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # sklearn ships no types: bases are Any
    """Categorical values -> text, missing -> MISSING_CATEGORY (encoders then see one plain type)."""

    def fit(self, X: Any, y: Any = None) -> CategoryToText:
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = pd.DataFrame(X)
        out = np.empty(frame.shape, dtype=object)
        for i, name in enumerate(frame.columns):
            out[:, i] = [MISSING_CATEGORY if _missing(v) else str(v) for v in frame[name].astype(object)]
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(input_features if input_features is not None else [], dtype=object)


class DatetimeParts(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # sklearn ships no types: bases are Any
    """Each datetime column -> year, month, day, weekday, hour and days since 1970 (NaN when missing).

    Text in ISO form ("2024-03-01", "2024-03-01T12:00:00Z") is accepted as well, so a JSON caller can send
    dates as strings; time-zone-aware values are taken in UTC.
    """

    def fit(self, X: Any, y: Any = None) -> DatetimeParts:
        frame = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        return self

    def transform(self, X: Any) -> np.ndarray:
        frame = pd.DataFrame(X)
        blocks = []
        for name in frame.columns:
            stamps = _as_utc_naive(frame[name])
            days = (stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)
            parts = [stamps.dt.year, stamps.dt.month, stamps.dt.day, stamps.dt.weekday, stamps.dt.hour, days]
            blocks.append(np.column_stack([np.asarray(p, dtype="float64") for p in parts]))
        return np.hstack(blocks) if blocks else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = input_features if input_features is not None else self.feature_names_in_
        return np.asarray([f"{n}_{part}" for n in names for part in DATETIME_PARTS], dtype=object)


def _missing(value: Any) -> bool:
    return (
        value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and np.isnan(value))
    )


def _as_utc_naive(series: pd.Series) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        stamps = series
    else:
        stamps = pd.to_datetime(series, errors="coerce", utc=True, format="ISO8601")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps


# -- the preprocessing step ----------------------------------------------------------------------------
def build_preprocessor(
    kinds: Mapping[str, str], *, scale: bool, encoding: str, max_onehot_categories: int
) -> Any:
    """A ColumnTransformer for the raw columns: impute, encode categories, scale when `scale`.

    `encoding` is "onehot" (unknown categories become all zeros; categories beyond
    `max_onehot_categories` are grouped as infrequent) or "ordinal" (unknown categories become -1).
    """
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    def numeric_tail() -> list[Any]:
        return [SimpleImputer(strategy="median", keep_empty_features=True)] + (
            [StandardScaler()] if scale else []
        )

    by_kind: dict[str, list[str]] = {k: [n for n, kind in kinds.items() if kind == k] for k in KINDS}
    steps: list[tuple[str, Any, list[str]]] = []
    if by_kind["numeric"]:
        steps.append(("numeric", make_pipeline(*numeric_tail()), by_kind["numeric"]))
    if by_kind["boolean"]:
        steps.append(("boolean", make_pipeline(BooleanToFloat(), *numeric_tail()), by_kind["boolean"]))
    if by_kind["datetime"]:
        steps.append(("datetime", make_pipeline(DatetimeParts(), *numeric_tail()), by_kind["datetime"]))
    if by_kind["categorical"]:
        if encoding == "onehot":
            encoder: Any = OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=max_onehot_categories,
                sparse_output=False,
            )
        elif encoding == "ordinal":
            encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1)
        else:
            raise ValueError(f"unknown encoding {encoding!r}; choose auto, onehot or ordinal")
        steps.append(("categorical", make_pipeline(CategoryToText(), encoder), by_kind["categorical"]))
    if not steps:
        raise ValueError("no feature columns to train on")
    return ColumnTransformer(steps, remainder="drop", verbose_feature_names_out=True)
