"""The Voila dashboards' widgets: a prediction form, model monitoring (accuracy, traffic, drift), a job board.

Each dashboard notebook in `notebooks/dashboards/` is one call (`display(prediction_form())`), so the
logic lives here, where it is tested. Everything goes through the platform API (`serve.client`), with the
key in DASHBOARD_API_KEY; nothing reads the databases directly. Results and errors are written into HTML
widgets, so what a user sees is exactly the widget's value.

Settings (environment): DASHBOARD_API_URL, DASHBOARD_API_KEY, DASHBOARD_REFERENCE_DATA (the training data
the monitoring compares traffic with: CSV or Parquet, a path relative to the project or an s3:// URI;
default `data/prepared/train.parquet`, written by the pipeline's prepare stage).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as w

from serve.client import ApiError, PlatformClient
from serve.drift import drift_report

DEFAULT_REFERENCE = "data/prepared/train.parquet"
STATE_COLOURS = {
    "QUEUED": "#6b7280",
    "RUNNING": "#2563eb",
    "CANCELLING": "#d97706",
    "SUCCEEDED": "#15803d",
    "FAILED": "#b91c1c",
    "CANCELLED": "#6b7280",
}
DRIFT_COLOURS = {"stable": "#15803d", "watch": "#d97706", "drift": "#b91c1c"}


def _e(value: Any) -> str:
    return html.escape(str(value))


def error_html(message: str) -> str:
    return f'<div class="dash-error" style="color:#b91c1c;white-space:pre-wrap"><b>Error:</b> {_e(message)}</div>'


def _table(headers: list[str], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{c}</td>" for c in r) + "</tr>" for r in rows
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _guarded(target: w.HTML, action: Callable[[], str]) -> None:
    """Run `action` and show its HTML, or the API's explanation of what went wrong."""
    try:
        target.value = action()
    except ApiError as exc:
        target.value = error_html(str(exc))
    except (ValueError, OSError) as exc:
        target.value = error_html(str(exc))


def _connect(api: PlatformClient | None, title: str) -> PlatformClient | w.VBox:
    """The given client, or one from the environment; a page with the reason when that fails."""
    if api is not None:
        return api
    try:
        return PlatformClient.from_env()
    except ApiError as exc:
        return w.VBox([w.HTML(f"<h2>{_e(title)}</h2>"), w.HTML(error_html(str(exc)))])


# -- reference data --------------------------------------------------------------------------------------
def load_reference(path: str | None = None) -> Any:
    """The training data (a pandas DataFrame) the monitoring compares with; ValueError says what is wrong."""
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
    except Exception as exc:  # noqa: BLE001 - unreadable file or bucket: say which
        raise ValueError(f"cannot read the reference data {location}: {exc}") from exc


# -- prediction form -------------------------------------------------------------------------------------
def prediction_form(api: PlatformClient | None = None, defaults: dict[str, float] | None = None) -> w.VBox:
    """One number field per model feature, a Predict button and the answer (class, probabilities, version)."""
    api = _connect(api, "Prediction")
    if isinstance(api, w.VBox):
        return api
    result = w.HTML()
    try:
        info = api.model()
    except ApiError as exc:
        result.value = error_html(str(exc))
        page = w.VBox([w.HTML("<h2>Prediction</h2>"), result])
        page.result = result
        return page
    if defaults is None:
        try:
            defaults = {k: float(v) for k, v in load_reference().median(numeric_only=True).items()}
        except ValueError:
            defaults = {}
    names = [f["name"] for f in info["features"]]
    fields = {
        n: w.FloatText(
            value=round(defaults.get(n, 0.0), 4),
            description=n,
            style={"description_width": "170px"},
            layout=w.Layout(width="300px"),
        )
        for n in names
    }
    button = w.Button(description="Predict", button_style="primary", icon="play")
    model = info["model"]

    def predict() -> str:
        answer = api.predict([{n: f.value for n, f in fields.items()}])
        p = answer["predictions"][0]
        probs = "".join(
            f"<li>class {_e(c)}: {float(v):.4f}</li>" for c, v in sorted(p["probabilities"].items())
        )
        m = answer["model"]
        return (
            f'<div class="dash-result"><h3>Predicted class: {_e(p["label"])}</h3><ul>{probs}</ul>'
            f"<p>model {_e(m['name'])} version {_e(m['version'])} (alias {_e(m['alias'])}), "
            f"prediction id <code>{_e(p['prediction_id'])}</code></p></div>"
        )

    button.on_click(lambda _: _guarded(result, predict))
    header = w.HTML(
        f"<h2>Prediction</h2><p>Model <b>{_e(model['name'])}</b> version <b>{_e(model['version'])}</b> "
        f"(alias {_e(model['alias'])}). Values start at the training data's medians.</p>"
    )
    grid = w.GridBox(list(fields.values()), layout=w.Layout(grid_template_columns="repeat(3, 310px)"))
    form = w.VBox([header, grid, button, result])
    form.fields, form.button, form.result = fields, button, result
    return form


