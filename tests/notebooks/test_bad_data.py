"""Users' own data: ingest reads a CSV path; prepare refuses what cannot work, naming column and parameter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from jobrunner.execution.executor import execute
from tests.notebooks.pipeline_runner import copy_notebooks


@pytest.fixture
def pipeline_project(project: Path) -> Path:
    copy_notebooks(project)
    return project


def test_csv_with_an_empty_column_an_identifier_and_one_class_is_refused(pipeline_project: Path) -> None:
    rows = 60
    frame = pd.DataFrame(
        {
            "Mean Radius": [float(i % 7) for i in range(rows)],
            "texture": [None if i % 4 == 0 else 1.0 for i in range(rows)],  # 25% missing: fine by default
            "Notes": [None] * rows,
            "Patient Name": [f"patient {i}" for i in range(rows)],
            "diagnosis": [1] * rows,
        }
    )
    frame.to_csv(pipeline_project / "mine.csv", index=False)

    ingest = execute(
        "notebooks/01_ingest.ipynb",
        {"source": "mine.csv", "target": "diagnosis", "output_path": "raw.parquet"},
        html=False,
    )
    assert ingest.ok, ingest.failure
    raw = pd.read_parquet(pipeline_project / "raw.parquet")
    assert list(raw.columns) == ["mean_radius", "texture", "notes", "patient_name", "target"]
    assert ingest.metrics["rows"] == rows

    prepare = execute(
        "notebooks/02_prepare.ipynb",
        {
            "input_path": "raw.parquet",
            "train_path": "t.parquet",
            "holdout_path": "h.parquet",
            "schema_path": "s.json",
        },
        html=False,
    )
    assert prepare.status == "failed"
    assert prepare.failure.ename == "DataValidationError"
    message = prepare.failure.evalue
    assert "need at least two classes in the label 'diagnosis', found [1]" in message
    assert "column 'notes' is empty (every value is missing): drop it with prepare.drop_columns" in message
    assert "column 'patient_name' has a different value in 100% of rows" in message
    assert "texture" not in message
    assert not (pipeline_project / "t.parquet").exists()


def test_missing_label_column_names_the_columns(pipeline_project: Path) -> None:
    pd.DataFrame({"a": [1.0, 2.0], "b": [0, 1]}).to_csv(pipeline_project / "nolabel.csv", index=False)
    result = execute(
        "notebooks/01_ingest.ipynb",
        {"source": "nolabel.csv", "target": "label", "output_path": "raw.parquet"},
        html=False,
    )
    assert result.status == "failed"
    assert "label column 'label' not in" in result.failure.evalue and "columns: a, b" in result.failure.evalue
    assert "ingest.target" in result.failure.evalue


def test_date_columns_that_are_not_dates_are_named(pipeline_project: Path) -> None:
    pd.DataFrame({"when": ["2024-01-01", "soon"], "y": [0, 1]}).to_csv(
        pipeline_project / "d.csv", index=False
    )
    result = execute(
        "notebooks/01_ingest.ipynb",
        {"source": "d.csv", "target": "y", "date_columns": ["when"], "output_path": "raw.parquet"},
        html=False,
    )
    assert result.status == "failed"
    assert (
        "column 'when' (ingest.date_columns) has values that are not dates, e.g. 'soon'"
        in result.failure.evalue
    )


def test_no_downloads_only_local_paths_and_s3(pipeline_project: Path) -> None:
    result = execute(
        "notebooks/01_ingest.ipynb",
        {"source": "https://example.invalid/data.csv", "output_path": "raw.parquet"},
        html=False,
    )
    assert result.status == "failed"
    assert "only local paths and s3:// URIs are read" in result.failure.evalue
