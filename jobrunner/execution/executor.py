"""The one code path that runs a notebook: validate, execute in a fresh kernel, record.

Everything that runs a notebook - `jobrunner run`, DVC stages (`python -m pipelines.stage`), queued
jobs in workers - calls `execute()`. It

1. reads the notebook's parameter contract and rejects unknown or ill-typed parameters before anything
   starts (ParameterError);
2. opens an MLflow run, starts a fresh kernel whose environment carries MLFLOW_RUN_ID, and executes with
   papermill, reporting progress per cell and saving the output notebook after every cell;
3. enforces a whole-notebook timeout and honours cancellation: the kernel is interrupted, and killed if
   it has not stopped within a short grace period;
4. records parameters, metrics, the executed notebook (ipynb + HTML), git state and DVC data hashes.

A notebook that raises is a result (status "failed" with the failing cell), not an exception; errors
outside the notebook (kernel start, tracking store) raise InfrastructureError subclasses.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from jobrunner.config import METRICS_FILE_ENV, Settings, get_settings
from jobrunner.errors import InfrastructureError, NotebookFailure
from jobrunner.execution.engine import ENGINE_NAME, last_started_cell, register_engine, source_cell_index
from jobrunner.execution.hashing import DataHash, dvc_lock_digest, git_state, hash_path
from jobrunner.execution.kernels import KernelHandle, acquire_kernel, release_kernel
from jobrunner.execution.outputs import OutputFile, OutputTarget, hash_outputs, input_paths, plan_outputs
from jobrunner.execution.params import read_notebook, schema_from_notebook
from jobrunner.execution.progress import Progress
from jobrunner.kinds import FailureKind, RunStatus
from jobrunner.tags import ENV_PREFIX, OUTPUTS_FOLDER_TAG, STARTED_AT_TAG

if TYPE_CHECKING:
    from nbconvert import HTMLExporter
    from nbformat import NotebookNode

log = logging.getLogger(__name__)

KILL_GRACE_S = 2.0  # after an interrupt, how long a cell may take to stop before the kernel is killed


@dataclass
class ExecutionResult:
    notebook: str
    parameters: dict[str, Any]
    status: RunStatus
    output_path: Path
    html_path: Path | None
    run_id: str | None
    metrics: dict[str, float]
    duration: float
    started_at: datetime
    finished_at: datetime
    failure: NotebookFailure | None = None
    inputs: list[DataHash] = field(default_factory=list)
    outputs: list[DataHash] = field(default_factory=list)
    # what each output parameter wrote, and where (jobrunner/execution/outputs.py)
    output_files: list[OutputFile] = field(default_factory=list)
    output_targets: list[OutputTarget] = field(default_factory=list)
    cached_from: str | None = None  # `cache=True` hit: the MLflow run whose outputs were restored

    @property
    def ok(self) -> bool:
        return self.status == RunStatus.SUCCEEDED

    def as_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "status": self.status,
            "parameters": self.parameters,
            "output_path": str(self.output_path),
            "html_path": str(self.html_path) if self.html_path else None,
            "mlflow_run_id": self.run_id,
            "metrics": self.metrics,
            "duration_s": round(self.duration, 3),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "error": self.failure.as_dict() if self.failure else None,
            "inputs": [h.as_dict() for h in self.inputs],
            "outputs": [h.as_dict() for h in self.outputs],
            "output_files": [f.as_dict() for f in self.output_files],
            "cached_from": self.cached_from,
        }


class CancelToken:
    """Lets another thread (a worker's control loop, a signal handler) stop an execution."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._wakers: list[threading.Event] = []
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()
        for waker in list(self._wakers):
            waker.set()

    def wake_on_cancel(self, event: threading.Event) -> None:
        """Set `event` as well when this token is cancelled (at once if it already is)."""
        self._wakers.append(event)
        if self._event.is_set():
            event.set()

    def forget(self, event: threading.Event) -> None:
        if event in self._wakers:
            self._wakers.remove(event)

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None) -> bool:
        return self._event.wait(timeout)


class _Stop(Exception):
    """Raised at a cell boundary when the execution was cancelled or timed out."""