# -- monitoring ------------------------------------------------------------------------------------------
def monitoring_html(api: PlatformClient, reference: Any, window: int = 1000) -> str:
    """Live accuracy, recent traffic by class, and PSI drift of every feature against the training data."""
    acc = api.accuracy()
    recent = api.recent_predictions(limit=window)
    model = recent["model"]
    parts = [
        f"<h3>Model {_e(model['name'])} version {_e(model['version'])} (alias {_e(model['alias'])})</h3>"
    ]
    if acc["accuracy"] is None:
        parts.append(
            f"<p class='dash-accuracy'>Live accuracy: no feedback labels yet (window {acc['window']}).</p>"
        )
    else:
        flag = " - <b style='color:#b91c1c'>below threshold</b>" if acc["below_threshold"] else ""
        parts.append(
            f"<p class='dash-accuracy'>Live accuracy: <b>{acc['accuracy']:.3f}</b> over {acc['labelled']} "
            f"labelled predictions (threshold {acc['threshold']:.2f}){flag}</p>"
        )
    count = recent["count"]
    if not count:
        parts.append("<p class='dash-traffic'>No predictions from this version yet: drift needs traffic.</p>")
        return "".join(parts)
    classes: dict[str, int] = {}
    for label in recent["labels"]:
        classes[str(label)] = classes.get(str(label), 0) + 1
    mix = ", ".join(f"class {_e(c)}: {n} ({n / count:.0%})" for c, n in sorted(classes.items()))
    parts.append(
        f"<p class='dash-traffic'>Last {count} predicted rows ({_e(_short_time(recent['oldest']))} to "
        f"{_e(_short_time(recent['newest']))}): {mix}</p>"
    )
    columns = recent["columns"]
    missing = [c for c in columns if c not in reference.columns]
    if missing:
        parts.append(error_html(f"the reference data has no column(s) {', '.join(missing)}"))
        return "".join(parts)
    current = {c: [row[i] for row in recent["rows"]] for i, c in enumerate(columns)}
    report = drift_report({c: reference[c].to_numpy() for c in columns}, current, columns)
    drifted = sum(d.status == "drift" for d in report)
    watch = sum(d.status == "watch" for d in report)
    parts.append(
        f"<h3>Feature drift (PSI against the training data)</h3><p class='dash-drift-summary'>{drifted} of "
        f"{len(report)} features drifted (PSI &gt; 0.25), {watch} to watch (0.1-0.25).</p>"
    )
    rows = [
        [
            _e(d.feature),
            f"{d.psi:.3f}",
            f"<b style='color:{DRIFT_COLOURS[d.status]}'>{d.status}</b>",
            f"{d.reference_mean:.4g}",
            f"{d.current_mean:.4g}",
        ]
        for d in report
    ]
    parts.append(_table(["feature", "PSI", "status", "training mean", "recent mean"], rows, "dash-drift"))
    return "".join(parts)


def _short_time(value: str | None) -> str:
    if not value:
        return "?"
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")


def monitoring(api: PlatformClient | None = None, reference: Any = None, window: int = 1000) -> w.VBox:
    api = _connect(api, "Model monitoring")
    if isinstance(api, w.VBox):
        return api
    body = w.HTML()
    button = w.Button(description="Refresh", icon="refresh")

    def render() -> str:
        ref = reference if reference is not None else load_reference()
        return monitoring_html(api, ref, window)

    button.on_click(lambda _: _guarded(body, render))
    _guarded(body, render)
    board = w.VBox([w.HTML("<h2>Model monitoring</h2>"), button, body])
    board.body, board.button = body, button
    return board


