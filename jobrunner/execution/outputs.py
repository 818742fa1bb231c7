"""Where an execution writes its output parameters, and what it wrote.

A notebook's output parameters (comment `# output:` in its parameters cell, jobrunner/execution/params.py)
name the files and folders it writes. Who decides where they go:

- `jobrunner run` and DVC stages write where the parameters say (the workspace: that is the contract of
  dvc.yaml's outs and of an interactive run);
- a queued job (submit(), REST, CLI, schedules) owns its outputs: an output parameter left at its
  default - or given its default value, as the job board does - is pointed into the job's own folder
  (`<runs_dir>/jobs/<job id>/attempt-<n>/outputs/<default path>`), so a job never overwrites the project's
  files and two jobs never write the same file. A value naming a path inside the project is refused
  (ParameterError, "output_in_project") unless the submitter says so on purpose (`write_workspace`); a path
  outside the project is written as given.

After the run every output is hashed (DVC md5) and a job copies it to its artifact store
(`<artifact uri>/<job id>/outputs/<path>`); the result is the job's `outputs` list.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jobrunner.errors import ParameterError, ParameterProblem
from jobrunner.execution.hashing import DataHash, hash_path
from jobrunner.execution.params import ParameterSchema

WRITE_WORKSPACE_HINT = (
    'pass --write-workspace (REST: "write_workspace": true) to write the project\'s files '
    "on purpose, or leave the parameter out: the job then writes it into its own folder"
)


@dataclass(frozen=True)
class OutputTarget:
    """One output parameter of an execution: its logical path and where this execution writes it."""

    parameter: str
    path: str  # as the notebook names it: the default (project-relative) or the value given
    location: Path  # absolute: where the notebook is told to write


@dataclass(frozen=True)
class OutputFile:
    """What one output parameter wrote: DVC md5 and size (None: not written), and where it is stored."""

    parameter: str
    path: str
    md5: str | None
    size: int | None
    uri: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "path": self.path,
            "md5": self.md5,
            "size": self.size,
            "uri": self.uri,
        }

    def as_hash(self) -> DataHash:
        return DataHash(self.path, self.md5, self.size)


def _is_local(value: Any) -> bool:
    return isinstance(value, str) and bool(value) and "://" not in value


def _full(value: str, project: Path) -> Path:
    p = Path(value).expanduser()
    return (p if p.is_absolute() else project / p).resolve()


def _inside(path: Path, project: Path) -> bool:
    return path.is_relative_to(project.resolve())


def given_outputs(schema: ParameterSchema, values: Mapping[str, Any]) -> dict[str, str]:
    """Output parameters given a value other than their default (the default given again counts as left)."""
    return {
        name: values[name]
        for name in schema.outputs
        if name in values and values[name] != schema.parameters[name].default and _is_local(values[name])
    }


def check_outputs(
    schema: ParameterSchema, values: Mapping[str, Any], project: Path, *, write_workspace: bool
) -> None:
    """Refuse output parameters given paths inside the project unless `write_workspace` (ParameterError
    naming each parameter and what to do)."""
    if write_workspace:
        return
    problems = []
    for name, value in given_outputs(schema, values).items():
        if _inside(_full(value, project), project):
            problems.append(
                ParameterProblem(
                    name,
                    "output_in_project",
                    f"output parameter '{name}' = {value!r} is inside the project: a job writes its outputs "
                    f"into its own folder, never over the project's files; {WRITE_WORKSPACE_HINT}",
                )
            )
    if problems:
        raise ParameterError(schema.notebook, problems)


def _relative_key(parameter: str, value: str) -> str:
    """A safe relative path for an output inside a job's folder or artifact prefix."""
    p = PurePosixPath(value.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        return f"{parameter}/{p.name or parameter}"
    return p.as_posix()


def plan_outputs(
    schema: ParameterSchema,
    values: Mapping[str, Any],
    project: Path,
    *,
    folder: Path | None = None,
    write_workspace: bool = True,
) -> tuple[dict[str, Any], list[OutputTarget]]:
    """(parameters to inject, output targets) of one execution.

    Without `folder` (or with `write_workspace`) outputs go where the parameters say. With `folder` (a
    job's), output parameters left at their defaults are pointed into it, and values inside the project are
    refused unless `write_workspace` (check_outputs).
    """
    params = dict(values)
    job_folder = folder if not write_workspace else None  # defaults are pointed into it
    isolate = job_folder is not None
    if isolate:
        check_outputs(schema, values, project, write_workspace=False)
    given = given_outputs(schema, values)
    targets = []
    for name in schema.outputs:
        value = values.get(name, schema.parameters[name].default)
        if not _is_local(value):  # None (not written), "" or a URI: nothing local to point or hash
            continue
        if job_folder is not None and name not in given:
            location = (job_folder / _relative_key(name, value)).resolve()
            location.parent.mkdir(parents=True, exist_ok=True)
            params[name] = str(location)
        else:
            location = _full(value, project)
        targets.append(OutputTarget(name, value, location))
    return params, targets


def input_paths(schema: ParameterSchema, values: Mapping[str, Any], project: Path) -> list[Path]:
    """Existing files and folders (a model directory) named by string parameters that are not outputs,
    defaults included: what the run reads. The project folder itself is never one."""
    found = []
    merged = {**schema.defaults, **values}
    outputs = set(schema.outputs)
    for name, value in merged.items():
        if name in outputs or not _is_local(value) or len(value) >= 4096:
            continue
        full = Path(value) if Path(value).is_absolute() else project / value
        try:
            if full.is_file() or (full.is_dir() and full.resolve() != project.resolve()):
                found.append(full)
        except OSError:
            continue
    return found


def hash_outputs(targets: list[OutputTarget], project: Path) -> list[OutputFile]:
    out = []
    for t in targets:
        h = hash_path(t.location, project)
        out.append(OutputFile(t.parameter, t.path, h.md5, h.size))
    return out


def store_outputs(
    files: list[OutputFile], targets: list[OutputTarget], store: Any, prefix: str
) -> list[OutputFile]:
    """Copy each written output to `store` under `<prefix>/<path>` (a folder file by file); returns the files
    with their URIs (a folder's URI is its prefix)."""
    where = {t.parameter: t.location for t in targets}
    stored = []
    for f in files:
        location = where.get(f.parameter)
        if f.md5 is None or location is None:
            stored.append(f)
            continue
        key = f"{prefix}/{_relative_key(f.parameter, f.path)}"
        if location.is_dir():
            uri = None
            for item in sorted(p for p in location.rglob("*") if p.is_file()):
                rel = item.relative_to(location).as_posix()
                put = store.put(item, f"{key}/{rel}")
                uri = uri or put[: len(put) - len(rel) - 1]
            stored.append(OutputFile(f.parameter, f.path, f.md5, f.size, uri))
        else:
            stored.append(OutputFile(f.parameter, f.path, f.md5, f.size, store.put(location, key)))
    return stored
