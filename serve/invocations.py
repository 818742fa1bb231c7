"""MLflow's scoring protocol on POST /v1/models/{name}/invocations, as `mlflow models serve` speaks it.

Bodies: exactly one of `dataframe_split`, `dataframe_records`, `instances`, `inputs`, plus optional
`params` (https://mlflow.org/docs/latest/deployment/deploy-model-locally). For a model with named columns
the rows go through the same validation and model path as POST /v1/predict (so a wrong type is a 422
naming the row and feature); anything else (tensor signatures, no signature, type-hint signatures) is
parsed by MLflow's own parser and predicted with MLflow's schema enforcement. The answer is MLflow's own
serialisation of the predict output: `{"predictions": ...}`.
"""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO
from typing import Any

from serve.errors import Unprocessable
from serve.model_loader import Batch, ServingModel, per_row

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def parse_invocation(
    data: Any, model: ServingModel, limit: int, check_size: Callable[[int, int], None]
) -> Batch:
    if not isinstance(data, dict):
        raise Unprocessable(
            "the body must be a JSON object with one of the keys "
            + ", ".join(FORMATS)
            + " (MLflow's scoring protocol)"
        )
    given = [k for k in FORMATS if k in data]
    if len(given) != 1:
        raise Unprocessable(
            f"the body must have exactly one of {', '.join(FORMATS)}; got "
            + (", ".join(given) if given else "none (keys: " + ", ".join(map(str, list(data)[:10])) + ")")
        )
    key = given[0]
    payload, params = data[key], data.get("params")
    records = _records(key, payload, model)
    if records is not None:
        check_size(len(records), limit)
        return model.batch_from_records(records, params)
    return _mlflow_parsed(key, payload, params, model, limit, check_size)


def _records(key: str, payload: Any, model: ServingModel) -> list[Any] | None:
    """The rows as records when the model has named columns and the payload is a table; else None."""
    if model.request is None or model.pyfunc.metadata._is_signature_from_type_hint():
        return None
    if key in ("instances", "inputs") and any(c.type == "binary" for c in model.request.columns):
        # MLflow base64-decodes binary columns in dataframe_* bodies only; under instances/inputs the model
        # gets the text as sent. Its own parser and enforcement give exactly that behaviour.
        return None
    if key == "dataframe_split":
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            raise Unprocessable('dataframe_split must be {"columns": [...], "data": [[...], ...]}')
        columns = payload.get("columns", list(model.features))
        return model.request.records_from_split(columns, payload["data"])
    if isinstance(payload, list) and all(isinstance(r, dict) for r in payload):
        return payload  # dataframe_records, or instances/inputs as a list of records
    if key == "dataframe_records":
        raise Unprocessable("dataframe_records must be a list of objects (feature name -> value)")
    if isinstance(payload, dict) and payload and all(isinstance(v, list) for v in payload.values()):
        lengths = {len(v) for v in payload.values()}
        if len(lengths) != 1:
            raise Unprocessable(f"{key}: every column must have the same number of values")
        names = list(payload)
        return [dict(zip(names, values, strict=True)) for values in zip(*payload.values(), strict=True)]
    return None


def _mlflow_parsed(
    key: str,
    payload: Any,
    params: Any,
    model: ServingModel,
    limit: int,
    check_size: Callable[[int, int], None],
) -> Batch:
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc.scoring_server import infer_and_parse_data

    meta = model.pyfunc.metadata
    try:
        if meta._is_signature_from_type_hint():
            if key != "inputs":
                raise Unprocessable(
                    "this model's signature comes from type hints: send the rows under 'inputs'"
                )
            parsed = payload
        else:
            parsed = infer_and_parse_data({key: payload}, meta.get_input_schema())
    except MlflowException as exc:
        raise Unprocessable(f"the {key} payload cannot be parsed: {exc.message}") from exc
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # MLflow's parser on a malformed body
        raise Unprocessable(f"the {key} payload cannot be parsed: {type(exc).__name__}: {exc}") from exc
    n = len(parsed) if hasattr(parsed, "__len__") else 1
    check_size(n, limit)
    return Batch(n, frame=parsed, params=params, logged=_logged(parsed), enforce=True)


def _logged(parsed: Any) -> Any:
    if hasattr(parsed, "to_numpy"):
        return parsed.to_numpy().tolist()
    return parsed.tolist() if hasattr(parsed, "tolist") else parsed


def predictions_json(raw: Any, n_rows: int) -> tuple[str, list[Any] | None]:
    """MLflow's own serialisation of a predict output, and the per-row values for the prediction log."""
    from mlflow.pyfunc.scoring_server import predictions_to_json

    out = StringIO()
    predictions_to_json(raw, out)  # type: ignore[no-untyped-call]  # MLflow leaves it unannotated
    return out.getvalue(), per_row(raw, n_rows)
