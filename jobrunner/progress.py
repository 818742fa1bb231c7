"""A terminal progress bar for executions (cell i of n), shared by the CLI and DVC stages."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from jobrunner.executor import Progress


class ProgressBar:
    """tqdm bar on stderr fed by the executor's on_progress callback; silent when disabled."""

    def __init__(self, label: str, *, disable: bool = False):
        self.label = label
        # A bar redrawn into a log file (CI, `dvc repro | tee`) is noise: show it on terminals only.
        self.disable = disable or not sys.stderr.isatty()
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def update(self, progress: Progress) -> None:
        if self.disable:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=progress.cells_total, desc=self.label, unit="cell", file=sys.stderr,
                             leave=False, dynamic_ncols=True)
        self._bar.n = progress.cells_done
        self._bar.set_postfix_str(f"cell {progress.cell_index}")
        self._bar.refresh()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.n = self._bar.total if exc is None else self._bar.n
            self._bar.close()
