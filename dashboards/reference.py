"""The training data the dashboards compare with, and the served model's features as typed input specs.

The API's `GET /v1/model` lists each feature with its MLflow `type` and, for models trained by our
pipeline, its `kind` and `categories`. Where it does not (other MLflow models, an older API), the kind and
the categories come from the reference data's dtypes and values, and last from the MLflow type alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from dashboards.drift import BOOLEAN, CATEGORICAL, DATETIME, NUMERIC, infer_kind
from dashboards.settings import DEFAULT_REFERENCE

MAX_CATEGORIES = 500  # more distinct values than this: a text field instead of a dropdown
_KIND_OF_TYPE = {
    "double": NUMERIC,
    "float": NUMERIC,
    "long": NUMERIC,
    "integer": NUMERIC,
    "boolean": BOOLEAN,
    "string": CATEGORICAL,
    "datetime": DATETIME,
}


@dataclass(frozen=True)
class FeatureSpec:
    name: str
    kind: str  # numeric | boolean | categorical | datetime
    type: str  # the MLflow type (double, long, string, ...), "" when unknown
    optional: bool = False
    categories: list[Any] | None = None
    integer: bool = False
    default: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_reference(path: str | None = None) -> Any:
    """The training data (a pandas DataFrame); ValueError says what is wrong and which setting to change."""
    import pandas as pd

    from jobrunner.config import find_project_dir

    spec = path or os.environ.get("DASHBOARD_REFERENCE_DATA") or DEFAULT_REFERENCE
    location = spec if "://" in spec or os.path.isabs(spec) else str(find_project_dir() / spec)
    if not location.endswith((".csv", ".parquet", ".pq")):
        raise ValueError(f"DASHBOARD_REFERENCE_DATA must be a .csv or .parquet file, got {spec!r}")
    if "://" not in location and not os.path.exists(location):
        raise ValueError(
            f"no reference data at {location}: run the pipeline (`make demo` or `dvc pull`) or set "
            "DASHBOARD_REFERENCE_DATA to the training data"
        )
    try:
        return pd.read_csv(location) if location.endswith(".csv") else pd.read_parquet(location)
    except Exception as exc:
        raise ValueError(f"cannot read the reference data {location}: {exc}") from exc


def feature_specs(model_info: dict[str, Any], reference: Any = None) -> list[FeatureSpec]:
    """Typed input specs of the served model's features (API first, then the reference data)."""
    specs = []
    for f in model_info.get("features", []):
        name, mtype = f["name"], str(f.get("type") or "")
        column = reference[name] if reference is not None and name in reference.columns else None
        kind = f.get("kind") or (infer_kind(column) if column is not None else None)
        kind = kind or _KIND_OF_TYPE.get(mtype, NUMERIC)
        categories = f.get("categories")
        if kind == CATEGORICAL and categories is None and column is not None:
            values = column.dropna().unique().tolist()
            if len(values) <= MAX_CATEGORIES:
                categories = sorted(values, key=str)
        integer = mtype in ("long", "integer") or (
            mtype == "" and column is not None and kind == NUMERIC and str(column.dtype).startswith("int")
        )
        default = None
        if column is not None and column.notna().any():
            if kind == NUMERIC:
                default = float(column.median())
                default = int(round(default)) if integer else round(default, 4)
            elif kind in (CATEGORICAL, BOOLEAN):
                default = column.mode(dropna=True).iloc[0]
            elif kind == DATETIME:
                default = column.dropna().sort_values().iloc[len(column.dropna()) // 2]
        specs.append(
            FeatureSpec(
                name=name,
                kind=kind,
                type=mtype,
                optional=bool(f.get("optional", False)),
                categories=list(categories) if categories is not None else None,
                integer=integer,
                default=default,
            )
        )
    return specs


def target_column(model_info: dict[str, Any], reference: Any) -> str | None:
    """The target in the reference data: the model's own word, else the one column that is no feature."""
    if reference is None:
        return None
    target = model_info.get("target")
    if target and target in reference.columns:
        return str(target)
    names = {f["name"] for f in model_info.get("features", [])}
    others = [c for c in reference.columns if c not in names]
    return str(others[0]) if len(others) == 1 else None
