"""Two parts of the job board: the schedules (next run, last outcome, pause/resume) and a running job's
live output, followed over the API's server-sent events (GET /v1/jobs/{id}/events).

`LiveOutput.watch(job_id)` follows one job in a thread (widget updates from a thread go out on the
kernel's IOPub thread, as the board's auto-refresh does); it shows the job's state and cell progress and
the text its cells print, the newest MAX_SHOWN characters of it, and ends by itself with the job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from dashboards.client import ApiError, PlatformClient
from dashboards.widgets import STATE_COLOURS, api_banner, e, error_html, full_id, guarded, short_time

MAX_SHOWN = 20_000  # characters of live output kept on the page


def job_notes(job: dict[str, Any]) -> str:
    """Under a job's state: the job it reused (a run-cache hit) and the outputs it wrote (hover: paths,
    md5s and where they are stored)."""
    notes = ""
    if job.get("cached_from"):
        notes += (
            f"<div class='dash-muted dash-cached'>cached from "
            f"{full_id(job['cached_from'], 'reuses the execution of job ' + job['cached_from'])}</div>"
        )
    written = [o for o in job.get("outputs") or [] if o.get("md5")]
    if written:
        listing = "\n".join(
            f"{o['parameter']}: {o['path']} ({o['md5']}) -> {o.get('uri') or '?'}" for o in written
        )
        notes += f"<div class='dash-muted dash-outputs' title='{e(listing)}'>{len(written)} output(s)</div>"
    if job.get("kind") == "verify":  # a verification job (jobrunner/worker/verify.py)
        result = job.get("verification") or {}
        verdict = (
            "pending"
            if "reproduced" not in result
            else "reproduced"
            if result["reproduced"]
            else "NOT reproduced"
        )
        differences = "\n".join(result.get("differences") or [])
        notes += (
            f"<div class='dash-muted dash-verify' title='{e(differences)}'>verifies "
            f"{full_id(job.get('verifies') or '')}: {e(verdict)}</div>"
        )
    return notes


def last_outcome(detail: dict[str, Any]) -> str:
    """The newest run of a schedule as HTML: its job's state, or why the slot was skipped or failed."""
    runs = detail.get("runs") or []
    if not runs:
        return "<span class='dash-muted'>no run yet</span>"
    run = runs[0]
    when = e(short_time(run["slot"]))
    if run["status"] == "submitted" and run.get("job_state"):
        colour = STATE_COLOURS.get(run["job_state"], "#000")
        return (
            f"<b style='color:{colour}'>{e(run['job_state'])}</b> {full_id(run['job_id'])} "
            f"<span class='dash-muted'>{when} {e(run['trigger'])}</span>"
        )
    reason = e((run.get("reason") or "")[:120])
    return f"<b>{e(run['status'])}</b> <span class='dash-muted' title='{reason}'>{when} {reason[:60]}</span>"


class ScheduleList(w.VBox):  # type: ignore[misc]  # ipywidgets ships no types: its VBox is Any
    """Schedules by name: notebook, cron and time zone, next run, last outcome, Pause / Resume."""

    HEADERS = ("schedule", "notebook", "cron", "next run (UTC)", "last run", "", "")

    def __init__(self, api: PlatformClient, message: w.HTML):
        self.api, self.message = api, message
        self.rows = w.GridBox(
            layout=w.Layout(
                grid_template_columns="auto " * len(self.HEADERS), grid_gap="2px 10px", align_items="center"
            )
        )
        self.summary = w.HTML()
        self.lines: list[str] = []
        super().__init__([self.summary, self.rows])
        self.show()

    def show(self) -> None:
        try:
            page = self.api.schedules(limit=50)
            details = [self.api.schedule(s["id"], runs=1) for s in page["items"]]
        except ApiError as exc:
            self.summary.value = api_banner(exc) if exc.unreachable else error_html(str(exc))
            return
        for child in self.rows.children:
            child.close()
        cells: list[w.Widget] = [w.HTML(f"<b>{h}</b>") for h in self.HEADERS]
        lines = []
        for s in details:
            paused = s["paused"]
            state = (
                "<b style='color:#b45309'>paused</b>"
                if paused
                else "<span style='color:#15803d'>active</span>"
            )
            nxt = short_time(s["next_run_at"]) if s.get("next_run_at") else "-"
            button = w.Button(
                description="Resume" if paused else "Pause",
                icon="play" if paused else "pause",
                layout=w.Layout(width="95px"),
                tooltip="No slot fires while paused",
            )
            button.add_class("dash-resume" if paused else "dash-pause")
            button.on_click(lambda _, sid=s["id"], p=paused: self._toggle(sid, p))
            cells += [
                w.HTML(f"<b>{e(s['name'])}</b>"),
                w.HTML(e(s["notebook"])),
                w.HTML(f"<code>{e(s['cron'])}</code> <span class='dash-muted'>{e(s['timezone'])}</span>"),
                w.HTML(e(nxt)),
                w.HTML(last_outcome(s)),
                w.HTML(state),
                button,
            ]
            lines.append(f"{s['name']} {'paused' if paused else 'active'} next={nxt}")
        self.rows.children = cells if lines else []
        self.summary.value = (
            f"<p class='dash-schedules'>{page['total']} schedule(s).</p>"
            if lines
            else "<p class='dash-schedules dash-muted'>No schedules (jobrunner schedule create ...).</p>"
        )
        self.lines = lines

    def _toggle(self, schedule_id: str, paused: bool) -> None:
        def action() -> str:
            s = self.api.resume_schedule(schedule_id) if paused else self.api.pause_schedule(schedule_id)
            self.show()
            return (
                f"<p class='dash-ok'>Schedule {e(s['name'])} is {'paused' if s['paused'] else 'active'}.</p>"
            )

        guarded(self.message, action)


