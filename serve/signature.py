"""The request schema of one served model version, generated from its MLflow signature.

Every MLflow column type maps to one pydantic type (`FIELD_TYPES`); `create_model` builds the row model
(and the params model) per served version, so request validation, the pandas frame handed to the model
and the OpenAPI schema of the request all come from the same table. A row that does not fit answers a
422 naming the row and the feature (`FeatureError`), as the numeric fast path does.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import date, datetime
from operator import itemgetter
from typing import Annotated, Any

import numpy as np
from pydantic import (
    AllowInfNan,
    Base64Bytes,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    create_model,
)

from serve.errors import FeatureError, Unprocessable

MAX_PROBLEMS = 20
NUMERIC_TYPES = frozenset({"double", "float", "long", "integer"})


def _iso_datetime(value: Any) -> Any:
    # JSON has no datetime: accept ISO 8601 text only (pydantic would also take numbers as epoch seconds).
    if isinstance(value, str | datetime | date):
        return value
    raise ValueError("must be an ISO 8601 date-time string, e.g. 2024-05-01T12:30:00")


# Bounds: beyond them a model's arithmetic (scaling, squares, dot products) overflows float64 to infinity
# and it cannot answer, and an int64 column cannot hold the value; the schema states them, so a request
# that fits the schema gets an answer.
MAX_DOUBLE = 1e150
Double = Annotated[float, Strict(), AllowInfNan(False), Field(ge=-MAX_DOUBLE, le=MAX_DOUBLE)]
Long = Annotated[int, Strict(), Field(ge=-(2**63), le=2**63 - 1)]
# MLflow column type -> pydantic type: the one table validation, the frame and the OpenAPI come from.
FIELD_TYPES: dict[str, Any] = {
    "double": Double,
    "float": Double,
    "long": Long,
    "integer": Long,
    "boolean": Annotated[bool, Strict()],
    "string": Annotated[str, Strict()],
    "datetime": Annotated[datetime, BeforeValidator(_iso_datetime)],
    "binary": Base64Bytes,
}
# MLflow column type -> the numpy/pandas dtype its column is given (what MLflow's own enforcement casts to).
DTYPES: dict[str, Any] = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "string": object,
    "binary": object,
    "datetime": object,  # parsed by pandas.to_datetime, then datetime64[ns]
}
EXPECTED = {
    "double": "a finite number",
    "float": "a finite number",
    "long": "an integer",
    "integer": "an integer",
    "boolean": "true or false",
    "string": "a string",
    "datetime": "an ISO 8601 date-time string",
    "binary": "a base64 string",
}


# MLflow column type -> the Python types (as orjson decodes JSON) that need no further validation: a column
# whose every value has one of them is converted column-wise (RequestSchema.fast_arrays); any other value,
# a missing key or a datetime/binary column takes the per-row pydantic validation, whose 422s name the
# row and the feature. Strict as the row model is: no bool for a number, no int for a bool.
_FAST_TYPES: dict[str, frozenset[type]] = {
    "double": frozenset({float, int}),
    "float": frozenset({float, int}),
    "long": frozenset({int}),
    "integer": frozenset({int}),
    "boolean": frozenset({bool}),
    "string": frozenset({str}),
}


class ColumnRows:
    """Rows kept as the columns they were validated in (signature order), turned into JSON lists only
    when the prediction log's writer serialises them. Every value is already a JSON value."""

    __slots__ = ("cols",)

    def __init__(self, cols: list[tuple[Any, ...]]):
        self.cols = cols

    def tolist(self) -> list[list[Any]]:
        return [list(r) for r in zip(*self.cols, strict=True)]


