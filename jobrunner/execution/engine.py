"""The papermill engine jobrunner executes with, and how its errors map back to the notebook as written.

The engine is papermill's nbclient engine plus two things: a per-cell callback (progress, and the point
where a cancelled or timed-out execution stops before starting another cell) and closing the kernel
client that nbclient leaves open when it is handed a kernel manager (~14 file descriptors per run). A
kernel client that is already connected (`kc=`) is used instead of a new one.
"""

from __future__ import annotations

import atexit
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from jobrunner.errors import NotebookFailure
from jobrunner.kinds import FailureKind

if TYPE_CHECKING:
    from jupyter_client.asynchronous.client import AsyncKernelClient
    from nbformat import NotebookNode

ENGINE_NAME = "jobrunner"


def source_cell_index(out: Path, executed_index: int) -> int:
    """Map papermill's cell index (counting its injected-parameters cell) to the notebook as written."""
    from jobrunner.execution import notebooks

    try:
        nb = notebooks.read(out, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable partial notebook: report the index as papermill gave it
        return executed_index
    cells = [c for c in nb.cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    injected = [i for i, c in enumerate(cells) if "injected-parameters" in c.metadata.get("tags", [])]
    return executed_index - 1 if injected and injected[0] < executed_index else executed_index


def last_started_cell(out: Path) -> NotebookFailure | None:
    """After a timeout or cancel: which cell was running (papermill marks it in the saved notebook)."""
    from jobrunner.execution import notebooks

    try:
        nb = notebooks.read(out, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable partial notebook: which cell ran is unknown
        return None
    for index in range(len(nb.cells) - 1, -1, -1):
        meta = nb.cells[index].metadata.get("papermill", {})
        if meta.get("start_time") or meta.get("status") == "running":
            return NotebookFailure(
                kind=FailureKind.STOPPED,
                message="",
                cell_index=source_cell_index(out, index),
                execution_count=nb.cells[index].get("execution_count"),
            )
    return None


_engine_registered = False


def _report_outputs(
    client: Any, nb: NotebookNode, on_output: Callable[[int, Mapping[str, Any]], None]
) -> None:
    """Hand every output the kernel produces to `on_output(cell index as written, output)` as it arrives
    (live output, jobrunner/store/live.py); nbclient calls `process_message` once per IOPub message."""
    injected = [i for i, c in enumerate(nb.cells) if "injected-parameters" in c.metadata.get("tags", [])]
    shift = injected[0] if injected else None
    process = client.process_message

    def process_message(msg: Any, cell: Any, cell_index: int) -> Any:
        out = process(msg, cell, cell_index)
        if out is not None:
            on_output(cell_index - 1 if shift is not None and shift < cell_index else cell_index, out)
        return out

    client.process_message = process_message


SAVE_INTERVAL_S = 1.0  # at most one save of the output notebook per second while cells start and end


def _throttle_saves(nb_man: Any) -> None:
    """papermill saves the whole output notebook (with schema validation) when each cell starts and ends:
    13 writes for a 5-cell notebook, a third of a warm-kernel run. Keep those saves at most one per
    SAVE_INTERVAL_S; the saves at the start, on a cell error and at the end always happen, so the file
    on disk is complete whenever execution stops (and a timeout still finds the cell that was running)."""
    save = nb_man.save
    state = {"throttled": False, "last": 0.0}

    def throttled_save(**kwargs: Any) -> Any:
        now = time.monotonic()
        if state["throttled"] and now - state["last"] < SAVE_INTERVAL_S:
            return None
        state["last"] = now
        return save(**kwargs)

    def during(method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            state["throttled"] = True
            try:
                return method(*args, **kwargs)
            finally:
                state["throttled"] = False

        return call

    nb_man.save = throttled_save
    nb_man.cell_start = during(nb_man.cell_start)
    nb_man.cell_complete = during(nb_man.cell_complete)


class _DropUnknownParameterWarning(logging.Filter):
    # papermill warns "Passed unknown parameter" for annotated parameters it cannot infer; the contract
    # in jobrunner.execution.params has already validated every name, so the warning is only noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return "Passed unknown parameter" not in record.getMessage()


def _quiet_papermill() -> None:
    logger = logging.getLogger("papermill")
    if not any(isinstance(f, _DropUnknownParameterWarning) for f in logger.filters):
        logger.addFilter(_DropUnknownParameterWarning())


def register_engine() -> None:
    """Register the papermill engine that reports cells and closes its kernel client."""
    global _engine_registered
    if _engine_registered:
        return
    _quiet_papermill()
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines
    from papermill.utils import merge_kwargs, remove_args

    class JobrunnerEngine(NBClientEngine):  # type: ignore[misc]  # papermill ships no types: its base is Any
        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,  # papermill's NotebookExecutionManager
            kernel_name: str,
            log_output: bool = False,
            stdout_file: TextIO | None = None,
            stderr_file: TextIO | None = None,
            start_timeout: float = 60,
            execution_timeout: float | None = None,
            on_cell: Callable[[int, int, int], None] | None = None,
            kc: AsyncKernelClient | None = None,
            on_output: Callable[[int, Mapping[str, Any]], None] | None = None,
            **kwargs: Any,
        ) -> NotebookNode:
            _throttle_saves(nb_man)
            if on_cell is not None:
                original = nb_man.cell_start
                total = len(nb_man.nb.cells)

                def cell_start(cell: NotebookNode, cell_index: int | None = None, **kw: Any) -> Any:
                    # cells run in order, so every cell before this one is done
                    on_cell(cell_index or 0, total, cell_index or 0)
                    return original(cell, cell_index, **kw)

                nb_man.cell_start = cell_start
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            final = merge_kwargs(
                kwargs,
                timeout=execution_timeout,
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logging.getLogger("papermill"),
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            )
            client = PapermillNotebookClient(nb_man, **final)
            if kc is not None:
                # a client already connected to the kernel (jobrunner.execution.kernels): nbclient uses it
                # as is instead of starting its own, which costs a fixed ~0.2 s wait for the kernel
                client.kc = kc
            if on_output is not None:
                _report_outputs(client, nb_man.nb, on_output)
            try:
                # nbclient is untyped here: execute() returns the executed NotebookNode
                return cast("NotebookNode", client.execute())
            finally:
                # With a kernel manager handed in, nbclient never closes its kernel client (each leaks
                # ~14 file descriptors); the kernel itself is shut down by the executor. nbclient also
                # registers an atexit hook per execution that holds the client and notebook: drop it, or a
                # long-lived process keeps every notebook it ever ran.
                atexit.unregister(client._cleanup_kernel)
                if getattr(client, "kc", None) is not None:
                    client.kc.stop_channels()
                    client.kc = None

    papermill_engines.register(ENGINE_NAME, JobrunnerEngine)
    _engine_registered = True
