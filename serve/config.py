"""Settings of the API process, from the environment (prefix SERVE_) and `.env`.

Where a value is shared with jobrunner (the MLflow tracking store, the database), the default is taken
from jobrunner's settings so that `make serve` on a laptop talks to the same embedded stores as
`make demo`. Production sets everything explicitly (see `.env.example`).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Scope = Literal["read", "write"]
PLACEHOLDERS = {"change_me", "changeme", "secret", "password", "test", "example"}


@dataclass(frozen=True)
class ApiKey:
    """One accepted key and its scope; the key itself is never logged (repr hides it)."""

    key: str
    scope: Scope

    def __repr__(self) -> str:
        return f"ApiKey(scope={self.scope!r}, key=<{len(self.key)} chars>)"


def parse_api_keys(text: str, origin: str = "SERVE_API_KEYS") -> list[ApiKey]:
    """Parse `key:scope,key:scope` (newlines also separate items; `#` starts a comment line)."""
    keys: list[ApiKey] = []
    items = [
        i.strip() for line in text.splitlines() if not line.strip().startswith("#") for i in line.split(",")
    ]
    for item in items:
        if not item:
            continue
        key, sep, scope = item.rpartition(":")
        if not sep or scope not in ("read", "write") or not key:
            raise ValueError(
                f"{origin}: each item must be 'key:scope' with scope read or write; got an item ending in "
                f"'{item[-6:] if sep else '(no scope)'}'"
            )
        keys.append(ApiKey(key, scope))  # type: ignore[arg-type]
    return keys


class Settings(BaseSettings):
    """API settings; every field can be set as SERVE_<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix="SERVE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production"] = "development"
    # API keys: "key:scope,..." (scope read|write; write implies read) and/or a file with the same items.
    api_keys: str = Field(default="", repr=False)
    api_keys_file: Path | None = None
    # The served model: models:/<model_name>@<model_alias>, re-checked every poll interval (0: never).
    model_name: str = "breast-cancer-classifier"
    model_alias: str = "champion"
    model_poll_interval: float = 10.0
    # More models at once: "name@alias,name@alias" (each under /v1/models/{name}); empty: just the one above.
    # POST /v1/predict serves SERVE_MODEL_NAME if listed here, else the first entry (see serve/models.py).
    models: str = ""
    # Start even when no model can be loaded (/ready answers 503 until one is); False: fail start-up.
    allow_start_without_model: bool = True
    # MLflow tracking store; default: jobrunner's (MLFLOW_TRACKING_URI or the embedded sqlite file).
    mlflow_tracking_uri: str | None = None
    # Public base URL of the MLflow UI for links in lineage (e.g. https://host/mlflow); optional.
    mlflow_ui_url: str | None = None
    # Executed-notebook links in lineage answers open in a browser without a key for this many seconds
    # (signed with a key derived from SERVE_API_KEYS, or with SERVE_LINK_SECRET when replicas hold
    # different keys); see serve/links.py.
    link_ttl: float = Field(default=3600.0, gt=0, le=7 * 86400)
    link_secret: str | None = Field(default=None, repr=False)
    # Database for predictions and feedback; default: jobrunner's job store database.
    database_url: str | None = None
    # Most rows accepted in one prediction request.
    batch_limit: int = Field(default=10_000, ge=1)
    # Prediction log: rows are written in the background in batches of up to this many requests.
    log_batch_size: int = Field(default=500, ge=1)
    log_flush_interval: float = Field(default=0.5, gt=0)
    # Live accuracy over the last `feedback_window` labelled predictions of the served model version;
    # below `feedback_threshold` (with at least `feedback_min_samples` labels) a retraining job is submitted.
    feedback_window: int = Field(default=200, ge=1)
    feedback_threshold: float = Field(default=0.8, ge=0, le=1)
    feedback_min_samples: int = Field(default=20, ge=1)
    # Regressors: live MAE over the same window; above this (with min_samples values) a retraining job is
    # submitted. Unset: regressors report MAE/RMSE but never trigger (the scale is the model's own).
    feedback_mae_threshold: float | None = Field(default=None, gt=0)
    retrain_notebook: str = "notebooks/03_train.ipynb"
    retrain_parameters: dict[str, Any] = Field(default_factory=dict)
    # /metrics needs a read key when True (Prometheus then sends it as X-API-Key).
    metrics_auth: bool = False
    # CORS: allowed origins as a JSON list; empty (the default) means no CORS headers at all.
    cors_origins: list[str] = Field(default_factory=list)
    # OpenTelemetry: OTLP/HTTP endpoint (e.g. http://tempo:4318); unset means spans are not exported.
    otlp_endpoint: str | None = None
    service_name: str = "notebook-jobs-api"
    # Logging: JSON lines on stderr.
    log_level: str = "INFO"
    log_json: bool = True
    # Request logs are only written for requests slower than this (ms) or failing; 0 logs every request.
    access_log_slow_ms: float = 0.0
    # GET /v1/jobs/{id}/events closes a stream with nothing new for this many seconds (the client
    # reconnects with Last-Event-ID); shorter frees a server slot sooner, longer means fewer reconnects.
    events_idle_s: float = Field(default=15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.environment == "production":
            for k in self.keys():
                if k.key.lower() in PLACEHOLDERS or len(k.key) < 16:
                    raise ValueError(
                        "SERVE_API_KEYS holds a placeholder or short key (<16 characters); production "
                        "refuses it: generate one with "
                        "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                    )
            if self.link_secret is not None and (
                self.link_secret.lower() in PLACEHOLDERS or len(self.link_secret) < 16
            ):
                raise ValueError(
                    "SERVE_LINK_SECRET holds a placeholder or short secret (<16 characters); production "
                    "refuses it: generate one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
        return self

    def keys(self) -> list[ApiKey]:
        keys = parse_api_keys(self.api_keys)
        if self.api_keys_file is not None:
            try:
                text = self.api_keys_file.read_text()
            except OSError as exc:
                raise ValueError(f"SERVE_API_KEYS_FILE {self.api_keys_file} cannot be read: {exc}") from exc
            keys += parse_api_keys(text, f"SERVE_API_KEYS_FILE {self.api_keys_file}")
        return keys

    def resolved_tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        from jobrunner.config import get_settings as jr

        return str(jr().mlflow_tracking_uri)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        from jobrunner.config import get_settings as jr

        return str(jr().database_url)

    def project_dir(self) -> Path:
        from jobrunner.config import get_settings as jr

        return jr().project_dir


class KeyRing:
    """The accepted API keys; lookups compare against every key in constant time."""

    def __init__(self, keys: list[ApiKey]):
        self._keys = [(k.key.encode(), k.scope) for k in keys]

    def __len__(self) -> int:
        return len(self._keys)

    def scope_of(self, presented: str) -> Scope | None:
        given = presented.encode()
        found: Scope | None = None
        for key, scope in self._keys:  # no early exit: timing does not tell which key matched
            if hmac.compare_digest(key, given):
                found = "write" if scope == "write" or found == "write" else "read"
        return found


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once. Tests build their own Settings and pass them in."""
    return Settings()
