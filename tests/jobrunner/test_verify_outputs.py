"""An MLflow model saved twice from the same fit differs by md5 (MLmodel's save time and ids) but not by
the digest verification compares; another fit differs by both; the recorded copy is found where the job
stored it (real MLflow save_model, real files)."""

from __future__ import annotations

from pathlib import Path

from jobrunner.execution.hashing import hash_path
from jobrunner.provenance.verify_outputs import recorded_copy, stable_digest


def _save(folder: Path, C: float) -> Path:
    import mlflow.sklearn
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    X, y = load_breast_cancer(return_X_y=True)
    model = LogisticRegression(C=C, max_iter=3000).fit(X, y)
    mlflow.sklearn.save_model(model, str(folder), serialization_format="cloudpickle")
    return folder


def test_the_same_model_saved_twice_compares_equal_and_another_does_not(tmp_path: Path) -> None:
    first, again, other = _save(tmp_path / "a", 1.0), _save(tmp_path / "b", 1.0), _save(tmp_path / "c", 0.1)
    assert hash_path(first, tmp_path).md5 != hash_path(again, tmp_path).md5  # MLmodel: utc_time_created, ...
    assert stable_digest(first) == stable_digest(again)
    assert stable_digest(first) != stable_digest(other)

    # the recorded bytes, found where a job stored them (a local artifact folder) by the recorded md5
    md5 = hash_path(first, tmp_path).md5
    assert md5 is not None
    found = recorded_copy("models/model", md5, tmp_path / "project", str(first), tmp_path / "scratch")
    assert found is not None and stable_digest(found) == stable_digest(again)
    assert (
        recorded_copy(
            "models/model", "0" * 32 + ".dir", tmp_path / "project", str(first), tmp_path / "scratch2"
        )
        is None
    )  # another md5: not the recorded bytes
