"""What 02_prepare refuses (pipelines.validation), each message naming the column and the parameter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.features import infer_kinds
from pipelines.models import build_model, family, infer_task
from pipelines.validation import Limits, check_drop_columns, validate
from tests.fixtures.tables import mixed_table

LIMITS = Limits()


def _labelled(**columns: object) -> pd.DataFrame:
    rows = 60
    frame = pd.DataFrame({"size": np.arange(rows) * 0.5 + 1.0, "target": ["a", "b", "c"] * (rows // 3)})
    for name, values in columns.items():
        frame[name] = values
    return frame


def _problems(frame: pd.DataFrame, task: str = "classification", **limits: float) -> str:
    return "\n".join(
        validate(frame, task=task, target="label", limits=Limits(**limits) if limits else LIMITS)
    )


def test_a_mixed_table_with_missing_values_passes_with_the_defaults() -> None:
    frame = mixed_table(rows=120).rename(columns={"species": "target"}).drop(columns=["weight_gain"])
    assert validate(frame, task="classification", target="species", limits=LIMITS) == []
    assert infer_kinds(frame.drop(columns=["target"])) == {
        "bill_length": "numeric",
        "flipper_length": "numeric",
        "body_mass": "numeric",
        "island": "categorical",
        "sex": "categorical",
        "tagged": "boolean",
        "seen_on": "datetime",
    }


def test_no_label_column() -> None:
    assert "no 'target' column" in _problems(pd.DataFrame({"a": [1.0]}))
    assert "ingest.target" in _problems(pd.DataFrame({"a": [1.0]}))


def test_a_single_class_names_the_label() -> None:
    text = _problems(_labelled().assign(target="a"))
    assert "need at least two classes in the label 'label', found ['a']" in text and "ingest.target" in text


def test_a_rare_class_names_the_class_and_the_parameter() -> None:
    frame = _labelled().assign(target=["a"] * 58 + ["b"] * 2)
    assert "class 'b' of 'label' is 3.3% of rows, below prepare.min_class_fraction=0.05" in _problems(frame)
    assert _problems(frame, min_class_fraction=0.01) == ""


def test_an_empty_column() -> None:
    text = _problems(_labelled(notes=[None] * 60))
    assert "column 'notes' is empty (every value is missing): drop it with prepare.drop_columns" in text


def test_too_many_missing_values_name_the_column_and_the_limit() -> None:
    holes = [None if i % 3 else 1.0 for i in range(60)]  # two thirds missing
    text = _problems(_labelled(weight=holes))
    assert "column 'weight' is 66.7% missing, above prepare.max_missing_fraction=0.5" in text
    assert _problems(_labelled(weight=holes), max_missing_fraction=0.7) == ""


def test_an_identifier_like_text_column() -> None:
    text = _problems(_labelled(name=[f"animal-{i}" for i in range(60)]))
    assert "column 'name' has a different value in 100% of rows" in text and "prepare.drop_columns" in text
    assert "prepare.max_unique_fraction=0.9" in text


def test_a_row_number_column() -> None:
    text = _problems(_labelled(row_id=np.arange(100, 160)))
    assert "column 'row_id' numbers the rows" in text and "prepare.drop_columns" in text
    # whole numbers that are measurements (repeats, gaps) are features
    assert _problems(_labelled(count=np.arange(60) * 3)) == ""


def test_too_few_rows() -> None:
    assert "only 60 labelled rows, fewer than prepare.min_rows=100" in _problems(_labelled(), min_rows=100)


def test_an_unusable_column_type() -> None:
    text = _problems(_labelled(wait=pd.to_timedelta(np.arange(60), unit="s")))
    assert "column 'wait' has type timedelta64" in text and "which no model here can use" in text


def test_regression_needs_a_numeric_varying_label() -> None:
    assert "prepare.task=regression needs a numeric label, but 'label' holds" in _problems(
        _labelled(), "regression"
    )
    single = _labelled().assign(target=3.0)
    assert "the label 'label' has a single value 3.0: nothing to predict" in _problems(single, "regression")


def test_drop_columns_must_name_feature_columns() -> None:
    assert "prepare.drop_columns names ['nope'], not feature columns" in "".join(
        check_drop_columns(_labelled(), ["nope"])
    )
    assert check_drop_columns(_labelled(), ["size"]) == []


@pytest.mark.parametrize(
    ("values", "task"),
    [
        (["a", "b"] * 30, "classification"),
        ([True, False] * 30, "classification"),
        ([0, 1, 2] * 20, "classification"),
        ([0.0, 1.0] * 30, "classification"),
        (list(range(60)), "regression"),
        ([0.5, 1.25] * 30, "regression"),
    ],
)
def test_auto_task_from_the_label(values: list, task: str) -> None:
    assert infer_task(pd.Series(values)) == task


def test_a_family_without_a_model_for_the_task_names_the_choices() -> None:
    with pytest.raises(
        ValueError, match="'logistic_regression' has no regression model; for regression choose"
    ):
        family("logistic_regression", "regression")
    with pytest.raises(ValueError, match="unknown model_type 'svm'"):
        build_model("svm", "classification", {"a": "numeric"}, {})
