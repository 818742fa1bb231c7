"""Where the dashboards' API client takes its settings from: environment, key file, the project's .env."""

from __future__ import annotations

import pytest

from dashboards.client import ApiError, PlatformClient


@pytest.fixture
def clean_env(project, monkeypatch):
    for key in ("DASHBOARD_API_URL", "DASHBOARD_API_KEY", "DASHBOARD_API_KEY_FILE"):
        monkeypatch.delenv(key, raising=False)
    return project


def test_environment_wins_over_the_project_env_file(clean_env, monkeypatch):
    (clean_env / ".env").write_text(
        "DASHBOARD_API_URL=http://from-dotenv:8000\nDASHBOARD_API_KEY=dotenv-key\n"
    )
    client = PlatformClient.from_env()
    assert client.base_url == "http://from-dotenv:8000" and client._http.headers["X-API-Key"] == "dotenv-key"
    monkeypatch.setenv("DASHBOARD_API_KEY", "env-key")
    assert PlatformClient.from_env()._http.headers["X-API-Key"] == "env-key"


def test_key_file_is_read_and_an_unreadable_one_is_named(clean_env, monkeypatch):
    secret = clean_env / "dashboard_api_key"
    secret.write_text("file-key\n")
    monkeypatch.setenv("DASHBOARD_API_KEY_FILE", str(secret))
    client = PlatformClient.from_env()
    assert client.base_url == "http://127.0.0.1:8000" and client._http.headers["X-API-Key"] == "file-key"
    monkeypatch.setenv("DASHBOARD_API_KEY_FILE", str(clean_env / "missing"))
    with pytest.raises(ApiError, match="DASHBOARD_API_KEY_FILE .*missing cannot be read"):
        PlatformClient.from_env()


def test_a_dashboard_without_a_readable_key_shows_why(clean_env, monkeypatch):
    from dashboards.forms import prediction_form
    from dashboards.job_board import job_board
    from dashboards.monitoring import monitoring

    monkeypatch.setenv("DASHBOARD_API_KEY_FILE", str(clean_env / "missing"))
    for page in (prediction_form(), monitoring(), job_board()):
        assert "cannot be read" in page.children[1].value


def test_a_wrong_setting_is_named(clean_env, monkeypatch):
    from dashboards.settings import SettingsError, load_settings

    monkeypatch.setenv("DASHBOARD_REFRESH_SECONDS", "-1")
    with pytest.raises(SettingsError, match="DASHBOARD_REFRESH_SECONDS"):
        load_settings()
    with pytest.raises(ApiError, match="DASHBOARD_REFRESH_SECONDS"):
        PlatformClient.from_env()


def test_banners_say_what_is_wrong_and_what_to_do():
    from dashboards.widgets import api_banner

    no_model = api_banner(ApiError(503, "no model is loaded yet (models:/m@champion): not found"))
    assert "No champion model is being served yet" in no_model and "make demo" in no_model
    down = api_banner(ApiError(None, "the API at http://127.0.0.1:1 cannot be reached: refused"))
    assert "The API cannot be reached" in down and "DASHBOARD_API_URL" in down
    assert "refused this dashboard's key" in api_banner(ApiError(403, "this API key has scope read"))
    assert "&lt;script&gt;" in api_banner(ApiError(500, "<script>"))  # the API's text is escaped
