"""Property-based run over the app's OpenAPI schema (schemathesis strategies + hypothesis): no 5xx.

Every operation of the live schema is called with generated valid and invalid parameters and bodies,
with a write key (so requests reach the handlers) and without one. The request body schema of
/v1/predict is the served model's signature, so generated rows reach the model too. (schemathesis'
pytest plugin does not load under pytest 9 here, so the strategies are driven by hypothesis directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.serve.conftest import WRITE_KEY

EXAMPLES = 30


def _send(client, case, key):
    kwargs = case.as_transport_kwargs(base_url="http://testserver")
    headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "x-api-key"}
    headers["X-API-Key"] = key
    kwargs.pop("timeout", None)
    kwargs.pop("allow_redirects", None)
    kwargs.pop("cookies", None)
    if "data" in kwargs and isinstance(kwargs["data"], (bytes, str)):
        kwargs["content"] = kwargs.pop("data")
    return client.request(headers=headers, **kwargs)


def test_no_operation_answers_5xx(app_client):
    schema = schemathesis.openapi.from_dict(app_client.get("/openapi.json").json())
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    tried: dict[str, set[int]] = {}

    for operation in operations:
        check(app_client, operation, tried)
    # the run reached the handlers, not only the authentication
    assert 200 in tried["POST /v1/predict"] and 422 in tried["POST /v1/predict"]
    assert tried["GET /v1/jobs"] >= {200}


def check(app_client, operation, tried: dict[str, set[int]]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    from hypothesis import strategies as st

    cases = [operation.as_strategy(mode) for mode in schemathesis.GenerationMode]
    for_operation = st.one_of(*cases)

    @given(case=for_operation)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=True,
    )
    def run(case):
        for key in (WRITE_KEY, ""):
            response = _send(app_client, case, key)
            tried.setdefault(label, set()).add(response.status_code)
            assert response.status_code < 500, (
                label,
                case.path_parameters,
                case.query,
                case.body,
                response.text[:400],
            )
            assert response.headers.get("x-trace-id")

    run()
