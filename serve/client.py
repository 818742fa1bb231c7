"""A small client of the platform API, used by the Voila dashboards (and handy in scripts).

    from serve.client import PlatformClient
    api = PlatformClient.from_env()          # DASHBOARD_API_URL, DASHBOARD_API_KEY
    api.predict([{"mean_radius": 14.1, ...}])

Every non-2xx answer becomes an ApiError whose message is the API's own explanation (for a 422, each
problem with the feature or parameter it names), so a dashboard can show it as it is.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """The API refused a request or could not be reached; `str()` is a message for the user."""

    def __init__(self, status: int | None, message: str):
        self.status = status
        super().__init__(message)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    detail = body.get("detail") if isinstance(body, dict) else None
    problems = body.get("problems") if isinstance(body, dict) else None
    lines = [detail if isinstance(detail, str) else f"HTTP {response.status_code}"]
    for p in problems or []:
        if isinstance(p, dict):
            where = p.get("location")
            lines.append(f"- {where}: {p.get('message')}" if where else f"- {p.get('message') or p}")
    return "\n".join(lines)


def _settings() -> dict[str, str]:
    """DASHBOARD_* from the environment, else from the project's .env (as the other settings)."""
    from dotenv import dotenv_values

    from jobrunner.config import find_project_dir

    try:
        dotenv = {k: v for k, v in dotenv_values(find_project_dir() / ".env").items() if v is not None}
    except OSError:
        dotenv = {}
    return {**dotenv, **{k: v for k, v in os.environ.items() if k.startswith("DASHBOARD_")}}


class PlatformClient:
    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_env(cls) -> PlatformClient:
        """DASHBOARD_API_URL (default http://127.0.0.1:8000) and DASHBOARD_API_KEY, or DASHBOARD_API_KEY_FILE
        (a file holding the key: a Docker secret)."""
        env = _settings()
        key = env.get("DASHBOARD_API_KEY")
        key_file = env.get("DASHBOARD_API_KEY_FILE")
        if not key and key_file:
            try:
                key = open(key_file, encoding="utf-8").read().strip()
            except OSError as exc:
                raise ApiError(None, f"DASHBOARD_API_KEY_FILE {key_file} cannot be read: {exc}") from exc
        return cls(env.get("DASHBOARD_API_URL") or DEFAULT_URL, key)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(None, f"the API at {self.base_url} cannot be reached: {exc}") from exc
        if response.status_code >= 400:
            message = _message(response)
            if response.status_code == 401:
                message += " (set DASHBOARD_API_KEY to a key the API accepts)"
            raise ApiError(response.status_code, message)
        return response.json() if response.content else None

    # -- predictions and the model --------------------------------------------------------------------
    def model(self) -> dict[str, Any]:
        return self._call("GET", "/v1/model")

    def predict(self, rows: list[dict[str, float]]) -> dict[str, Any]:
        return self._call("POST", "/v1/predict", json={"rows": rows})

    def recent_predictions(self, limit: int = 1000) -> dict[str, Any]:
        return self._call("GET", "/v1/predictions", params={"limit": limit})

    def accuracy(self) -> dict[str, Any]:
        return self._call("GET", "/v1/feedback/accuracy")

    # -- jobs -----------------------------------------------------------------------------------------
    def notebooks(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/notebooks")["notebooks"]

    def jobs(self, *, state: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._call("GET", "/v1/jobs", params=params)

    def submit(self, notebook: str, parameters: dict[str, Any], timeout_seconds: float | None = None) -> dict:
        body: dict[str, Any] = {"notebook": notebook, "parameters": parameters}
        if timeout_seconds:
            body["timeout_seconds"] = timeout_seconds
        return self._call("POST", "/v1/jobs", json=body)

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{job_id}")
