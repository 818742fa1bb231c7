"""The parameter contract of a notebook: read from its `parameters` cell, enforced before execution.

papermill only warns about unknown parameters and injects whatever it is given. Here the cell tagged
`parameters` is parsed (never executed) into a schema of names, types and literal defaults, and every
submitted value is checked against it first, so a typo or a wrong type fails in milliseconds instead of
after a kernel start, and says which names and types are valid.

Supported cell syntax, one parameter per top-level statement:
    n_estimators = 100                 # type inferred from the literal: int
    max_depth: int | None = None       # an annotation wins; `X | None` / Optional[X] allow None
    source = "sklearn:breast_cancer"   # a trailing comment becomes the parameter's help text
    model_dir = "models/model"         # output: a comment starting `output:` marks a path the run writes

Output parameters (docs/notebooks.md, "Inputs and outputs") are string paths the notebook writes; every
other string parameter naming an existing file is an input the run reads. Queued jobs point output
parameters left at their defaults into the job's own folder (jobrunner/execution/outputs.py).
"""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import yaml

from jobrunner.errors import InvalidNotebook, NotebookNotFound, ParameterError, ParameterProblem
from jobrunner.execution import notebooks

PARAMETERS_TAG = "parameters"
# A trailing comment starting with this word and a colon (`# output: the model`) marks an output parameter.
OUTPUT_MARKER = "output:"
_OUTPUT_RE = re.compile(r"^output\s*:", re.IGNORECASE)
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str  # one of _TYPES, or "any" (a None default without annotation)
    default: Any
    optional: bool = False  # None is accepted
    help: str = ""
    output: bool = False  # a path the notebook writes (its comment starts with `output:`)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "optional": self.optional,
            "help": self.help,
            "output": self.output,
        }

    @property
    def type_label(self) -> str:
        return f"{self.type} or null" if self.optional and self.type != "any" else self.type


@dataclass(frozen=True)
class ParameterSchema:
    notebook: str
    parameters: dict[str, Parameter]
    cell_index: int | None  # index of the `parameters` cell; None when the notebook has none

    @property
    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.parameters.values()}

    @property
    def outputs(self) -> list[str]:
        """Names of the output parameters (paths the notebook writes), in cell order."""
        return [p.name for p in self.parameters.values() if p.output]

    def as_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.notebook,
            "has_parameters_cell": self.cell_index is not None,
            "parameters": [p.as_dict() for p in self.parameters.values()],
        }

    # -- validation ------------------------------------------------------------------------------
    def validate(self, values: dict[str, Any]) -> dict[str, Any]:
        """Check typed values (JSON/YAML/Python); return them normalised (int -> float where declared).

        Raises ParameterError listing every problem at once.
        """
        problems = self._unknown(values)
        clean: dict[str, Any] = {}
        for name, value in values.items():
            param = self.parameters.get(name)
            if param is None:
                continue
            ok, normalised = _check_type(param, value)
            if ok:
                clean[name] = normalised
            else:
                problems.append(
                    ParameterProblem(
                        name,
                        "type",
                        f"parameter '{name}' must be {param.type_label}, got {_describe(value)}",
                    )
                )
        if problems:
            raise ParameterError(self.notebook, problems)
        return clean

    def coerce_strings(self, raw: dict[str, str]) -> dict[str, Any]:
        """Convert command-line strings (`-p name value`) to the declared types, then validate."""
        problems = self._unknown(raw)
        values: dict[str, Any] = {}
        for name, text in raw.items():
            param = self.parameters.get(name)
            if param is None:
                continue
            try:
                values[name] = _parse_text(param, text)
            except ValueError:
                problems.append(
                    ParameterProblem(
                        name, "type", f"parameter '{name}' must be {param.type_label}, got {_echo(text)}"
                    )
                )
        if problems:
            raise ParameterError(self.notebook, problems)
        return self.validate(values)

    def _unknown(self, values: dict[str, Any]) -> list[ParameterProblem]:
        problems = []
        if values and self.cell_index is None:
            return [
                ParameterProblem(
                    name,
                    "unknown",
                    f"parameter '{name}' given, but {self.notebook} has no cell tagged "
                    f"'{PARAMETERS_TAG}' (tag the cell holding the defaults in JupyterLab: "
                    "Property Inspector > Cell Tags)",
                )
                for name in values
            ]
        valid = ", ".join(sorted(self.parameters)) or "(none)"
        for name in values:
            if name not in self.parameters:
                problems.append(
                    ParameterProblem(
                        name, "unknown", f"unknown parameter '{name}'; valid parameters: {valid}"
                    )
                )
        return problems


