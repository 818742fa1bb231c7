"""Notebook files: which paths a job may run (`resolve_notebook`), and typed doors to nbformat and nbconvert
(reading and writing notebooks, the HTML exporter).

nbformat ships py.typed but leaves `read`, `reads`, `write` and `v4.new_notebook` unannotated, and
nbconvert's HTMLExporter has an unannotated constructor: under mypy --strict each call is an untyped
call. These functions give them the types they have (a NotebookNode in or out). The packages are
imported when a function is called, as the callers did before: importing this module stays cheap, and
a test that patches `nbformat.read` still reaches every caller.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, cast

from jobrunner.errors import NotebookNotFound

if TYPE_CHECKING:
    from nbconvert import HTMLExporter
    from nbformat import NotebookNode

    from jobrunner.config import Settings


def read(source: str | Path | IO[str], as_version: int = 4) -> NotebookNode:
    """`nbformat.read`: the notebook in a file (a path or an open text file) as `as_version`."""
    import nbformat

    # unannotated in nbformat; it returns the NotebookNode it parsed
    return cast("Callable[..., NotebookNode]", nbformat.read)(source, as_version=as_version)


def reads(text: str, as_version: int = 4) -> NotebookNode:
    """`nbformat.reads`: the notebook in a string as `as_version`."""
    import nbformat

    # unannotated in nbformat; it returns the NotebookNode it parsed
    return cast("Callable[..., NotebookNode]", nbformat.reads)(text, as_version=as_version)


def write(nb: NotebookNode, target: str | Path | IO[str]) -> None:
    """`nbformat.write`: the notebook into a file (a path or an open text file), in its own version."""
    import nbformat

    # unannotated in nbformat; it returns nothing
    cast("Callable[..., None]", nbformat.write)(nb, target)


def new_notebook() -> NotebookNode:
    """`nbformat.v4.new_notebook`: an empty v4 notebook."""
    import nbformat

    # unannotated in nbformat; it builds a NotebookNode
    return cast("Callable[[], NotebookNode]", nbformat.v4.new_notebook)()


def html_exporter(**options: Any) -> HTMLExporter:
    """`nbconvert.HTMLExporter(**options)` (traitlets options such as template_name and filters)."""
    from nbconvert import HTMLExporter

    # HTMLExporter's constructor is unannotated (traitlets configuration keywords)
    return cast("Callable[..., HTMLExporter]", HTMLExporter)(**options)


def resolve_notebook(notebook: str, settings: Settings) -> tuple[Path, str]:
    """(absolute path, project-relative label) of a submitted notebook; refuses paths outside the roots."""
    if any(ord(c) < 32 or ord(c) == 127 for c in notebook):  # NUL would reach os.path as a ValueError
        raise NotebookNotFound(
            f"notebook path {notebook!r} contains a control character (such as NUL); notebook paths never do"
        )
    project = settings.project_dir.resolve()
    raw = PurePosixPath(notebook.replace("\\", "/"))
    if raw.is_absolute() or ".." in raw.parts:
        raise NotebookNotFound(
            f"notebook path {notebook!r} must be relative to the project and stay inside "
            f"the notebook roots {settings.notebook_roots}"
        )
    full = (project / raw).resolve()  # also resolves symlinks that point outside
    roots = settings.notebook_root_paths()
    if not any(full.is_relative_to(root) for root in roots):
        raise NotebookNotFound(
            f"notebook {notebook!r} is outside the notebook roots "
            f"{settings.notebook_roots} "
            "(set JOBRUNNER_NOTEBOOK_ROOTS to allow other folders)"
        )
    if full.suffix != ".ipynb":
        raise NotebookNotFound(f"not a notebook (expected a .ipynb file): {notebook}")
    if not full.is_file():
        raise NotebookNotFound(f"notebook not found: {notebook} (paths are relative to the project folder)")
    return full, full.relative_to(project).as_posix()