# -- job board -------------------------------------------------------------------------------------------
def jobs_html(api: PlatformClient, limit: int = 30) -> str:
    page = api.jobs(limit=limit)
    rows = []
    for j in page["items"]:
        p = j["progress"]
        cells = f"{p['cells_done']}/{p['cells_total']}" if p.get("cells_total") else "-"
        error = (j.get("error") or {}).get("message") or ""
        rows.append(
            [
                f"<code>{_e(j['id'][:8])}</code>",
                _e(j["notebook"]),
                f"<b style='color:{STATE_COLOURS.get(j['state'], '#000')}'>{_e(j['state'])}</b>",
                cells,
                _e(j["attempt"]),
                _e(_short_time(j["created_at"])),
                _e(j.get("mlflow_run_id") or ""),
                _e(error[:200]),
            ]
        )
    if not rows:
        return "<p class='dash-jobs'>No jobs yet.</p>"
    return f"<p>{page['total']} job(s), newest first.</p>" + _table(
        ["job", "notebook", "state", "cells", "attempt", "created (UTC)", "MLflow run", "error"],
        rows,
        "dash-jobs",
    )


def job_board(api: PlatformClient | None = None) -> w.VBox:
    """Recent jobs with state and progress; submit a notebook with parameters; cancel a job."""
    api = _connect(api, "Job board")
    if isinstance(api, w.VBox):
        return api
    table, message = w.HTML(), w.HTML()
    try:
        notebooks = api.notebooks()
    except ApiError as exc:
        notebooks = []
        message.value = error_html(str(exc))
    schemas = {nb["notebook"]: nb for nb in notebooks if "/dashboards/" not in nb["notebook"]}
    choose = w.Dropdown(options=sorted(schemas), description="Notebook", layout=w.Layout(width="420px"))
    params = w.Textarea(description="Parameters", layout=w.Layout(width="420px", height="140px"))
    timeout = w.BoundedFloatText(
        value=0, min=0, max=604800, description="Timeout (s)", layout=w.Layout(width="220px")
    )
    submit = w.Button(description="Submit", button_style="primary", icon="play")
    refresh = w.Button(description="Refresh", icon="refresh")
    cancel_id = w.Text(description="Job id", placeholder="full job id", layout=w.Layout(width="420px"))
    cancel = w.Button(description="Cancel job", button_style="warning", icon="stop")

    def fill_defaults(*_: Any) -> None:
        nb = schemas.get(choose.value)
        if nb is not None:
            params.value = json.dumps({p["name"]: p.get("default") for p in nb["parameters"]}, indent=1)

    def show_jobs() -> None:
        _guarded(table, lambda: jobs_html(api))

    def do_submit() -> str:
        try:
            values = json.loads(params.value or "{}")
        except json.JSONDecodeError as exc:
            raise ValueError(f"the parameters are not valid JSON: {exc}") from exc
        if not isinstance(values, dict):
            raise ValueError('the parameters must be a JSON object, e.g. {"n_estimators": 50}')
        job = api.submit(choose.value, values, timeout.value or None)
        show_jobs()
        return f"<p class='dash-ok'>Queued job <code>{_e(job['id'])}</code> ({_e(job['notebook'])}).</p>"

    def do_cancel() -> str:
        job = api.cancel(cancel_id.value.strip())
        show_jobs()
        return f"<p class='dash-ok'>Job <code>{_e(job['id'])}</code> is {_e(job['state'])}.</p>"

    choose.observe(fill_defaults, names="value")
    fill_defaults()
    submit.on_click(lambda _: _guarded(message, do_submit))
    cancel.on_click(lambda _: _guarded(message, do_cancel))
    refresh.on_click(lambda _: show_jobs())
    show_jobs()
    board = w.VBox(
        [
            w.HTML("<h2>Job board</h2>"),
            w.HBox([w.VBox([choose, params, timeout, submit]), w.VBox([cancel_id, cancel])]),
            message,
            refresh,
            table,
        ]
    )
    board.notebook, board.parameters, board.timeout = choose, params, timeout
    board.submit, board.cancel_id, board.cancel = submit, cancel_id, cancel
    board.message, board.table = message, table
    return board
