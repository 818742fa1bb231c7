"""The executor's MLflow experiment is a model-training experiment, so MLflow's UI opens it on its runs
(MLflow 3 opens an experiment of unknown kind on the GenAI traces page)."""

from __future__ import annotations

from pathlib import Path

from jobrunner.config import get_settings
from jobrunner.execution.executor import execute
from jobrunner.execution.recording import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG


def test_experiment_is_created_as_model_training_and_an_old_one_is_tagged(project: Path) -> None:
    from mlflow.tracking import MlflowClient

    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    result = execute("notebooks/ok.ipynb", {"x": 1})
    assert result.ok
    exp = client.get_experiment_by_name(settings.mlflow_experiment)
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"

    # an experiment made before this existed (or by hand) gets the tag on the next run
    client.delete_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG)
    from jobrunner.execution import recording

    recording._experiment_ids.clear()  # a new process: the id is looked up again
    assert execute("notebooks/ok.ipynb", {"x": 2}).ok
    assert client.get_experiment(exp.experiment_id).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
