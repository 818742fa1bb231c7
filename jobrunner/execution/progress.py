"""Progress of an execution (cell i of n) and its terminal bar, shared by the CLI, DVC stages and the
execution service's thin client. Import-light on purpose: the thin client imports it (tqdm only once a
bar is drawn)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Progress:
    """Progress of one execution: `cell_index` is starting, `cells_done` of `cells_total` finished."""

    cell_index: int
    cells_done: int
    cells_total: int


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

            self._bar = tqdm(
                total=progress.cells_total,
                desc=self.label,
                unit="cell",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.n = progress.cells_done
        self._bar.set_postfix_str(f"cell {progress.cell_index}")
        self._bar.refresh()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.n = self._bar.total if exc is None else self._bar.n
            self._bar.close()