# -- reading the contract ---------------------------------------------------------------------------
def read_notebook(path: str | Path, name: str | None = None) -> nbformat.NotebookNode:
    """The notebook at `path`; errors call it `name` (e.g. its project-relative path) if given."""
    p = Path(path)
    label = name or str(path)
    if not p.is_file():
        raise NotebookNotFound(f"notebook not found: {label}")
    if p.suffix != ".ipynb":
        raise NotebookNotFound(f"not a notebook (expected a .ipynb file): {label}")
    try:
        return notebooks.read(p, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for a corrupt file
        raise InvalidNotebook(f"cannot read notebook {label}: {exc}") from exc


def read_schema(path: str | Path, name: str | None = None) -> ParameterSchema:
    """Parse the notebook's `parameters` cell into a ParameterSchema (nothing is executed); messages
    name the notebook `name` (default: `path`)."""
    nb = read_notebook(path, name)
    return schema_from_notebook(nb, name or str(path))


# -- size limits ---------------------------------------------------------------------------------------
def json_size(value: Any) -> int:
    """Bytes of `value` as JSON text (how it is stored, sent and recorded)."""
    try:
        return len(json.dumps(value, default=str).encode())
    except ValueError:  # holds an int over Python's int-to-text limit (4300 digits): estimate its digits
        if isinstance(value, int):
            return int(value.bit_length() * 0.30103) + 2
        items = value.items() if isinstance(value, dict) else enumerate(value)
        return sum(json_size(k) + json_size(v) + 2 for k, v in items)


def check_sizes(values: dict[str, Any], *, notebook: str, max_value_bytes: int, max_total_bytes: int) -> None:
    """Refuse parameter values larger than the limits (settings JOBRUNNER_MAX_PARAMETER_BYTES and
    JOBRUNNER_MAX_PARAMETERS_BYTES): ParameterError naming each parameter, its size and the limit."""
    sizes = {name: json_size(value) for name, value in values.items()}
    problems = [
        ParameterProblem(
            name,
            "too_large",
            f"parameter '{name}' is {_bytes(size)} as JSON; the limit is {_bytes(max_value_bytes)} "
            "per value (setting JOBRUNNER_MAX_PARAMETER_BYTES); pass large data as a file path",
        )
        for name, size in sizes.items()
        if size > max_value_bytes
    ]
    total = sum(sizes.values())
    if not problems and total > max_total_bytes:
        largest = sorted(sizes, key=lambda n: -sizes[n])[:3]
        problems.append(
            ParameterProblem(
                largest[0],
                "too_large",
                f"the parameters are {_bytes(total)} as JSON together; the limit is "
                f"{_bytes(max_total_bytes)} per job (setting JOBRUNNER_MAX_PARAMETERS_BYTES); largest: "
                + ", ".join(f"'{n}' ({_bytes(sizes[n])})" for n in largest),
            )
        )
    if problems:
        raise ParameterError(notebook, problems)


def _bytes(n: int) -> str:
    return f"{n} bytes" if n < 10240 else f"{n / 1024:.0f} KiB ({n} bytes)"


def schema_from_notebook(nb: nbformat.NotebookNode, name: str) -> ParameterSchema:
    tagged = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and PARAMETERS_TAG in cell.get("metadata", {}).get("tags", [])
    ]
    if not tagged:
        return ParameterSchema(name, {}, None)
    if len(tagged) > 1:
        raise InvalidNotebook(
            f"{name}: {len(tagged)} cells are tagged '{PARAMETERS_TAG}' (cells {tagged}); keep exactly one"
        )
    index = tagged[0]
    return ParameterSchema(name, parse_parameters_source(nb.cells[index].source, name), index)