@dataclass(frozen=True)
class Column:
    """One input column: its MLflow type, whether it may be left out, and what 03_train says it is."""

    name: str
    type: str
    optional: bool = False
    kind: str | None = None  # numeric | boolean | categorical | datetime (model metadata), else None
    categories: tuple[Any, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        cats = list(self.categories) if self.categories is not None else None
        return {
            "name": self.name,
            "type": self.type,
            "optional": self.optional,
            "kind": self.kind,
            "categories": cats,
        }


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Any
    shape: tuple[int, ...] | None = None


def columns_of(signature: Any, jobrunner_meta: dict[str, Any] | None) -> tuple[Column, ...] | None:
    """The named input columns of an MLflow signature; None for no signature or a tensor signature."""
    if signature is None or signature.inputs is None or not signature.inputs.has_input_names():
        return None
    if signature.inputs.is_tensor_spec():
        return None
    described = {f.get("name"): f for f in (jobrunner_meta or {}).get("features", []) if isinstance(f, dict)}
    out = []
    for spec in signature.inputs.inputs:
        t = getattr(spec.type, "name", None)
        if t not in FIELD_TYPES:
            raise Unprocessable(
                f"input column '{spec.name}' has MLflow type {spec.type!s}, which the API does not serve"
            )
        info = described.get(spec.name, {})
        cats = info.get("categories")
        out.append(
            Column(
                name=spec.name,
                type=t,
                optional=not getattr(spec, "required", True),
                kind=info.get("kind") or _default_kind(t),
                categories=tuple(cats) if isinstance(cats, list) else None,
            )
        )
    return tuple(out)


def _default_kind(mlflow_type: str) -> str:
    return {"boolean": "boolean", "string": "categorical", "datetime": "datetime", "binary": "binary"}.get(
        mlflow_type, "numeric"
    )


def params_of(signature: Any) -> tuple[Param, ...]:
    if signature is None or getattr(signature, "params", None) is None:
        return ()
    return tuple(
        Param(p.name, getattr(p.dtype, "name", str(p.dtype)), p.default, tuple(p.shape) if p.shape else None)
        for p in signature.params.params
    )


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_") or "model"


class RequestSchema:
    """Validation and the pandas frame for one model version's columns and params."""

    def __init__(self, title: str, columns: tuple[Column, ...], params: tuple[Param, ...], limit: int):
        self.columns = columns
        self.params = params
        self.names = tuple(c.name for c in columns)
        slug = _slug(title)
        fields: dict[str, Any] = {}
        for c in columns:
            t = FIELD_TYPES[c.type]
            fields[c.name] = (t | None, Field(default=None)) if c.optional else (t, ...)
        self.row_model: type[BaseModel] = create_model(
            f"Row_{slug}",
            __config__=ConfigDict(extra="forbid", title=f"Row ({title})"),
            **fields,
        )
        self.params_model: type[BaseModel] | None = None
        if params:
            pfields: dict[str, Any] = {}
            for p in params:
                t = FIELD_TYPES.get(p.type, Any)
                pfields[p.name] = (list[t] if p.shape else t, Field(default=p.default))  # type: ignore[valid-type]
            self.params_model = create_model(
                f"Params_{slug}", __config__=ConfigDict(extra="forbid"), **pfields
            )
        rows_field = (list[self.row_model], Field(min_length=1, max_length=limit))  # type: ignore[name-defined]
        extra: dict[str, Any] = {}
        if self.params_model is not None:
            extra["params"] = (self.params_model | None, None)
        self.request_model: type[BaseModel] = create_model(
            f"PredictRequest_{slug}",
            __config__=ConfigDict(
                extra="forbid",
                title=f"PredictRequest ({title})",
                json_schema_extra={
                    "description": "Rows as JSON records; a feature's type is its MLflow type"
                },
            ),
            rows=rows_field,
            **extra,
        )
        self._rows = TypeAdapter(list[self.row_model])  # type: ignore[name-defined]
        self._by_name = {c.name: c for c in columns}
        self._name_set = frozenset(self.names)
        self._getter = itemgetter(*self.names) if self.names else None

    # -- rows, column-wise (the common case: every value already of its column's type) --------------------
    def columns_from_records(self, rows: list[Any]) -> list[tuple[Any, ...]] | None:
        """JSON records -> one tuple per column in signature order; None unless every row is an object
        with exactly the signature's keys (then the per-row validation says what is wrong)."""
        n, getter = len(self.names), self._getter
        if not rows or getter is None or not all(type(r) is dict and len(r) == n for r in rows):
            return None
        try:
            if n == 1:
                name = self.names[0]
                return [tuple(r[name] for r in rows)]
            return list(zip(*map(getter, rows), strict=True))
        except KeyError:
            return None

    def columns_from_split(self, columns: Any, data: Any) -> list[tuple[Any, ...]] | None:
        """The compact form -> one tuple per column in signature order; None unless `columns` names every
        feature once and every row is a list of that many values."""
        n = len(self.names)
        if (
            not isinstance(columns, list)
            or len(columns) != n
            or set(columns) != self._name_set
            or not isinstance(data, list)
            or not data
            or not all(type(r) is list and len(r) == n for r in data)
        ):
            return None
        cols = list(zip(*data, strict=True))
        at = {name: i for i, name in enumerate(columns)}
        return [cols[at[name]] for name in self.names]

    def fast_arrays(self, cols: list[tuple[Any, ...]]) -> dict[str, np.ndarray] | None:
        """Columns whose every value has its column's JSON type -> arrays with MLflow's dtypes (what
        `arrays` gives for validated rows); None when any column needs the per-row validation."""
        data: dict[str, np.ndarray] = {}
        for c, values in zip(self.columns, cols, strict=True):
            allowed = _FAST_TYPES.get(c.type)
            if allowed is None or not set(map(type, values)) <= allowed:
                return None
            try:
                if c.type in ("double", "float"):
                    arr = np.array(values, dtype=np.float64)
                    if not (np.abs(arr) <= MAX_DOUBLE).all():  # the schema's bounds (and no NaN/inf)
                        return None
                    data[c.name] = arr if c.type == "double" else arr.astype(np.float32)
                else:
                    data[c.name] = np.array(values, dtype=DTYPES[c.type])
            except (OverflowError, ValueError):  # an integer beyond the column's width
                return None
        return data

    # -- rows -------------------------------------------------------------------------------------------
    def validate(self, rows: list[Any]) -> list[BaseModel]:
        try:
            return self._rows.validate_python(rows)
        except ValidationError as exc:
            raise FeatureError(self._problems(exc), self.names) from None

    def records_from_split(self, columns: Any, data: list[Any]) -> list[Any]:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise FeatureError(
                [
                    {
                        "row": None,
                        "feature": None,
                        "problem": "type",
                        "message": "columns must be a list of names",
                    }
                ],
                self.names,
            )
        if len(set(columns)) != len(columns):
            raise FeatureError(
                [
                    {
                        "row": None,
                        "feature": None,
                        "problem": "duplicate",
                        "message": "columns names a feature twice",
                    }
                ],
                self.names,
            )
        records: list[Any] = []
        for i, row in enumerate(data):
            if not isinstance(row, list) or len(row) != len(columns):
                raise FeatureError(
                    [
                        {
                            "row": i,
                            "feature": None,
                            "problem": "type",
                            "message": f"row {i} must be a list of {len(columns)} values (one per column)",
                        }
                    ],
                    self.names,
                )
            records.append(dict(zip(columns, row, strict=True)))
        return records

    def _problems(self, exc: ValidationError) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        for e in exc.errors(include_url=False):
            loc = e.get("loc", ())
            row = loc[0] if loc and isinstance(loc[0], int) else None
            feature = str(loc[1]) if len(loc) > 1 else None
            kind = e.get("type", "")
            if feature is None:
                problems.append(
                    {
                        "row": row,
                        "feature": None,
                        "problem": "type",
                        "message": f"row {row} must be an object of feature name -> value",
                    }
                )
            elif kind == "missing":
                problems.append(
                    {
                        "row": row,
                        "feature": feature,
                        "problem": "missing",
                        "message": f"row {row}: feature '{feature}' is missing",
                    }
                )
            elif kind == "extra_forbidden":
                problems.append(
                    {
                        "row": row,
                        "feature": feature[:60],
                        "problem": "unknown",
                        "message": f"row {row}: unknown feature '{feature:.60}'; the model takes: "
                        + ", ".join(self.names),
                    }
                )
            else:
                col = self._by_name.get(feature)
                want = f"{EXPECTED[col.type]} (MLflow type {col.type})" if col else "valid"
                problems.append(
                    {
                        "row": row,
                        "feature": feature,
                        "problem": "type",
                        "message": f"row {row}: feature '{feature}' must be {want}, "
                        f"got {e.get('input')!r:.40}",
                    }
                )
            if len(problems) >= MAX_PROBLEMS:
                break
        return problems

    def arrays(self, rows: list[BaseModel]) -> dict[str, Any]:
        """Validated rows -> one array per column in signature order, with MLflow's dtypes."""
        import pandas as pd

        data: dict[str, Any] = {}
        for c in self.columns:
            values = [getattr(r, c.name) for r in rows]
            if c.type == "datetime":
                parsed = pd.to_datetime(pd.Series(values, dtype=object), format="ISO8601")
                data[c.name] = parsed.astype("datetime64[ns]") if parsed.dt.tz is None else parsed
            elif c.optional and c.type in NUMERIC_TYPES and any(v is None for v in values):
                # a missing optional number is NaN in a float column (what MLflow allows)
                data[c.name] = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            else:
                data[c.name] = np.array(values, dtype=DTYPES[c.type])
        return data

    def frame(self, rows: list[BaseModel]) -> Any:
        """Validated rows -> a DataFrame with the signature's column order and MLflow's dtypes."""
        import pandas as pd

        # from numpy arrays, not Series: building the frame costs a quarter as much
        return pd.DataFrame(self.arrays(rows), columns=list(self.names), copy=False)

    # -- params -----------------------------------------------------------------------------------------
    def validate_params(self, params: Any) -> dict[str, Any] | None:
        if self.params_model is None:
            if params is not None and params != {}:  # null or {} mean none; [] or 0 are not params
                raise Unprocessable("this model takes no params; leave 'params' out")
            return None
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise Unprocessable("params must be an object of parameter name -> value")
        try:
            return self.params_model.model_validate(params).model_dump()
        except ValidationError as exc:
            named = ", ".join(
                f"'{'.'.join(str(p) for p in e['loc'])}' ({e['msg']})" for e in exc.errors(include_url=False)
            )
            raise Unprocessable(
                f"invalid params: {named}; see GET /v1/models/<name> for the params"
            ) from None

    # -- OpenAPI ----------------------------------------------------------------------------------------
    def openapi_components(self) -> dict[str, Any]:
        """JSON schemas of the request (and what it refers to) in OpenAPI's components/schemas form."""
        schema = self.request_model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = schema.pop("$defs", {})
        return {self.request_model.__name__: schema, **defs}


def json_value(value: Any) -> Any:
    """A validated cell as a JSON value (the prediction log and GET /v1/predictions)."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _split_form(requests: list[RequestSchema], limit: int) -> dict[str, Any]:
    names = sorted({n for r in requests for n in r.names})
    cell_types = sorted({c.type for r in requests for c in r.columns})
    cell: dict[str, Any] = (
        {"anyOf": [TypeAdapter(FIELD_TYPES[t]).json_schema() for t in cell_types] + [{"type": "null"}]}
        if cell_types
        else {}
    )
    # One model whose columns are all required and of one type: the columns are a permutation of all of
    # its names and each row has one value of that type per column, which the schema can say exactly
    # (a request that fits it is accepted). Otherwise the row length follows `columns`, which it cannot.
    exact = len(requests) == 1 and len(cell_types) == 1 and not any(c.optional for c in requests[0].columns)
    width = {"minItems": len(names), "maxItems": len(names)} if exact else {}
    if exact:
        cell = TypeAdapter(FIELD_TYPES[cell_types[0]]).json_schema()
    return {
        "type": "object",
        "title": "Columns and data",
        "properties": {
            "columns": {
                "type": "array",
                "items": {"type": "string", **({"enum": names} if names else {})},
                "uniqueItems": True,
                "minItems": 1,
                **width,
            },
            "data": {
                "type": "array",
                "items": {"type": "array", "items": cell, **width},
                "minItems": 1,
                "maxItems": limit,
            },
            "params": _params_schema(requests),
        },
        "required": ["columns", "data"],
        # no "additionalProperties": False - other keys are ignored in this form, not refused
    }


def _params_schema(requests: list[RequestSchema]) -> dict[str, Any]:
    """`params` as validate_params takes it: null means none."""
    if len(requests) != 1:
        return {"type": ["object", "null"]}
    model = requests[0].params_model
    if model is None:
        return {
            "anyOf": [{"type": "object", "maxProperties": 0}, {"type": "null"}],
            "description": "This model takes no params",
        }
    return {"anyOf": [{"$ref": f"#/components/schemas/{model.__name__}"}, {"type": "null"}]}


def _invocations(requests: list[RequestSchema], limit: int) -> dict[str, Any]:
    """MLflow's scoring protocol body: exactly one of the formats; tables as this API's rows or columns."""
    formats = ("dataframe_split", "dataframe_records", "instances", "inputs")
    if len(requests) == 1:
        rows: dict[str, Any] = {
            "type": "array",
            "items": {"$ref": f"#/components/schemas/{requests[0].row_model.__name__}"},
            "minItems": 1,
            "maxItems": limit,
        }
        split = _split_form(requests, limit)
        # MLflow's dataframe_split: `columns` may be left out (then the rows are in signature order)
        split = {
            **split,
            "properties": {k: v for k, v in split["properties"].items() if k != "params"},
            "required": ["data"],
        }
        payload = {"dataframe_split": split, "dataframe_records": rows, "instances": rows, "inputs": rows}
    else:  # no model or several behind one path: what MLflow's parser takes
        payload = {
            "dataframe_split": {"type": "object"},
            "dataframe_records": {"type": "array"},
            "instances": {},
            "inputs": {},
        }
    return {
        "title": "InvocationsRequest",
        "description": "MLflow's scoring protocol: exactly one of dataframe_split, dataframe_records, "
        "instances, inputs; optional params",
        "oneOf": [
            {
                "type": "object",
                "title": key,
                "required": [key],
                "properties": {key: payload[key], "params": _params_schema(requests)},
                "not": {"anyOf": [{"required": [other]} for other in formats if other != key]},
            }
            for key in formats
        ],
    }


def _records_form(limit: int) -> dict[str, Any]:
    return {
        "type": "object",
        "title": "Records",
        "description": "Feature name -> value; the names and types are the served model's (no model loaded)",
        "properties": {
            "rows": {"type": "array", "items": {"type": "object"}, "minItems": 1, "maxItems": limit},
            "params": {"type": "object"},
        },
        "required": ["rows"],
    }


def request_components(
    default: RequestSchema | None, served: list[RequestSchema | None], limit: int
) -> dict[str, Any]:
    """OpenAPI components: `PredictRequest` (the default model's version), `ModelPredictRequest` (any
    served model, for /v1/models/{name}/predict) and the generated row/params schemas they refer to."""
    out: dict[str, Any] = {}
    known = [r for r in served if r is not None]
    for r in known:
        out.update(r.openapi_components())

    def one_of(requests: list[RequestSchema], title: str) -> dict[str, Any]:
        forms = [{"$ref": f"#/components/schemas/{r.request_model.__name__}"} for r in requests]
        return {
            "title": title,
            "description": "One or many rows: JSON records, or the compact columns/data form",
            "oneOf": (forms or [_records_form(limit)]) + [_split_form(requests, limit)],
        }

    if default is not None:
        out.update(default.openapi_components())
    out["PredictRequest"] = one_of([default] if default is not None else [], "PredictRequest")
    out["ModelPredictRequest"] = one_of(known, "ModelPredictRequest")
    out["InvocationsRequest"] = _invocations(known, limit)
    return out
