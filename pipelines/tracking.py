"""The local model copy (a DVC output) and the MLflow model it was saved from, linked by content hash.

The DVC-tracked outputs must be byte-identical across identical runs, so they cannot name a run id or
a model id. Instead 03_train tags its MLflow run with the md5 of `models/model` (DVC's own `.dir` hash)
and the URI of the model it logged; 04_evaluate hashes the copy it is given and asks MLflow which run
produced it. The link survives `dvc checkout`/`dvc pull`/DVC's run cache: the hash names the content.

The local copy itself is made stable here: MLflow writes the creation time and a random model uuid
into `MLmodel`; those stay in the MLflow run's copy only.

The model is saved with cloudpickle, on purpose (skops refuses the tree ensembles unless each type is
trusted by hand). MLflow warns about that at every save: 03_train saves twice (the MLflow run's copy and
the local one), so every executed notebook repeated the same paragraph. Importing this module replaces
MLflow's warning with one line that says what we chose and what it means, once per process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from jobrunner.execution.hashing import dir_md5
from jobrunner.tags import MODEL_MD5_TAG, MODEL_URI_TAG

VOLATILE_MLMODEL_KEYS = ("utc_time_created", "model_uuid", "run_id", "model_id", "artifact_path")


PICKLE_NOTE = (
    "model saved with cloudpickle (a deliberate choice, see docs/pipeline.md 'Model format'): loading it "
    "runs code, so load models only from this project's registry"
)


class _PickleWarningOnce(logging.Filter):
    """MLflow's cloudpickle warning, replaced by PICKLE_NOTE the first time and dropped after that."""

    def __init__(self) -> None:
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Saving scikit-learn models in the pickle or cloudpickle format"):
            return True
        if self.shown:
            return False
        self.shown = True
        record.msg, record.args = PICKLE_NOTE, ()
        return True


def _install_pickle_note() -> None:
    logger = logging.getLogger("mlflow.sklearn")
    if not any(isinstance(f, _PickleWarningOnce) for f in logger.filters):
        logger.addFilter(_PickleWarningOnce())


_install_pickle_note()


class ModelNotTracked(LookupError):
    """No MLflow run records the local model copy."""


def make_stable(model_dir: Path) -> None:
    """Drop the per-save fields (time, uuid, run and model ids) from MLmodel in a local model copy."""
    mlmodel = model_dir / "MLmodel"
    data = yaml.safe_load(mlmodel.read_text())
    for key in VOLATILE_MLMODEL_KEYS:
        data.pop(key, None)
    mlmodel.write_text(yaml.safe_dump(data, default_flow_style=False, sort_keys=True))


def link(run_id: str, model_dir: Path, model_uri: str, client: Any = None) -> str:
    """Tag the training run with the local copy's hash and the logged model's URI; returns the hash."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    digest = dir_md5(model_dir)
    client.set_tag(run_id, MODEL_MD5_TAG, digest)
    client.set_tag(run_id, MODEL_URI_TAG, model_uri)
    return digest


@dataclass(frozen=True)
class TrackedModel:
    model_uri: str
    run_id: str
    md5: str


def find(model_dir: Path, client: Any = None) -> TrackedModel:
    """The newest run whose logged model has exactly the content of `model_dir`."""
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    digest = dir_md5(model_dir)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = (
        client.search_runs(
            experiments,
            filter_string=f"tags.`{MODEL_MD5_TAG}` = '{digest}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if experiments
        else []
    )
    if not runs:
        raise ModelNotTracked(
            f"no MLflow run in {client.tracking_uri} logged the model in {model_dir} (md5 {digest}); "
            "re-run the train stage (`dvc repro -f train`) against this tracking store"
        )
    run = runs[0]
    return TrackedModel(run.data.tags[MODEL_URI_TAG], run.info.run_id, digest)
