"""MLflow's cloudpickle warning, repeated at every save, is replaced by one deliberate note per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAVE_TWICE = textwrap.dedent(
    """
    import sys
    import mlflow.sklearn
    from sklearn.linear_model import LogisticRegression
    if sys.argv[2] == "with-note":
        import pipelines.tracking  # noqa: F401 - what 03_train imports before saving
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    for name in ("a", "b"):  # as 03_train: the run's copy and the local one
        mlflow.sklearn.save_model(model, sys.argv[1] + "/" + name, serialization_format="cloudpickle")
    """
)


@pytest.mark.parametrize(
    ("mode", "paragraphs", "notes"),
    [
        ("with-note", 0, 1),  # what 03_train prints: one line saying what was chosen and why
        ("without", 2, 0),  # the anchor: MLflow alone warns at every save (if it stops, the filter can go)
    ],
)
def test_two_cloudpickle_saves(tmp_path: Path, mode: str, paragraphs: int, notes: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SAVE_TWICE, str(tmp_path), mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert out.count("exercising caution") == paragraphs, out
    assert out.count("model saved with cloudpickle (a deliberate choice") == notes, out
    assert (tmp_path / "a" / "MLmodel").exists() and (tmp_path / "b" / "MLmodel").exists()
