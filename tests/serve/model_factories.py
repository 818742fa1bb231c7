"""Models of every kind the API serves, built and registered in a temporary MLflow store (no notebook runs).

- `churn`: a scikit-learn Pipeline (ColumnTransformer: one-hot strings, scaled numbers, booleans) on a
  generated mixed-type table, string labels "no"/"yes", logged as 03_train logs (cloudpickle, signature
  from the raw columns, input example, `metadata={"jobrunner": ...}`). Serves on the pyfunc path.
- `price`: a numeric regressor (Ridge) without jobrunner metadata: the sklearn fast path.
- `greeter`: a `mlflow.pyfunc.PythonModel` taking a string, a datetime, an optional string, binary, float
  and integer columns and `params`; it answers a string per row (anything-else models).
Each registered model has two versions (different fits) and alias `champion` on version 1.
`log_penguin_classifier` is the dashboards' mixed-type model (tests/dashboards/conftest.py), logged by the
same `log_classifier` as churn. Also used by bench/serve_bench.py.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

PLANS = ["basic", "plus", "pro"]
REGIONS = ["north", "south", "east", "west"]


class Greeter(mlflow.pyfunc.PythonModel):
    """A non-scikit-learn model: one string per row from all column types and two params."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> list[str]:
        params = params or {}
        greeting, times = params.get("greeting", "hello"), int(params.get("times", 1))
        out = []
        for row in model_input.itertuples(index=False):
            nick = row.nickname if isinstance(row.nickname, str) else "-"
            out.append(
                f"{greeting} {row.name.upper()}"
                + "!" * times
                + f" born {pd.Timestamp(row.born).year} nick={nick} photo={len(row.photo)}B"
                f" score={float(row.score):.2f} visits={int(row.visits)}"
            )
        return out


def churn_table(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "tenure_months": rng.uniform(0, 72, n),
            "monthly_charges": rng.uniform(10, 120, n),
            "support_calls": rng.integers(0, 10, n).astype("int64"),
            "plan": rng.choice(PLANS, n),
            "region": rng.choice(REGIONS, n),
            "paperless": rng.random(n) < 0.5,
        }
    )
    risk = (
        -0.05 * X.tenure_months
        + 0.03 * X.monthly_charges
        + 0.4 * X.support_calls
        + X.plan.map({"basic": 0.8, "plus": 0.0, "pro": -0.8})
        + 0.5 * X.paperless
        - 0.5
    )
    y = pd.Series(np.where(risk + rng.normal(0, 0.5, n) > 0, "yes", "no"), name="churned")
    return X, y


def churn_row(i: int = 0) -> dict[str, Any]:
    X, _ = churn_table(50, seed=7)
    row = X.iloc[i].to_dict()
    return {
        "tenure_months": float(row["tenure_months"]),
        "monthly_charges": float(row["monthly_charges"]),
        "support_calls": int(row["support_calls"]),
        "plan": str(row["plan"]),
        "region": str(row["region"]),
        "paperless": bool(row["paperless"]),
    }


def greeter_row(**overrides: object) -> dict:
    """A valid greeter row; an override of `...` drops that column."""
    row = {
        "name": "ann",
        "born": "1990-05-01T08:30:00",
        "nickname": "annie",
        "photo": base64.b64encode(b"\x89PNG-bytes").decode(),
        "score": 0.25,
        "visits": 3,
    }
    row.update(overrides)
    return {k: v for k, v in row.items() if v is not ...}