class LiveOutput(w.VBox):  # type: ignore[misc]  # ipywidgets ships no types: its VBox is Any
    """The output of one job as it runs (see the module docstring)."""

    def __init__(self, api: PlatformClient, on_end: Callable[[], None] | None = None):
        self.api, self.on_end = api, on_end
        self.header, self.output = w.HTML(), w.HTML()
        self.job_id: str | None = None
        self.text = ""
        self.state: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        super().__init__([self.header, self.output])

    def watch(self, job_id: str) -> None:
        """Follow `job_id` (stops following the previous one)."""
        self.stop()
        self._stop = threading.Event()
        self.job_id, self.text, self.state = job_id, "", None
        self._progress = ""
        self._render()
        self._thread = threading.Thread(
            target=self._follow, args=(job_id, self._stop), daemon=True, name="job-board-live"
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float) -> bool:
        """Block until the followed job ended (tests, scripts); False on timeout."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _follow(self, job_id: str, stop: threading.Event) -> None:
        try:
            for event in self.api.follow_job(job_id):
                if stop.is_set():
                    return
                self._apply(event)
        except ApiError as exc:
            if not stop.is_set():
                self.header.value = error_html(f"live output of job {job_id}: {exc}")
            return
        if not stop.is_set() and self.on_end is not None:
            self.on_end()

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        with self._lock:
            if kind in ("state", "end"):
                self.state = event["state"]
                if kind == "end" and event.get("error"):
                    self.text += f"\n[{event['state']}: {event['error'].get('message') or ''}]\n"
            elif kind == "progress" and event.get("cells_total"):
                self._progress = f"cell {event['cells_done']}/{event['cells_total']}"
            elif kind == "output":
                self.text = (self.text + event["text"])[-MAX_SHOWN:]
            else:
                return
            self._render()

    def _render(self) -> None:
        colour = STATE_COLOURS.get(self.state or "", "#000")
        self.header.value = (
            f"<h3 style='margin:14px 0 4px'>Live output of job {full_id(self.job_id or '')} "
            f"<b class='dash-live-state' style='color:{colour}'>{e(self.state or '...')}</b> "
            f"<span class='dash-muted'>{e(getattr(self, '_progress', ''))}</span></h3>"
        )
        shown = self.text or "(no output yet)"
        self.output.value = (
            "<pre class='dash-live' style='max-height:320px;overflow:auto;background:#0f172a;color:#e2e8f0;"
            f"padding:8px 10px;border-radius:6px;font-size:12px;white-space:pre-wrap'>{e(shown)}</pre>"
        )


def previous_runs(jobs: list[dict[str, Any]]) -> dict[str, str]:
    """For each job with an MLflow run, the run of the next older job of the same notebook (jobs come
    newest first) with another run: what the board's "Diff" compares it with. A cache hit shares its
    source's run, so it is skipped as a partner."""
    before: dict[str, str] = {}
    for i, job in enumerate(jobs):
        run = job.get("mlflow_run_id")
        if not run:
            continue
        for older in jobs[i + 1 :]:
            other = older.get("mlflow_run_id")
            if older["notebook"] == job["notebook"] and other and other != run:
                before[job["id"]] = other
                break
    return before
