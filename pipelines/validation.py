"""What 02_prepare refuses, and why: every problem names the column and the parameter to change.

The table may hold numbers, booleans, text categories and datetimes, with missing values (the model
imputes them). Refused is what cannot work: no label column, labels that give nothing to learn (one
class, one value), an empty column, a column with too many missing values, an identifier (a different
value in (almost) every row), a column type no model can use, too few rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.features import infer_kinds

TARGET = "target"  # the label column as 01_ingest writes it


class DataValidationError(ValueError):
    """The raw table cannot be used; the message lists every problem."""


@dataclass(frozen=True)
class Limits:
    min_rows: int = 50
    min_class_fraction: float = 0.05
    max_missing_fraction: float = 0.5
    max_unique_fraction: float = 0.9


def feature_problems(features: pd.DataFrame, limits: Limits) -> list[str]:
    problems = []
    drop = "drop it with prepare.drop_columns"
    for name, kind in infer_kinds(features).items():
        column = features[name]
        missing = float(column.isna().mean()) if len(column) else 0.0
        if kind is None:
            problems.append(f"column '{name}' has type {column.dtype}, which no model here can use: {drop}")
        elif missing == 1.0:
            problems.append(f"column '{name}' is empty (every value is missing): {drop}")
        elif missing > limits.max_missing_fraction:
            problems.append(
                f"column '{name}' is {missing:.1%} missing, above prepare.max_missing_fraction="
                f"{limits.max_missing_fraction}: raise the limit or {drop}"
            )
        elif (
            kind == "categorical"
            and _unique_fraction(column) > limits.max_unique_fraction
            and len(column) > 1
        ):
            problems.append(
                f"column '{name}' has a different value in {_unique_fraction(column):.0%} of rows, like an "
                f"identifier (above prepare.max_unique_fraction={limits.max_unique_fraction}): {drop}"
            )
        elif kind == "numeric" and _counts_rows(column):
            problems.append(
                f"column '{name}' numbers the rows (one value per row, consecutive), like an "
                f"identifier: {drop}"
            )
    return problems


def _unique_fraction(column: pd.Series) -> float:
    values = column.dropna()
    return values.nunique() / len(values) if len(values) else 0.0


def _counts_rows(column: pd.Series) -> bool:
    """A whole-number column holding each of n consecutive values once: a row number, not a measurement."""
    if not pd.api.types.is_integer_dtype(column.dtype) or column.isna().any() or len(column) < 10:
        return False
    ordered = np.sort(column.to_numpy())
    return bool(np.all(np.diff(ordered) == 1))


def label_problems(labels: pd.Series, task: str, target: str, limits: Limits) -> list[str]:
    values = labels.dropna()
    if values.empty:
        return [f"the label column '{target}' has no values (ingest.target names the label column)"]
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            return [
                f"prepare.task=regression needs a numeric label, but '{target}' holds {values.dtype} values "
                "(set prepare.task=classification or auto)"
            ]
        if values.nunique() < 2:
            return [
                f"the label '{target}' has a single value {values.tolist()[0]!r}: nothing to predict "
                "(ingest.target names the label column)"
            ]
        return []
    counts = values.value_counts()
    if len(counts) < 2:
        return [
            f"need at least two classes in the label '{target}', found {counts.index.tolist()} "
            "(ingest.target names the label column)"
        ]
    rarest = counts.index.tolist()[int(np.argmin(counts.to_numpy()))]
    share = counts.min() / len(values)
    if share < limits.min_class_fraction:
        return [
            f"class {rarest!r} of '{target}' is {share:.1%} of rows, below prepare.min_class_fraction="
            f"{limits.min_class_fraction} (lower it, or collect more rows of that class)"
        ]
    return []


def check_drop_columns(frame: pd.DataFrame, drop_columns: Sequence[str]) -> list[str]:
    unknown = [c for c in drop_columns if c not in frame.columns or c == TARGET]
    if unknown:
        shown = ", ".join(str(c) for c in frame.columns if c != TARGET)
        return [f"prepare.drop_columns names {unknown}, not feature columns of the table (columns: {shown})"]
    return []


def validate(frame: pd.DataFrame, *, task: str, target: str, limits: Limits) -> list[str]:
    """Every problem of the (labelled, drop_columns already removed) table, as messages; empty when usable."""
    if TARGET not in frame.columns:
        return [
            f"no '{TARGET}' column: 01_ingest writes the label column named by ingest.target as '{TARGET}'"
        ]
    features = frame.drop(columns=[TARGET])
    problems = label_problems(frame[TARGET], task, target, limits)
    if features.shape[1] == 0:
        problems.append("no feature columns left (prepare.drop_columns removed them all?)")
    problems += feature_problems(features, limits)
    labelled = int(frame[TARGET].notna().sum())
    if labelled < limits.min_rows:
        problems.append(f"only {labelled} labelled rows, fewer than prepare.min_rows={limits.min_rows}")
    return problems
