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
    """The one progress bar of jobrunner: cells done of a notebook's cells, drawn with tqdm.

    On stderr for `jobrunner run`, DVC stages and `jobrunner submit --wait` (terminals only: a bar redrawn
    into a log file is noise), or with `widget=True` as tqdm.auto draws it (a notebook widget in Jupyter,
    for `submit(...).wait()`). Silent when disabled; tqdm is imported only once a bar is drawn.
    """

    def __init__(self, label: str = "", *, disable: bool = False, widget: bool = False):
        self.label = label
        self.widget = widget
        self.disable = disable or (not widget and not sys.stderr.isatty())
        self._bar: Any = None

    def __enter__(self) -> ProgressBar:
        return self

    def show(self, done: int, total: int | None, status: str, *, label: str | None = None) -> None:
        """Draw `done` of `total` cells with `status` beside it (nothing until `total` is known)."""
        if self.disable or not total:
            return
        if self._bar is None:
            if self.widget:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=total, desc=label or self.label, unit="cell")
            else:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=total,
                    desc=label or self.label,
                    unit="cell",
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                )
        self._bar.n = done
        self._bar.set_postfix_str(status, refresh=False)
        self._bar.refresh()

    def update(self, progress: Progress) -> None:
        """The executor's on_progress callback: cell `cell_index` is starting."""
        self.show(progress.cells_done, progress.cells_total, f"cell {progress.cell_index}")

    def close(self, *, complete: bool = False) -> None:
        if self._bar is not None:
            if complete:
                self._bar.n = self._bar.total
            self._bar.close()
            self._bar = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(complete=exc is None)