def _log_churn(C: float) -> str:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = churn_table(600)
    pre = ColumnTransformer(
        [
            ("num", StandardScaler(), ["tenure_months", "monthly_charges", "support_calls"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan", "region"]),
            ("bool", "passthrough", ["paperless"]),
        ]
    )
    model = Pipeline([("pre", pre), ("clf", LogisticRegression(C=C, max_iter=1000))]).fit(X, y)
    features = [
        {"name": "tenure_months", "kind": "numeric"},
        {"name": "monthly_charges", "kind": "numeric"},
        {"name": "support_calls", "kind": "numeric"},
        {"name": "plan", "kind": "categorical", "categories": sorted(PLANS)},
        {"name": "region", "kind": "categorical", "categories": sorted(REGIONS)},
        {"name": "paperless", "kind": "boolean"},
    ]
    return log_classifier(model, X, y, target="churned", features=features, run_name=f"churn-C{C}")


def log_classifier(
    model: Any, X: pd.DataFrame, y: pd.Series, *, target: str, features: list[dict[str, Any]], run_name: str
) -> str:
    """Log a fitted scikit-learn classifier as 03_train does: cloudpickle, signature from the raw columns,
    input example, the jobrunner contract (`metadata={"jobrunner": ...}`); returns its model URI."""
    from mlflow.models import infer_signature

    with mlflow.start_run(run_name=run_name):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            input_example=X.head(3),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
            metadata={
                "jobrunner": {
                    "task": "classification",
                    "target": target,
                    "classes": sorted(set(y)),
                    "features": features,
                }
            },
        )
    return info.model_uri


def penguin_frame(rows: int = 240) -> pd.DataFrame:
    """A small penguin table: a number, a categorical and a boolean column, and the species to predict."""
    rng = np.random.default_rng(5)
    species = rng.choice(["Adelie", "Chinstrap", "Gentoo"], rows)
    island = np.where(species == "Gentoo", "Biscoe", rng.choice(["Dream", "Torgersen"], rows))
    return pd.DataFrame(
        {
            "bill_length": (38 + 6 * (species != "Adelie") + rng.normal(0, 1.5, rows)).round(1),
            "island": island,
            "tagged": rng.random(rows) < 0.4,
            "species": species,
        }
    )


def log_penguin_classifier(frame: pd.DataFrame) -> str:
    """A Pipeline on raw columns (numeric, categorical, boolean) fitted on `frame`, logged with
    `log_classifier`; returns its model URI (the dashboards' mixed-type model)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    X, y = frame.drop(columns=["species"]), frame["species"]
    model = make_pipeline(
        ColumnTransformer(
            [
                ("num", StandardScaler(), ["bill_length"]),
                ("cat", OneHotEncoder(handle_unknown="ignore"), ["island", "tagged"]),
            ]
        ),
        LogisticRegression(max_iter=1000),
    ).fit(X, y)
    features = [
        {"name": "bill_length", "kind": "numeric"},
        {"name": "island", "kind": "categorical", "categories": sorted(X["island"].unique().tolist())},
        {"name": "tagged", "kind": "boolean"},
    ]
    return log_classifier(model, X, y, target="species", features=features, run_name="dashboard-mixed")


def _log_price(alpha: float) -> str:
    from mlflow.models import infer_signature
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"area_m2": rng.uniform(20, 200, 300), "rooms": rng.uniform(1, 7, 300)})
    y = 3000 * X.area_m2 + 10000 * X.rooms + rng.normal(0, 5000, 300)
    model = Ridge(alpha=alpha).fit(X, y)
    with mlflow.start_run(run_name=f"price-a{alpha}"):
        info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(X, model.predict(X)),
            serialization_format="cloudpickle",
            pip_requirements=["scikit-learn", "cloudpickle"],
        )
    return info.model_uri


def _log_greeter() -> str:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    signature = ModelSignature(
        inputs=Schema(
            [
                ColSpec("string", "name"),
                ColSpec("datetime", "born"),
                ColSpec("string", "nickname", required=False),
                ColSpec("binary", "photo"),
                ColSpec("float", "score"),
                ColSpec("integer", "visits"),
            ]
        ),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("greeting", "string", "hello"), ParamSpec("times", "long", 1)]),
    )
    with mlflow.start_run(run_name="greeter"):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Greeter(), signature=signature, pip_requirements=["pandas"]
        )
    return info.model_uri


@dataclass
class ServingStore:
    project: Path
    tracking_uri: str
    versions: dict[str, tuple[str, str]]  # model -> (version 1, version 2)


def build_serving_store(project: Path) -> ServingStore:
    """Register churn, price and greeter (two versions each, champion on the first) in `project`."""
    import cloudpickle
    from mlflow.tracking import MlflowClient

    import tests.serve.model_factories as me

    # Greeter is pickled by value so that any process (ours, `mlflow models serve`) loads it unimported.
    cloudpickle.register_pickle_by_value(me)
    project.mkdir(parents=True, exist_ok=True)
    (project / "dvc.yaml").write_text("stages: {}\n")
    tracking = f"sqlite:///{project / 'mlflow.db'}"
    from tests.fixtures.mlflow_state import mlflow_store

    client = MlflowClient(tracking, registry_uri=tracking)
    versions = {}
    with mlflow_store(tracking):  # logged and registered here; no MLflow URI exported to later tests
        mlflow.set_experiment("serve-models-tests")
        uris = {
            "churn": (_log_churn(1.0), _log_churn(0.001)),
            "price": (_log_price(1.0), _log_price(5000.0)),
            "greeter": (_log_greeter(), _log_greeter()),
        }
        for name, (a, b) in uris.items():
            v1, v2 = mlflow.register_model(a, name), mlflow.register_model(b, name)
            client.set_registered_model_alias(name, "champion", v1.version)
            versions[name] = (str(v1.version), str(v2.version))
    return ServingStore(project, tracking, versions)


_STORES: dict[str, ServingStore] = {}


def shared_serving_store(tmp_path_factory: Any) -> ServingStore:
    """One store per test session, whichever test module asks first (building it takes ~25 s)."""
    if "store" not in _STORES:
        _STORES["store"] = build_serving_store(tmp_path_factory.mktemp("serving-store"))
    return _STORES["store"]


def start_api(store: ServingStore, tmp: Path, env_extra: dict[str, str], deadline_s: float = 300) -> Any:
    """A real uvicorn serving `store` (tests/serve/conftest.start_server)."""
    from tests.serve.conftest import start_server

    return start_server(store, tmp, env_extra, deadline_s)