def parse_parameters_source(source: str, notebook: str = "<cell>") -> dict[str, Parameter]:
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidNotebook(f"{notebook}: the parameters cell is not valid Python: {exc}") from exc
    comments = _line_comments(source)
    params: dict[str, Parameter] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name, annotation, value_node = node.targets[0].id, None, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            name, annotation, value_node = node.target.id, node.annotation, node.value
        else:
            line = ast.get_source_segment(source, node) or type(node).__name__
            raise InvalidNotebook(
                f"{notebook}: the parameters cell may only hold assignments of literal defaults "
                f"(`name = value`); found: {line.splitlines()[0]}"
            )
        try:
            default = ast.literal_eval(value_node)
        except ValueError as exc:
            raise InvalidNotebook(
                f"{notebook}: parameter '{name}' needs a literal default (number, string, bool, None, "
                f"list or dict), found: {ast.get_source_segment(source, value_node)}"
            ) from exc
        ptype, optional = _declared_type(annotation, default, name, notebook)
        comment = comments.get(node.lineno, "")
        output = bool(_OUTPUT_RE.match(comment))
        if output and ptype != "str":
            raise InvalidNotebook(
                f"{notebook}: parameter '{name}' is marked `# {OUTPUT_MARKER}` but is not a string path "
                f"(its default is {_describe(default)}); an output parameter names the file or folder "
                "the notebook writes"
            )
        params[name] = Parameter(name, ptype, default, optional, comment, output)
    return params


def _declared_type(annotation: ast.expr | None, default: Any, name: str, notebook: str) -> tuple[str, bool]:
    if annotation is None:
        if default is None:
            return "any", True
        return _type_name(default), False
    text = ast.unparse(annotation).replace(" ", "")
    optional = False
    if text.startswith("Optional[") and text.endswith("]"):
        text, optional = text[len("Optional[") : -1], True
    parts = [p for p in text.split("|") if p not in ("None", "NoneType")]
    if len(parts) != len(text.split("|")):
        optional = True
    base = parts[0].split("[")[0] if len(parts) == 1 else ""
    if base not in _TYPES:
        raise InvalidNotebook(
            f"{notebook}: parameter '{name}' has unsupported annotation '{ast.unparse(annotation)}'; "
            f"use one of {', '.join(_TYPES)} (optionally `| None`)"
        )
    ok, _ = _check_type(Parameter(name, base, None, optional), default)
    if not ok:
        raise InvalidNotebook(
            f"{notebook}: parameter '{name}' is annotated {ast.unparse(annotation)} but its default is "
            f"{_describe(default)}"
        )
    return base, optional


def _type_name(value: Any) -> str:
    for label, typ in (("bool", bool), ("int", int), ("float", float), ("str", str), ("list", list)):
        if isinstance(value, typ):
            return label
    if isinstance(value, (dict,)):
        return "dict"
    if isinstance(value, tuple):
        return "list"
    return "any"


def _check_type(param: Parameter, value: Any) -> tuple[bool, Any]:
    if value is None:
        return param.optional, None
    t = param.type
    if t == "any":
        return True, value
    if t == "bool":
        return isinstance(value, bool), value
    if t == "int":
        if isinstance(value, float) and value.is_integer():  # JSON 3.0 is the integer 3 (JSON Schema agrees)
            return True, int(value)
        return isinstance(value, int) and not isinstance(value, bool), value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if t == "str":
        return isinstance(value, str), value
    if t == "list":
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    if t == "dict":
        return isinstance(value, dict), value
    return False, value


def _parse_text(param: Parameter, text: str) -> Any:
    if param.optional and text.strip().lower() in ("none", "null"):
        return None
    t = param.type
    if t == "str":
        return text
    if t == "int":
        return int(text.strip())
    if t == "float":
        return float(text.strip())
    if t == "bool":
        low = text.strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ValueError(text)
    # list, dict, any: a JSON or YAML literal
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(text) from exc


def _echo(text: str, limit: int = 60) -> str:
    """`text` quoted for a message, cut to `limit` characters (a 5000-digit number is not echoed whole)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[: limit - 3]!r}... ({len(text)} characters)"


def _describe(value: Any) -> str:
    try:
        text = json.dumps(value, default=str)
    except ValueError:  # an int over Python's int-to-text limit
        text = f"<{json_size(value)} characters>"
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{_type_name(value) if value is not None else 'null'} {text}"


def _line_comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                out[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return out
