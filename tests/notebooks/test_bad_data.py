"""Users' own data: ingest reads a CSV path; prepare refuses bad data with a message naming the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from jobrunner.executor import execute

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline_project(project: Path) -> Path:
    shutil.copytree(ROOT / "notebooks", project / "notebooks", dirs_exist_ok=True)
    return project


def test_csv_source_with_missing_values_and_one_class_is_refused(pipeline_project: Path) -> None:
    rows = 60
    frame = pd.DataFrame({
        "Mean Radius": [float(i) for i in range(rows)],
        "texture": [None if i % 4 == 0 else 1.0 for i in range(rows)],
        "diagnosis": [1] * rows,
    })
    frame.to_csv(pipeline_project / "mine.csv", index=False)

    ingest = execute("notebooks/01_ingest.ipynb", {"source": "mine.csv", "target": "diagnosis",
                                                   "output_path": "raw.parquet"}, html=False)
    assert ingest.ok, ingest.failure
    raw = pd.read_parquet(pipeline_project / "raw.parquet")
    assert list(raw.columns) == ["mean_radius", "texture", "target"]
    assert ingest.metrics["rows"] == rows

    prepare = execute("notebooks/02_prepare.ipynb", {"input_path": "raw.parquet", "train_path": "t.parquet",
                                                     "holdout_path": "h.parquet"}, html=False)
    assert prepare.status == "failed"
    assert prepare.failure.ename == "DataValidationError"
    assert "missing values above 0.0% in: texture (25.0%)" in prepare.failure.evalue
    assert "need at least two classes, found [1]" in prepare.failure.evalue
    assert not (pipeline_project / "t.parquet").exists()


def test_missing_label_column_names_the_columns(pipeline_project: Path) -> None:
    pd.DataFrame({"a": [1.0, 2.0], "b": [0, 1]}).to_csv(pipeline_project / "nolabel.csv", index=False)
    result = execute("notebooks/01_ingest.ipynb", {"source": "nolabel.csv", "target": "label",
                                                   "output_path": "raw.parquet"}, html=False)
    assert result.status == "failed"
    assert "label column 'label' not in" in result.failure.evalue and "columns: a, b" in result.failure.evalue
