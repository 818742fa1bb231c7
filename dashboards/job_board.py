"""The job board: a form built from each notebook's parameter schema, jobs with per-row actions.

`GET /v1/notebooks` gives each notebook's parameters (name, type, default, optional, help from the
parameters cell's comments). Each becomes a typed input; parameters whose help starts with "output"
(where the notebook writes) are listed apart as outputs. No notebook is chosen at first, so nothing
destructive (01_ingest overwrites the raw data) is one click away. While any job is queued or running the
table refreshes itself every DASHBOARD_REFRESH_SECONDS, for at most DASHBOARD_REFRESH_FOR_MINUTES after
the last click, so an abandoned page lets Voila cull its kernel. A job's live output (Watch, or the job
just submitted, or else the newest running one) updates below the table as its cells print, and the
schedules are listed with their next run and last outcome, with Pause / Resume (dashboards/board_parts.py).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import ipywidgets as w

from dashboards.board_parts import LiveOutput, ScheduleList, job_notes, previous_runs
from dashboards.client import ApiError, PlatformClient
from dashboards.settings import Settings, SettingsError, load_settings
from dashboards.widgets import (
    CSS,
    STATE_COLOURS,
    api_banner,
    connect,
    e,
    error_html,
    full_id,
    guarded,
    short_time,
)
from jobrunner.limits import MAX_TIMEOUT

ACTIVE = ("QUEUED", "RUNNING", "CANCELLING")
CHOOSE = "(choose a notebook)"
_LAYOUT = w.Layout(width="330px")
_STYLE = {"description_width": "140px"}


def is_output(param: dict[str, Any]) -> bool:
    return str(param.get("help", "")).strip().lower().startswith("output")


def param_input(param: dict[str, Any]) -> w.Widget:
    """A typed input for one notebook parameter (optional ones accept an empty field as None)."""
    ptype, optional = param["type"], param.get("optional", False)
    default: Any = param.get("default")
    common: dict[str, Any] = {
        "description": param["name"],
        "style": _STYLE,
        "layout": _LAYOUT,
        "description_tooltip": param.get("help") or None,
    }
    if ptype == "bool" and not optional:
        return w.Checkbox(value=bool(default), indent=True, **common)
    if ptype == "int" and not optional:
        return w.IntText(value=int(default), **common)
    if ptype == "float" and not optional:
        return w.FloatText(value=float(default), **common)
    if ptype == "str" and not optional:
        return w.Text(value=str(default), **common)
    # optional scalars, lists, dicts, any: text, parsed by type (JSON for lists and dicts)
    shown = "" if default is None else default if ptype == "str" else json.dumps(default)
    return w.Text(value=shown, placeholder="None" if optional else "JSON", **common)


def read_param(param: dict[str, Any], field: w.Widget) -> Any:
    """The field's value in the parameter's type; ValueError names the parameter and the expected type."""
    if not isinstance(field, w.Text):
        return field.value
    text, ptype = field.value.strip(), param["type"]
    if text == "" and param.get("optional"):
        return None
    if ptype == "str":
        return field.value
    try:
        if ptype == "int":
            return int(text)
        if ptype == "float":
            return float(text)
        if ptype == "bool":
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            raise ValueError(text)
        return json.loads(text)
    except (ValueError, json.JSONDecodeError):
        expected = {"int": "a whole number", "float": "a number", "bool": "true or false"}.get(
            ptype, 'a JSON value (e.g. [1, 2] or {"a": 1})'
        )
        raise ValueError(f"parameter '{param['name']}' must be {expected}, got {text!r}") from None


def _help(param: dict[str, Any]) -> str:
    kind = f"{param['type']}{' or None' if param.get('optional') else ''}"
    return f"<span class='dash-muted'>{e(kind)}{' - ' + e(param['help']) if param.get('help') else ''}</span>"


class JobBoard(w.VBox):  # type: ignore[misc]  # ipywidgets ships no types: its VBox is Any
    """The board as a widget; its parts are attributes so tests and scripts can drive it."""

    COLUMNS = 11  # cells per job row of the grid (header row the same)

    def __init__(self, api: PlatformClient, settings: Settings, autorefresh: bool = True):
        self.api, self.settings = api, settings
        self.banner, self.message, self.viewer, self.refresh_note = w.HTML(), w.HTML(), w.HTML(), w.HTML()
        self.schemas: dict[str, dict[str, Any]] = {}
        try:
            notebooks = api.notebooks()
        except ApiError as exc:
            notebooks = []
            self.banner.value = api_banner(exc)
        self.schemas = {nb["notebook"]: nb for nb in notebooks if "/dashboards/" not in nb["notebook"]}
        self.notebook = w.Dropdown(
            options=[(CHOOSE, None), *[(n, n) for n in sorted(self.schemas)]],
            value=None,
            description="Notebook",
            layout=w.Layout(width="460px"),
        )
        self.inputs: dict[str, w.Widget] = {}
        self.form = w.VBox()
        self.timeout = w.BoundedFloatText(
            value=0,
            min=0,
            max=MAX_TIMEOUT,
            description="Time limit (s)",
            style=_STYLE,
            layout=_LAYOUT,
            description_tooltip="0: the workers' own limit",
        )
        self.submit = w.Button(description="Submit", button_style="primary", icon="play", disabled=True)
        self.refresh = w.Button(description="Refresh", icon="refresh")
        self.rows = w.GridBox(
            layout=w.Layout(
                grid_template_columns="auto " * self.COLUMNS, grid_gap="2px 10px", align_items="center"
            )
        )
        self.table = w.HTML()  # the summary line (and the rows as plain text for scripts and tests)
        self._lock = threading.RLock()
        self._last_click = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.autorefresh = autorefresh
        self.live = LiveOutput(api, on_end=self.show_jobs)
        self.schedules = ScheduleList(api, self.message)

        self.notebook.observe(self._build_form, names="value")
        self.submit.on_click(lambda _: self._clicked(lambda: guarded(self.message, self._submit)))
        self.refresh.on_click(lambda _: self._clicked(self._refresh_all))
        super().__init__(
            [
                w.HTML(CSS),
                self.banner,
                w.HTML("<h3 style='margin:6px 0'>Run a notebook</h3>"),
                self.notebook,
                self.form,
                w.HBox([self.timeout, self.submit]),
                self.message,
                w.HTML("<h3 style='margin:14px 0 4px'>Jobs</h3>"),
                w.HBox([self.refresh, self.refresh_note], layout=w.Layout(align_items="center")),
                self.table,
                self.rows,
                self.live,
                w.HTML("<h3 style='margin:14px 0 4px'>Schedules</h3>"),
                self.schedules,
                self.viewer,
            ]
        )
        self.show_jobs()

    # -- the form ---------------------------------------------------------------------------------------
    def _build_form(self, *_: Any) -> None:
        nb = self.schemas.get(self.notebook.value) if self.notebook.value else None
        self.inputs = {}
        if nb is None:
            self.form.children = []
            self.submit.disabled = True
            return
        params: list[w.Widget] = []
        outputs: list[w.Widget] = []
        for p in nb["parameters"]:
            field = param_input(p)
            self.inputs[p["name"]] = field
            (outputs if is_output(p) else params).append(w.HBox([field, w.HTML(_help(p))]))
        parts: list[w.Widget] = []
        if not nb.get("has_parameters_cell"):
            parts.append(
                w.HTML("<p class='dash-muted'>This notebook has no parameters cell: it runs as it is.</p>")
            )
        parts += params
        if outputs:
            parts.append(
                w.HTML(
                    "<p style='margin:8px 0 2px'><b>Outputs</b> <span class='dash-muted'>(where the "
                    "notebook writes; change only to write elsewhere)</span></p>"
                )
            )
            parts += outputs
        self.form.children = parts
        self.submit.disabled = False

    def values(self) -> dict[str, Any]:
        nb = self.schemas[self.notebook.value]
        return {p["name"]: read_param(p, self.inputs[p["name"]]) for p in nb["parameters"]}

    def _submit(self) -> str:
        if not self.notebook.value:
            raise ValueError("choose a notebook first")
        job = self.api.submit(self.notebook.value, self.values(), self.timeout.value or None)
        self.live.watch(job["id"])
        self.show_jobs()
        return f"<p class='dash-ok'>Queued job {full_id(job['id'])} ({e(job['notebook'])}).</p>"

    # -- the table --------------------------------------------------------------------------------------
    def _clicked(self, action: Any) -> None:
        self._last_click = time.monotonic()
        action()

    def _refresh_all(self) -> None:
        self.show_jobs()
        self.schedules.show()

    def show_jobs(self) -> None:
        with self._lock:
            try:
                page = self.api.jobs(limit=30)
            except ApiError as exc:
                self.table.value = api_banner(exc) if exc.unreachable else error_html(str(exc))
                return
            self._render(page)
        running = [j for j in page["items"] if j["state"] == "RUNNING"]
        if self.live.job_id is None and running:
            self.live.watch(running[0]["id"])  # nothing watched yet: the newest running job
        active = any(j["state"] in ACTIVE for j in page["items"])
        self._schedule(active)

    def _render(self, page: dict[str, Any]) -> None:
        for child in self.rows.children:
            child.close()
        cells: list[w.Widget] = [
            w.HTML(f"<b>{h}</b>")
            for h in (
                "job",
                "notebook",
                "state",
                "cells",
                "attempt",
                "created (UTC)",
                "MLflow run",
                "",
                "",
                "",
                "",
            )
        ]
        lines = []
        previous = previous_runs(page["items"])
        for j in page["items"]:
            p = j["progress"]
            progress = f"{p['cells_done']}/{p['cells_total']}" if p.get("cells_total") else "-"
            error = ((j.get("error") or {}).get("message") or "")[:200]
            colour = STATE_COLOURS.get(j["state"], "#000")
            state = f"<b style='color:{colour}' title='{e(error)}'>{e(j['state'])}</b>"
            run = j.get("mlflow_run_id")
            if run and self.settings.mlflow_ui_url:
                url = f"{self.settings.mlflow_ui_url.rstrip('/')}/#/runs/{run}"
                run_html = f"<a href='{e(url)}' target='_blank' rel='noopener'>{full_id(run)}</a>"
            else:
                run_html = full_id(run) if run else "-"
            cancel = w.Button(
                description="Cancel",
                icon="stop",
                button_style="warning",
                disabled=j["state"] not in ACTIVE,
                layout=w.Layout(width="90px"),
            )
            cancel.add_class("dash-cancel")
            open_ = w.Button(
                description="Open",
                icon="file",
                layout=w.Layout(width="80px"),
                disabled=not (j.get("html_uri") or j["state"] in ("SUCCEEDED", "FAILED")),
                tooltip="The executed notebook, below the table",
            )
            open_.add_class("dash-open")
            cancel.on_click(lambda _, jid=j["id"]: self._clicked(lambda: self._cancel(jid)))
            open_.on_click(lambda _, jid=j["id"]: self._clicked(lambda: self._open(jid)))
            watch = w.Button(
                description="Watch",
                icon="eye",
                layout=w.Layout(width="85px"),
                disabled=j["state"] == "CANCELLED" and not j.get("started_at"),
                tooltip="Its output below the table, updating while it runs",
            )
            watch.add_class("dash-watch")
            watch.on_click(lambda _, jid=j["id"]: self._clicked(lambda: self.live.watch(jid)))
            before = previous.get(j["id"])
            diff = w.Button(
                description="Diff",
                icon="columns",
                layout=w.Layout(width="75px"),
                disabled=before is None,
                tooltip="What changed since the previous run of this notebook, below the table",
            )
            diff.add_class("dash-diff")
            diff.on_click(lambda _, a=before, b=run: self._clicked(lambda: self._diff(a, b)))
            cells += [
                w.HTML(full_id(j["id"])),
                w.HTML(e(j["notebook"])),
                w.HTML(
                    state + (f"<div class='dash-muted'>{e(error[:80])}</div>" if error else "") + job_notes(j)
                ),
                w.HTML(progress),
                w.HTML(e(j["attempt"])),
                w.HTML(e(short_time(j["created_at"]))),
                w.HTML(run_html),
                cancel,
                open_,
                watch,
                diff,
            ]
            lines.append(f"{j['id']} {j['notebook']} {j['state']}")
        self.rows.children = cells if lines else []
        self.table.value = (
            f"<p class='dash-jobs' data-jobs='{e(json.dumps(lines))}'>"
            f"{page['total']} job(s), newest first.</p>"
            if lines
            else "<p class='dash-jobs'>No jobs yet.</p>"
        )
        self.lines = lines

    def _cancel(self, job_id: str) -> None:
        def action() -> str:
            job = self.api.cancel(job_id)
            self.show_jobs()
            return f"<p class='dash-ok'>Job {full_id(job['id'])} is {e(job['state'])}.</p>"

        guarded(self.message, action)

    def _open(self, job_id: str) -> None:
        def action() -> str:
            page = self.api.job_notebook_html(job_id)
            # Executed notebooks are untrusted: a sandboxed frame without allow-scripts or
            # allow-same-origin shows them readable while no script in them runs with this origin.
            return (
                f"<h3>Executed notebook of job {full_id(job_id)}</h3>"
                f"<iframe class='dash-notebook' sandbox='' referrerpolicy='no-referrer' srcdoc='{e(page)}' "
                "style='width:100%;height:640px;border:1px solid #e5e7eb;border-radius:6px'></iframe>"
            )

        guarded(self.viewer, action)

    def _diff(self, run_a: str | None, run_b: str | None) -> None:
        def action() -> str:
            page = self.api.run_diff_html(run_a or "", run_b or "")  # GET /v1/runs/{a}/diff/{b}/html
            return (
                f"<h3>Run {full_id(run_a or '')} &rarr; run {full_id(run_b or '')}</h3>"
                f"<iframe class='dash-diff-page' sandbox='' referrerpolicy='no-referrer' srcdoc='{e(page)}' "
                "style='width:100%;height:640px;border:1px solid #e5e7eb;border-radius:6px'></iframe>"
            )

        guarded(self.viewer, action)

    # -- auto-refresh -----------------------------------------------------------------------------------
    def _schedule(self, active: bool) -> None:
        if not self.autorefresh:
            return
        idle = time.monotonic() - self._last_click > self.settings.refresh_for_minutes * 60
        if not active or idle:
            self.refresh_note.value = (
                "<span class='dash-muted'>auto-refresh paused (no click for a while): press Refresh</span>"
                if active
                else "<span class='dash-muted'>no queued or running jobs: auto-refresh off</span>"
            )
            return
        self.refresh_note.value = (
            "<span class='dash-muted dash-autorefresh'>"
            f"auto-refresh every {self.settings.refresh_seconds:g} s "
            "while jobs are queued or running</span>"
        )
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="job-board-refresh", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        # A thread, not the kernel's event loop: widget updates from a thread are sent on the kernel's
        # IOPub thread, and the loop ends by itself when nothing is active or nobody clicked for a while.
        while not self._stop.wait(self.settings.refresh_seconds):
            with self._lock:
                try:
                    page = self.api.jobs(limit=30)
                except ApiError:
                    continue
                self._render(page)
            idle = time.monotonic() - self._last_click > self.settings.refresh_for_minutes * 60
            if idle or not any(j["state"] in ACTIVE for j in page["items"]):
                self._schedule(any(j["state"] in ACTIVE for j in page["items"]))
                return

    def close(self) -> None:
        self._stop.set()
        self.live.stop()
        super().close()


def job_board(api: PlatformClient | None = None, autorefresh: bool = True) -> w.VBox:
    """Recent jobs with state and progress; submit a notebook with typed parameters; cancel, open."""
    client = connect(api)
    if isinstance(client, w.VBox):
        return client
    try:
        settings = load_settings()
    except SettingsError as exc:
        return w.VBox([w.HTML(CSS), w.HTML(error_html(str(exc)))])
    return JobBoard(client, settings, autorefresh)
