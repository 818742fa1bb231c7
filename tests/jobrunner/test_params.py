"""The parameter contract: read from the `parameters` cell, enforced before anything runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from jobrunner.errors import InvalidNotebook, NotebookNotFound, ParameterError
from jobrunner.execution.params import parse_parameters_source, read_schema

from ..conftest import FIXTURE_NOTEBOOKS

OK = FIXTURE_NOTEBOOKS / "ok.ipynb"


def test_schema_has_names_types_defaults_and_help() -> None:
    schema = read_schema(OK)
    params = schema.parameters
    assert list(params) == ["x", "y", "label", "flag", "items", "out_path"]
    assert (params["x"].type, params["x"].default, params["x"].help) == ("int", 1, "first addend")
    assert (params["y"].type, params["y"].default) == ("float", 2.5)
    assert params["label"].type == "str" and params["flag"].type == "bool"
    assert params["items"].type == "list"
    assert params["out_path"].type == "str" and params["out_path"].optional
    assert schema.defaults["label"] == "sum"


def test_unknown_parameter_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ParameterError) as err:
        read_schema(OK).validate({"no_such_param": 1})
    message = str(err.value)
    assert "unknown parameter 'no_such_param'" in message
    assert "valid parameters: flag, items, label, out_path, x, y" in message
    assert err.value.problems[0].problem == "unknown"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("x", "3", "parameter 'x' must be int, got str"),
        ("x", 2.5, "parameter 'x' must be int, got float"),
        ("x", True, "parameter 'x' must be int, got bool"),
        ("flag", 1, "parameter 'flag' must be bool, got int"),
        ("label", None, "parameter 'label' must be str, got null"),
        ("items", {"a": 1}, "parameter 'items' must be list, got dict"),
    ],
)
def test_wrong_type_is_rejected_naming_the_type(name: str, value: object, expected: str) -> None:
    with pytest.raises(ParameterError) as err:
        read_schema(OK).validate({name: value})
    assert expected in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ParameterError) as err:
        read_schema(OK).validate({"x": "a", "zz": 1, "flag": "yes"})
    assert {p.name for p in err.value.problems} == {"x", "zz", "flag"}


def test_valid_values_are_normalised() -> None:
    clean = read_schema(OK).validate({"x": 4, "y": 3, "out_path": None, "items": [1, 2]})
    assert clean == {"x": 4, "y": 3.0, "out_path": None, "items": [1, 2]}
    assert isinstance(clean["y"], float)


def test_command_line_strings_are_converted_to_declared_types() -> None:
    schema = read_schema(OK)
    assert schema.coerce_strings(
        {"x": "7", "y": "0.5", "flag": "true", "items": "[1, 2]", "label": "42"}
    ) == {"x": 7, "y": 0.5, "flag": True, "items": [1, 2], "label": "42"}
    assert schema.coerce_strings({"out_path": "null"}) == {"out_path": None}
    with pytest.raises(ParameterError, match="parameter 'x' must be int, got 'abc'"):
        schema.coerce_strings({"x": "abc"})


def test_notebook_without_parameters_cell() -> None:
    schema = read_schema(FIXTURE_NOTEBOOKS / "no_parameters.ipynb")
    assert schema.cell_index is None and schema.parameters == {}
    assert schema.validate({}) == {}
    with pytest.raises(ParameterError, match="has no cell tagged 'parameters'"):
        schema.validate({"x": 1})


def test_missing_notebook_and_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(NotebookNotFound, match="notebook not found"):
        read_schema(tmp_path / "nope.ipynb")
    (tmp_path / "a.py").write_text("x = 1")
    with pytest.raises(NotebookNotFound, match="expected a .ipynb"):
        read_schema(tmp_path / "a.py")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("x = compute()", "needs a literal default"),
        ("import os", "may only hold assignments"),
        ("x: Frame = 1", "unsupported annotation"),
        ("x: int = 'a'", "annotated int but its default is str"),
        ("x = (", "not valid Python"),
    ],
)
def test_invalid_parameters_cells_are_explained(source: str, expected: str) -> None:
    with pytest.raises(InvalidNotebook, match=expected):
        parse_parameters_source(source)


def test_two_parameters_cells_are_refused(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    for src in ("a = 1", "b = 2"):
        cell = nbformat.v4.new_code_cell(src)
        cell.metadata["tags"] = ["parameters"]
        nb.cells.append(cell)
    path = tmp_path / "two.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(InvalidNotebook, match="2 cells are tagged 'parameters'"):
        read_schema(path)


def test_pipeline_notebooks_declare_every_parameter_with_a_literal_default() -> None:
    root = FIXTURE_NOTEBOOKS.parents[2] / "notebooks"
    for notebook in sorted(root.glob("0*.ipynb")):
        schema = read_schema(notebook)
        assert schema.cell_index is not None, notebook
        assert schema.parameters, notebook
