"""A small client of the platform API, used by the Voila dashboards (and handy in scripts).

    from dashboards.client import PlatformClient
    api = PlatformClient.from_env()          # DASHBOARD_API_URL, DASHBOARD_API_KEY (dashboards.settings)
    api.predict([{"mean_radius": 14.1, ...}])

Every non-2xx answer becomes an ApiError whose message is the API's own explanation (for a 422, each
problem with the feature or parameter it names), so a dashboard can show it as it is. `ApiError.status`
is None when the API could not be reached at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from dashboards.settings import DEFAULT_URL, Settings, SettingsError, load_settings


class ApiError(Exception):
    """The API refused a request or could not be reached; `str()` is a message for the user."""

    def __init__(self, status: int | None, message: str):
        self.status = status
        super().__init__(message)

    @property
    def unreachable(self) -> bool:
        return self.status is None


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


class PlatformClient:
    def __init__(self, base_url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0):
        headers = {"X-API-Key": api_key} if api_key else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> PlatformClient:
        try:
            key = settings.key()
        except SettingsError as exc:
            raise ApiError(None, str(exc)) from exc
        return cls(settings.api_url, key, settings.timeout_seconds)

    @classmethod
    def from_env(cls) -> PlatformClient:
        """DASHBOARD_API_URL (default http://127.0.0.1:8000) and DASHBOARD_API_KEY, or DASHBOARD_API_KEY_FILE
        (a file holding the key: a Docker secret); the environment wins over the project's .env."""
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise ApiError(None, str(exc)) from exc
        return cls.from_settings(settings)

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
        if response.headers.get("content-type", "").startswith("text/html"):
            return response.text
        return response.json() if response.content else None

    def _object(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """A call whose answer is a JSON object (every /v1 answer but the HTML pages)."""
        body = self._call(method, path, **kwargs)
        if not isinstance(body, dict):
            raise ApiError(None, f"{method} {path}: the API at {self.base_url} did not answer a JSON object")
        return body

    def _html(self, method: str, path: str) -> str:
        """A call whose answer is an HTML page (executed notebooks, run diffs)."""
        body = self._call(method, path)
        if not isinstance(body, str):
            raise ApiError(None, f"{method} {path}: the API at {self.base_url} did not answer an HTML page")
        return body

    # -- predictions and the model --------------------------------------------------------------------
    def model(self) -> dict[str, Any]:
        return self._object("GET", "/v1/model")

    def predict(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return self._object("POST", "/v1/predict", json={"rows": rows})

    def feedback(self, prediction_id: str, label: Any) -> dict[str, Any]:
        """The true label (a class value, or the true number for a regressor) of one prediction."""
        return self._object("POST", "/v1/feedback", json={"prediction_id": prediction_id, "label": label})

    def recent_predictions(self, limit: int = 1000) -> dict[str, Any]:
        return self._object("GET", "/v1/predictions", params={"limit": limit})

    def accuracy(self) -> dict[str, Any]:
        return self._object("GET", "/v1/feedback/accuracy")

    # -- monitoring (serve/routes/monitoring.py) --------------------------------------------------------
    def timeline(self, hours: float = 24 * 7) -> dict[str, Any]:
        """Live accuracy over time, prediction volume over time and retraining events of the served model."""
        return self._object("GET", "/v1/monitoring/timeline", params={"hours": hours})

    def versions(self) -> dict[str, Any]:
        """The registered versions of the served model: champion history with promotion metrics."""
        return self._object("GET", "/v1/monitoring/versions")

    # -- jobs -----------------------------------------------------------------------------------------
    def notebooks(self) -> list[dict[str, Any]]:
        notebooks = self._object("GET", "/v1/notebooks")["notebooks"]
        if not isinstance(notebooks, list):
            raise ApiError(None, f"GET /v1/notebooks: the API at {self.base_url} did not answer a list")
        return notebooks

    def jobs(self, *, state: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        return self._object("GET", "/v1/jobs", params=params)

    def submit(
        self, notebook: str, parameters: dict[str, Any], timeout_seconds: float | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"notebook": notebook, "parameters": parameters}
        if timeout_seconds:
            body["timeout_seconds"] = timeout_seconds
        return self._object("POST", "/v1/jobs", json=body)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """POST /v1/jobs/{id}/cancel; an older API took DELETE /v1/jobs/{id} (used when POST has no route)."""
        try:
            return self._object("POST", f"/v1/jobs/{job_id}/cancel")
        except ApiError as exc:
            if not (exc.status == 405 or (exc.status == 404 and str(exc).strip() == "Not Found")):
                raise  # the API's own answer (no such job, already finished)
            body = self._call("DELETE", f"/v1/jobs/{job_id}")
            return body if isinstance(body, dict) else {}  # an older API may answer 204, no body

    def follow_job(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """The job's server-sent events (GET /v1/jobs/{id}/events) as dicts with their `type` (state,
        progress, event, output, end) until the job ends; a stream the API closes while the job runs (idle)
        is reopened where it left off (Last-Event-ID). ApiError if the stream cannot be opened."""
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)  # the stream idles between outputs
        cursor: str | None = None
        while True:
            headers = {"Last-Event-ID": cursor} if cursor else {}
            try:
                with self._http.stream(
                    "GET",
                    f"/v1/jobs/{job_id}/events",
                    params={"after": after},
                    headers=headers,
                    timeout=timeout,
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ApiError(response.status_code, _message(response))
                    data: list[str] = []
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            data.append(line[5:].lstrip(" "))
                        elif line.startswith("id:"):
                            cursor = line[3:].strip()
                        elif line == "" and data:
                            event = json.loads("\n".join(data))
                            data = []
                            yield event
                            if event.get("type") == "end":
                                return
            except httpx.HTTPError as exc:
                raise ApiError(None, f"the API at {self.base_url} cannot be reached: {exc}") from exc

    # -- schedules --------------------------------------------------------------------------------------
    def schedules(self, limit: int = 50) -> dict[str, Any]:
        return self._object("GET", "/v1/schedules", params={"limit": limit})

    def schedule(self, schedule_id: str, runs: int = 1) -> dict[str, Any]:
        """One schedule with its newest `runs` runs (the job of each slot and its state, or a skip)."""
        return self._object("GET", f"/v1/schedules/{schedule_id}", params={"runs": runs})

    def pause_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/schedules/{schedule_id}/pause")

    def resume_schedule(self, schedule_id: str) -> dict[str, Any]:
        return self._object("POST", f"/v1/schedules/{schedule_id}/resume")

    def job_notebook_html(self, job_id: str) -> str:
        return self._html("GET", f"/v1/jobs/{job_id}/notebook")

    def run_notebook_html(self, run_id: str) -> str:
        return self._html("GET", f"/v1/runs/{run_id}/notebook")

    def run_diff_html(self, run_a: str, run_b: str) -> str:
        return self._html("GET", f"/v1/runs/{run_a}/diff/{run_b}/html")
