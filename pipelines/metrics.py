"""Scores of a model per task, used for cross-validation (03_train), the holdout (04_evaluate) and promotion.

Classification: accuracy, f1, roc_auc, precision, recall. With two classes, f1/precision/recall are those
of the positive class (the greater label: 1, True, or the later text in sorted order) and roc_auc uses
its probability; with more classes f1/precision/recall are macro averages and roc_auc is the
one-vs-rest macro average. Regression: rmse, mae (lower is better) and r2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "precision", "recall")
REGRESSION_METRICS = ("rmse", "mae", "r2")
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
DEFAULT_METRIC = {"classification": "roc_auc", "regression": "rmse"}


def metrics_for(task: str) -> tuple[str, ...]:
    if task == "classification":
        return CLASSIFICATION_METRICS
    if task == "regression":
        return REGRESSION_METRICS
    raise ValueError(f"unknown task {task!r}; choose classification or regression")


def resolve_metric(metric: str, task: str) -> str:
    """`auto` -> the task's default; anything else must be one of the task's metrics."""
    if metric == "auto":
        return DEFAULT_METRIC[task]
    allowed = metrics_for(task)
    if metric not in allowed:
        raise ValueError(
            f"unknown promotion metric {metric!r} for {task}; choose auto or one of "
            f"{', '.join(allowed)} (promotion.metric)"
        )
    return metric


def score(model: Any, X: Any, y: Any, task: str = "classification") -> dict[str, float]:
    """Scores of a fitted model on (X, y), as documented above."""
    if task == "regression":
        return _regression(model.predict(X), y)
    return _classification(model, X, y)


def _regression(predicted: Any, y: Any) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    return {
        "rmse": float(np.sqrt(mean_squared_error(y, predicted))),
        "mae": float(mean_absolute_error(y, predicted)),
        "r2": float(r2_score(y, predicted)),
    }


def _classification(model: Any, X: Any, y: Any) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    predicted = model.predict(X)
    classes = list(getattr(model, "classes_", sorted(set(np.asarray(y).tolist()))))
    binary = len(classes) == 2
    averaging: dict[str, Any] = {"pos_label": classes[-1]} if binary else {"average": "macro"}
    if hasattr(model, "predict_proba"):
        proba = np.asarray(model.predict_proba(X))
        if binary:
            auc = roc_auc_score(np.asarray(y) == classes[-1], proba[:, 1])
        elif len(set(np.asarray(y).tolist())) == len(classes):
            auc = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes)
        else:  # a class absent from these rows: one-vs-rest AUC is undefined for it
            auc = float("nan")
    else:
        auc = float("nan")
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted, zero_division=0, **averaging)),
        "roc_auc": float(auc),
        "precision": float(precision_score(y, predicted, zero_division=0, **averaging)),
        "recall": float(recall_score(y, predicted, zero_division=0, **averaging)),
    }


def cross_validated(model: Any, X: Any, y: Any, task: str, folds: int) -> dict[str, float]:
    """Mean of `score` over `folds` folds (stratified for classification; no shuffling, so reproducible)."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    splitter = StratifiedKFold(folds) if task == "classification" else KFold(folds)
    per_fold: list[dict[str, float]] = []
    for train_idx, test_idx in splitter.split(X, y):
        fitted = clone(model).fit(X.iloc[train_idx], y.iloc[train_idx])
        per_fold.append(score(fitted, X.iloc[test_idx], y.iloc[test_idx], task))
    names = per_fold[0].keys() if per_fold else ()
    return {name: float(np.nanmean([s[name] for s in per_fold])) for name in names}
