"""The dashboards' settings (pydantic-settings, prefix DASHBOARD_, the project's `.env` for local work).

The environment wins over `.env`; `DASHBOARD_API_KEY_FILE` (a Docker secret) is read only when
`DASHBOARD_API_KEY` is unset. Every problem names the setting to fix.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_REFERENCE = "data/prepared/train.parquet"


class SettingsError(ValueError):
    """A dashboard setting is missing or wrong; `str()` names the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DASHBOARD_", extra="ignore")

    api_url: str = Field(default=DEFAULT_URL, description="The API's base URL")
    api_key: SecretStr | None = Field(default=None, description="The key sent as X-API-Key")
    api_key_file: Path | None = Field(default=None, description="A file holding the key (Docker secret)")
    reference_data: str = Field(
        default=DEFAULT_REFERENCE,
        description="The training data for drift and example rows: CSV or Parquet, project-relative or s3://",
    )
    mlflow_ui_url: str | None = Field(default=None, description="The MLflow UI, for 'open MLflow run' links")
    refresh_seconds: float = Field(default=5.0, gt=0, le=3600, description="Job board auto-refresh period")
    refresh_for_minutes: float = Field(
        default=10.0,
        gt=0,
        description="Auto-refresh stops after this long without a click (so Voila can cull the kernel)",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="HTTP timeout of each API call")

    def key(self) -> str | None:
        """The API key: DASHBOARD_API_KEY, else the content of DASHBOARD_API_KEY_FILE."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        if self.api_key_file is None:
            return None
        try:
            return self.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SettingsError(f"DASHBOARD_API_KEY_FILE {self.api_key_file} cannot be read: {exc}") from exc


def _env_file() -> Path | None:
    from jobrunner.config import find_project_dir

    try:
        path = find_project_dir() / ".env"
    except OSError:
        return None
    return path if path.is_file() else None


def load_settings() -> Settings:
    """Settings from the environment and the project's .env; SettingsError names a wrong value."""
    try:
        return Settings(_env_file=_env_file())  # type: ignore[call-arg]
    except ValidationError as exc:
        problems = "; ".join(
            f"DASHBOARD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise SettingsError(f"invalid dashboard settings: {problems}") from exc