def execute(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    output_path: str | Path | None = None,
    settings: Settings | None = None,
    timeout: float | None = None,
    inputs: Iterable[str | Path] = (),
    outputs: Iterable[str | Path] = (),
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: CancelToken | None = None,
    record: bool = True,
    html: bool = True,
    extra_env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    kernel_name: str | None = None,
    on_output: Callable[[int, Mapping[str, Any]], None] | None = None,
    outputs_dir: str | Path | None = None,
    write_workspace: bool = False,
    cache: bool = False,
) -> ExecutionResult:
    """Run `notebook` with `parameters` (typed values) and return what happened.

    `inputs`/`outputs` name the data files the run reads and writes (for DVC-compatible hashes); when
    empty, existing files named by string parameters are the inputs and the output parameters (`# output:`)
    the outputs. Without `outputs_dir` outputs are written where the parameters say (the workspace); with
    it (a job's folder) output parameters left at their defaults are pointed into it and paths inside the
    project are refused with ParameterError unless `write_workspace` (jobrunner/execution/outputs.py). The
    kernel's environment is `base_env` (default: this process's) plus the run's variables plus `extra_env`.
    `kernel_name` picks the kernelspec (default: JOBRUNNER_KERNEL_NAME); `on_output(cell_index, output)`
    sees each cell output as the kernel produces it (live output, jobrunner/store/live.py). Raises
    ParameterError / NotebookNotFound / InvalidNotebook before anything runs, InfrastructureError when the
    kernel or the tracking store fails. With `cache` (`jobrunner run --cache`), a recorded run with the
    same run-cache key whose logged outputs still match is reused: its outputs are restored where the
    parameters say and no kernel starts (`cached_from` names that run); a miss logs its outputs for later.
    """
    settings = settings or get_settings()
    project = settings.project_dir
    nb_path = Path(notebook)
    nb_full = nb_path if nb_path.is_absolute() else project / nb_path
    nb_label = _label(nb_full, project)
    nb = read_notebook(nb_full)
    schema = schema_from_notebook(nb, nb_label)
    params = schema.validate(dict(parameters or {}))
    folder = Path(outputs_dir) if outputs_dir is not None else None
    injected, targets = plan_outputs(schema, params, project, folder=folder, write_workspace=write_workspace)

    started_at = datetime.now(UTC)
    stamp = started_at.strftime("%Y%m%dT%H%M%S%fZ")
    runs_dir = settings.runs_dir or project / ".jobrunner" / "runs"  # set by Settings; None only if built raw
    out = Path(output_path) if output_path else runs_dir / f"{nb_full.stem}-{stamp}.ipynb"
    out = out if out.is_absolute() else project / out
    out.parent.mkdir(parents=True, exist_ok=True)
    limit = settings.timeout if timeout is None else timeout
    cancel = cancel or CancelToken()

    # string parameters naming existing files are inputs, defaults included (they are read all the same);
    # output parameters never are, even when an earlier run left their files
    read_paths = [Path(p) for p in inputs] or input_paths(schema, params, project)
    input_hashes = [hash_path(p, project) for p in read_paths]
    git = git_state(project)
    key = None
    if cache and record and folder is None and _outputs_covered(list(outputs), targets, project):
        from jobrunner.execution import runcache

        if not runcache.opted_out(nb):
            key = runcache.cache_key(nb, schema, params, project, read_paths).key
            hit = _cache_hit(settings, key, targets, out, nb_label, params, input_hashes, started_at)
            if hit is not None:
                return hit

    recorder = None
    run_id = None
    if record:
        from jobrunner.execution.recording import Recorder

        recorder = Recorder(
            settings.mlflow_tracking_uri or "", settings.mlflow_experiment, settings.mlflow_artifact_root
        )
        run_tags = {**environment_tags(project), STARTED_AT_TAG: started_at.isoformat(), **(tags or {})}
        if folder is not None and not write_workspace:
            run_tags[OUTPUTS_FOLDER_TAG] = str(folder)
        run_id = recorder.start(
            notebook=nb_label, run_name=run_name or f"{nb_full.stem}-{stamp}", tags=run_tags
        )

    scratch = Path(tempfile.mkdtemp(prefix="jobrunner-"))
    metrics_file = scratch / "metrics.jsonl"
    env = _kernel_env(
        settings,
        run_id,
        {METRICS_FILE_ENV: str(metrics_file), **(extra_env or {})},
        recorder.started_in if recorder else None,
        base_env,
    )
    t0 = time.monotonic()
    try:
        try:
            kernel = acquire_kernel(
                kernel_name or settings.kernel_name,
                env=env,
                cwd=project,
                transport=settings.kernel_transport,
                timeout=settings.kernel_start_timeout,
            )
        except InfrastructureError as exc:
            if recorder and run_id:
                recorder.abort(run_id, str(exc))
            raise
        failure, cancelled = _run(
            nb_full, out, injected, kernel, limit, cancel, on_progress, settings, on_output
        )
        reported = _read_metrics(metrics_file)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    duration = time.monotonic() - t0
    finished_at = datetime.now(UTC)

    html_path = _render_html(out) if html and out.is_file() else None
    output_files = hash_outputs(targets, project)
    explicit_outputs = list(outputs)
    output_hashes = (
        [hash_path(Path(p), project) for p in explicit_outputs]
        if explicit_outputs
        else [f.as_hash() for f in output_files]
    )
    metrics = {m["key"]: float(m["value"]) for m in reported}
    if recorder and run_id:
        metrics = recorder.finish(
            run_id,
            parameters=params,
            git=git,
            inputs=input_hashes,
            outputs=output_hashes,
            dvc_lock_md5=dvc_lock_digest(project),
            artifacts=[p for p in (out, html_path) if p],
            duration=duration,
            failure=failure,
            cancelled=cancelled,
            reported=reported,
        )
    status = RunStatus.CANCELLED if cancelled else (RunStatus.FAILED if failure else RunStatus.SUCCEEDED)
    if key and recorder and run_id and status == RunStatus.SUCCEEDED:
        from jobrunner.execution import runcache

        try:
            runcache.store_run(recorder.client, run_id, key, targets, project)
        except Exception:
            log.warning("run %s: could not store its outputs for the run cache", run_id, exc_info=True)
    return ExecutionResult(
        notebook=nb_label,
        parameters=params,
        status=status,
        output_path=out,
        html_path=html_path,
        run_id=run_id,
        metrics=metrics,
        duration=duration,
        started_at=started_at,
        finished_at=finished_at,
        failure=failure,
        inputs=input_hashes,
        outputs=output_hashes,
        output_files=output_files,
        output_targets=targets,
    )


