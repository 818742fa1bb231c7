"""The task (classification or regression) of a target column, and the model families 03_train offers.

One registry: a family name maps to its classifier and its regressor (None when the family has no
estimator for that task) and says whether it needs scaled inputs and which category encoding suits it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipelines.features import build_preprocessor

TASKS = ("classification", "regression")


def infer_task(target: pd.Series, requested: str = "auto", max_classes: int = 20) -> str:
    """`requested` unless it is "auto": text, booleans and whole numbers with at most `max_classes`
    distinct values are classification; other numbers are regression."""
    if requested in TASKS:
        return requested
    if requested != "auto":
        raise ValueError(f"unknown task {requested!r}; choose auto, classification or regression")
    values = target.dropna()
    if pd.api.types.is_bool_dtype(target.dtype) or not pd.api.types.is_numeric_dtype(target.dtype):
        return "classification"
    whole = bool(np.all(np.mod(values.to_numpy(dtype="float64"), 1) == 0)) if len(values) else True
    return "classification" if whole and values.nunique() <= max_classes else "regression"


@dataclass(frozen=True)
class Family:
    classifier: Callable[[Mapping[str, Any]], Any] | None
    regressor: Callable[[Mapping[str, Any]], Any] | None
    scale: bool  # linear models need standardised inputs; trees do not
    encoding: str  # the category encoding that suits the family ("auto" picks it)


def _random_forest_classifier(p: Mapping[str, Any]) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=p["n_estimators"], max_depth=p["max_depth"], random_state=p["seed"], n_jobs=1
    )


def _random_forest_regressor(p: Mapping[str, Any]) -> Any:
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(
        n_estimators=p["n_estimators"], max_depth=p["max_depth"], random_state=p["seed"], n_jobs=1
    )


def _gradient_boosting_classifier(p: Mapping[str, Any]) -> Any:
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(
        n_estimators=p["n_estimators"],
        max_depth=p["max_depth"] or 3,
        learning_rate=p["learning_rate"],
        random_state=p["seed"],
    )


def _gradient_boosting_regressor(p: Mapping[str, Any]) -> Any:
    from sklearn.ensemble import GradientBoostingRegressor

    return GradientBoostingRegressor(
        n_estimators=p["n_estimators"],
        max_depth=p["max_depth"] or 3,
        learning_rate=p["learning_rate"],
        random_state=p["seed"],
    )


def _logistic(p: Mapping[str, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=p["C"], max_iter=5000, random_state=p["seed"])


def _ridge(p: Mapping[str, Any]) -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=p["alpha"], random_state=p["seed"])


FAMILIES: dict[str, Family] = {
    "random_forest": Family(
        _random_forest_classifier, _random_forest_regressor, scale=False, encoding="ordinal"
    ),
    "gradient_boosting": Family(
        _gradient_boosting_classifier, _gradient_boosting_regressor, scale=False, encoding="ordinal"
    ),
    "logistic_regression": Family(_logistic, None, scale=True, encoding="onehot"),
    "linear": Family(_logistic, _ridge, scale=True, encoding="onehot"),  # Ridge for regression
}


def family(model_type: str, task: str) -> Family:
    if model_type not in FAMILIES:
        raise ValueError(f"unknown model_type {model_type!r}; choose one of {', '.join(FAMILIES)}")
    chosen = FAMILIES[model_type]
    if (chosen.classifier if task == "classification" else chosen.regressor) is None:
        usable = [
            n for n, f in FAMILIES.items() if (f.classifier if task == "classification" else f.regressor)
        ]
        raise ValueError(
            f"model_type {model_type!r} has no {task} model; for {task} choose one of "
            f"{', '.join(usable)} (train.model_type), or set prepare.task"
        )
    return chosen


def build_model(
    model_type: str,
    task: str,
    kinds: Mapping[str, str],
    hyper: Mapping[str, Any],
    *,
    encoding: str = "auto",
    max_onehot_categories: int = 20,
) -> Any:
    """Pipeline(features=ColumnTransformer over the raw columns, model=the family's estimator)."""
    from sklearn.pipeline import Pipeline

    chosen = family(model_type, task)
    make = chosen.classifier if task == "classification" else chosen.regressor
    if make is None:  # family() refuses the combination first, naming the usable families
        raise ValueError(f"model_type {model_type!r} has no {task} model")
    encoding = chosen.encoding if encoding == "auto" else encoding
    features = build_preprocessor(
        kinds, scale=chosen.scale, encoding=encoding, max_onehot_categories=max_onehot_categories
    )
    return Pipeline([("features", features), ("model", make(hyper))])
