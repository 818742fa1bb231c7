"""MLflow's cloudpickle warning, repeated at every save, is replaced by one deliberate note per process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_cloudpickle_saves_print_one_note(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        import mlflow.sklearn
        from sklearn.linear_model import LogisticRegression
        import pipelines.tracking  # noqa: F401 - what 03_train imports before saving
        model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        for name in ("a", "b"):
            mlflow.sklearn.save_model(model, sys.argv[1] + "/" + name, serialization_format="cloudpickle")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "exercising caution" not in out  # MLflow's paragraph: gone
    assert out.count("model saved with cloudpickle (a deliberate choice") == 1, out
    assert (tmp_path / "a" / "MLmodel").exists() and (tmp_path / "b" / "MLmodel").exists()


def test_without_the_module_mlflow_warns_at_every_save(tmp_path: Path) -> None:
    """The anchor: what the note replaces (if MLflow stops warning, the filter can go)."""
    script = textwrap.dedent(
        """
        import sys
        import mlflow.sklearn
        from sklearn.linear_model import LogisticRegression
        model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
        for name in ("a", "b"):
            mlflow.sklearn.save_model(model, sys.argv[1] + "/" + name, serialization_format="cloudpickle")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (proc.stdout + proc.stderr).count("exercising caution") == 2