def environment_tags(project: Path) -> dict[str, str]:
    """The environment digest of the run-cache key as tags (`jobrunner diff` compares them)."""
    from jobrunner.execution import runcache

    return {f"{ENV_PREFIX}{k}": str(v) for k, v in runcache.environment_digest(project).items() if v}


def _outputs_covered(explicit: list[str | Path], targets: list[OutputTarget], project: Path) -> bool:
    """Every declared output (a DVC stage's outs) is an output parameter's file or inside its folder, so a
    run-cache hit can restore it; otherwise the run cache is not used for this execution."""
    locations = [t.location.resolve() for t in targets]
    for out in explicit:
        path = Path(out) if Path(out).is_absolute() else project / out
        path = path.resolve()
        if not any(path == loc or loc in path.parents for loc in locations):
            log.info(
                "run cache not used: output %s is not written through an output parameter (# output:)", out
            )
            return False
    return True


def _cache_hit(
    settings: Settings,
    key: str,
    targets: list[OutputTarget],
    out: Path,
    nb_label: str,
    params: dict[str, Any],
    input_hashes: list[DataHash],
    started_at: datetime,
) -> ExecutionResult | None:
    """The result of a recorded run with `key`, its outputs restored into the workspace; None: a miss."""
    from jobrunner.execution import runcache
    from jobrunner.execution.recording import Recorder

    t0 = time.monotonic()
    recorder = Recorder(
        settings.mlflow_tracking_uri or "", settings.mlflow_experiment, settings.mlflow_artifact_root
    )
    scratch = Path(tempfile.mkdtemp(prefix="jobrunner-cache-"))
    try:
        hit = runcache.restore_run(
            recorder.client, recorder.experiment_id(), key, targets, settings.project_dir, scratch
        )
        if hit is None:
            return None
        if hit.notebook is not None:
            shutil.copyfile(hit.notebook, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    files = hash_outputs(targets, settings.project_dir)
    return ExecutionResult(
        notebook=nb_label,
        parameters=params,
        status=RunStatus.SUCCEEDED,
        output_path=out,
        html_path=None,
        run_id=hit.run_id,
        metrics=hit.metrics,
        duration=time.monotonic() - t0,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        inputs=input_hashes,
        outputs=[f.as_hash() for f in files],
        output_files=files,
        output_targets=targets,
        cached_from=hit.run_id,
    )


def _run(
    nb_path: Path,
    out: Path,
    params: dict[str, Any],
    kernel: KernelHandle,
    limit: float,
    cancel: CancelToken,
    on_progress: Callable[[Progress], None] | None,
    settings: Settings,
    on_output: Callable[[int, Mapping[str, Any]], None] | None = None,
) -> tuple[NotebookFailure | None, bool]:
    """Execute with papermill on `kernel`; returns (failure or None, cancelled?)."""
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    register_engine()
    done = threading.Event()
    wake = threading.Event()  # the watchdog's: set when the run ends or is cancelled, so it never lags
    cancel.wake_on_cancel(wake)
    why: dict[str, str] = {}

    def stop(reason: str) -> None:
        why.setdefault("reason", reason)
        if done.is_set():
            return
        kernel.interrupt()
        if not done.wait(KILL_GRACE_S):
            log.info("kernel did not stop within %.1fs of the interrupt; killing it", KILL_GRACE_S)
            kernel.kill()

    def watchdog() -> None:
        deadline = time.monotonic() + limit if limit and limit > 0 else None
        while not done.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                stop("timeout")
                return
            wake.wait(None if remaining is None else remaining)
            if done.is_set():
                return
            if cancel.cancelled:
                stop("cancelled")
                return

    def on_cell(index: int, total: int, cells_done: int) -> None:
        if "reason" in why or cancel.cancelled:
            raise _Stop(why.get("reason", "cancelled"))
        if on_progress:
            on_progress(Progress(index, cells_done, total))

    guard = threading.Thread(target=watchdog, name="jobrunner-watchdog", daemon=True)
    guard.start()
    failure: NotebookFailure | None = None
    try:
        papermill.execute_notebook(
            str(nb_path),
            str(out),
            parameters=params,
            engine_name=ENGINE_NAME,
            kernel_name=kernel.manager.kernel_name,
            km=kernel.manager,
            kc=kernel.client,
            on_cell=on_cell,
            on_output=on_output,
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
            start_timeout=settings.kernel_start_timeout,
            shutdown_kernel="immediate",
        )
    except PapermillExecutionError as exc:
        cell: int | None = source_cell_index(out, exc.cell_index)
        failure = NotebookFailure(
            kind=FailureKind.ERROR,
            message=f"cell {cell} (In [{exc.exec_count}]) raised {exc.ename}: {exc.evalue}",
            cell_index=cell,
            execution_count=exc.exec_count,
            ename=exc.ename,
            evalue=exc.evalue,
            traceback=list(exc.traceback or []),
        )
    except _Stop:
        pass  # classified below from `why`
    except (DeadKernelError, CellTimeoutError) as exc:
        failure = NotebookFailure(kind=FailureKind.KERNEL_DIED, message=f"the kernel died: {exc}")
    except Exception as exc:
        if "reason" not in why:
            kernel.shutdown()
            raise InfrastructureError(f"executing {nb_path.name} failed outside the notebook: {exc}") from exc
    finally:
        done.set()
        wake.set()
        release_kernel(kernel)
        guard.join(timeout=KILL_GRACE_S + 1)
        cancel.forget(wake)

    if failure is None and "reason" in why:
        failure = last_started_cell(out)
    reason = why.get("reason")
    if reason == "timeout":
        cell = failure.cell_index if failure else None
        return NotebookFailure(
            kind=FailureKind.TIMEOUT,
            message=f"timed out after {limit:g}s" + (f" in cell {cell}" if cell is not None else ""),
            cell_index=cell,
            execution_count=failure.execution_count if failure else None,
            ename="TimeoutError",
            evalue=f"notebook exceeded its {limit:g}s time limit",
        ), False
    if reason == "cancelled":
        cell = failure.cell_index if failure else None
        return NotebookFailure(
            kind=FailureKind.CANCELLED,
            message="cancelled" + (f": {cancel.reason}" if cancel.reason not in ("", "cancelled") else ""),
            cell_index=cell,
            execution_count=failure.execution_count if failure else None,
        ), True
    return failure, False


_html_exporter: HTMLExporter | None = None
_html_lock = threading.Lock()


_CACHED_MAX = 100_000  # characters: longer inputs are rendered every time, not kept


def _cached_html_filters() -> dict[str, Any]:
    """nbconvert's `highlight_code` and `clean_html` filters, memoised. Jobs of one notebook render the
    same code cells again and again (only the parameters cell differs), and syntax highlighting plus
    bleach's sanitising of every cell's input were ~40% of a job's HTML rendering. Both are pure
    functions of what is cached on: the source, the language and the one metadata key highlighting reads
    (`magics_language`)."""
    from functools import lru_cache

    from nbconvert.filters.highlight import Highlight2HTML
    from nbconvert.filters.strings import clean_html as nbconvert_clean_html

    # nbconvert's filters are unannotated: clean_html returns bleach's sanitised text; a Highlight2HTML
    # is a callable (source, language, metadata) -> HTML
    clean_html = cast("Callable[[Any], str]", nbconvert_clean_html)
    new_highlighter = cast("Callable[..., Callable[[str, str | None, dict[str, str]], str]]", Highlight2HTML)
    clean_cached = lru_cache(maxsize=2048)(clean_html)
    highlighters: dict[str | None, Callable[[str, str | None, dict[str, str]], str]] = {}

    @lru_cache(maxsize=2048)
    def highlight_cached(source: str, language: str | None, lexer: str | None, magics: str | None) -> str:
        if lexer not in highlighters:
            highlighters[lexer] = new_highlighter(pygments_lexer=lexer)
        metadata = {"magics_language": magics} if magics is not None else {}
        return str(highlighters[lexer](source, language, metadata))

    def clean(element: Any) -> str:
        return (
            clean_cached(element)
            if isinstance(element, str) and len(element) < _CACHED_MAX
            else clean_html(element)
        )

    def highlight(source: str, language: str | None = None, metadata: Any = None) -> str:
        magics = metadata.get("magics_language") if metadata else None
        lexer = _html_lexer.get("lexer")
        if len(source) >= _CACHED_MAX:
            return highlight_cached.__wrapped__(source, language, lexer, magics)
        return highlight_cached(source, language, lexer, magics)

    return {"highlight_code": highlight, "clean_html": clean}


_html_lexer: dict[str, str | None] = {}  # the notebook being rendered (under _html_lock)


def _render_html_text(nb: NotebookNode) -> str:
    global _html_exporter
    from jobrunner.execution import notebooks

    with _html_lock:  # one exporter per process: building it (templates, Jinja) costs most of a render
        if _html_exporter is None:
            _html_exporter = notebooks.html_exporter(template_name="lab", filters=_cached_html_filters())
        langinfo = nb.metadata.get("language_info", {})
        _html_lexer["lexer"] = langinfo.get("pygments_lexer", langinfo.get("name", None))
        body, _ = _html_exporter.from_notebook_node(nb)
    return str(body)


def _render_html(ipynb: Path) -> Path | None:
    try:
        from jobrunner.execution import notebooks

        body = _render_html_text(notebooks.read(ipynb, as_version=4))
    except Exception:
        log.warning("could not render %s as HTML", ipynb, exc_info=True)
        return None
    html_path = ipynb.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """Metrics the notebook reported through jobrunner.notebook.log_metrics, in order."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by a killed kernel
            log.warning("ignoring a malformed metrics line: %r", line[:200])
    return out


# The environment of the process an execution is done for, when that is not this one (the execution
# service sets it per request thread): the kernel's base environment when `base_env` is not given.
caller_env: ContextVar[Mapping[str, str] | None] = ContextVar("jobrunner_caller_env", default=None)


def _kernel_env(
    settings: Settings,
    run_id: str | None,
    extra: Mapping[str, str] | None,
    experiment_id: str | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    if base is None:
        base = caller_env.get()
    env = dict(os.environ if base is None else base)
    env["JOBRUNNER_PROJECT_DIR"] = str(settings.project_dir)
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri or ""
    env["JOBRUNNER_MLFLOW_EXPERIMENT"] = settings.mlflow_experiment
    # mlflow.set_experiment() in the calling process exports MLFLOW_EXPERIMENT_ID, an id in *its* store:
    # the kernel gets the id of the executor's experiment instead (child runs land beside their parent).
    env.pop("MLFLOW_EXPERIMENT_NAME", None)
    if experiment_id:
        env["MLFLOW_EXPERIMENT_ID"] = experiment_id
    else:
        env.pop("MLFLOW_EXPERIMENT_ID", None)
    if run_id:
        env["MLFLOW_RUN_ID"] = run_id
    else:
        env.pop("MLFLOW_RUN_ID", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def _label(path: Path, project: Path) -> str:
    try:
        return path.resolve().relative_to(project.resolve()).as_posix()
    except ValueError:
        return str(path)
