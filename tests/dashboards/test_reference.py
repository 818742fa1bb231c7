"""Typed inputs from the model's features: the API's kinds first, then the reference data's dtypes."""

from __future__ import annotations

import datetime as dt

import ipywidgets as w
import pandas as pd
import pytest

from dashboards.forms import make_input, read_input, set_input
from dashboards.reference import feature_specs, load_reference, target_column


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "bill": [38.1, 40.2, None, 45.0],
            "mass": [3700, 3800, 4100, 3900],
            "island": ["Dream", "Biscoe", "Dream", None],
            "tagged": [True, False, True, True],
            "seen_on": pd.to_datetime(["2021-03-01", "2021-05-02", "2022-01-09", "2021-07-07"]),
            "species": ["Adelie", "Gentoo", "Adelie", "Chinstrap"],
        }
    )


def test_without_kinds_from_the_api_the_reference_dtypes_decide(frame):
    info = {"features": [{"name": c, "type": ""} for c in ("bill", "mass", "island", "tagged", "seen_on")]}
    specs = {s.name: s for s in feature_specs(info, frame)}
    assert {n: s.kind for n, s in specs.items()} == {
        "bill": "numeric",
        "mass": "numeric",
        "island": "categorical",
        "tagged": "boolean",
        "seen_on": "datetime",
    }
    assert specs["island"].categories == ["Biscoe", "Dream"] and specs["island"].default == "Dream"
    assert specs["mass"].integer and specs["mass"].default == 3850
    assert target_column(info, frame) == "species"
    fields = {n: make_input(s) for n, s in specs.items()}
    assert isinstance(fields["island"], w.Dropdown) and isinstance(fields["tagged"], w.Checkbox)
    assert isinstance(fields["seen_on"], w.DatePicker) and isinstance(fields["mass"], w.IntText)
    set_input(specs["seen_on"], fields["seen_on"], frame["seen_on"][1])
    set_input(specs["island"], fields["island"], "Biscoe")
    set_input(specs["tagged"], fields["tagged"], False)
    row = {n: read_input(specs[n], f) for n, f in fields.items()}
    assert row == {"bill": 40.2, "mass": 3850, "island": "Biscoe", "tagged": False, "seen_on": "2021-05-02"}


def test_the_apis_kinds_and_categories_win_and_the_mlflow_type_is_the_last_resort(frame):
    info = {
        "features": [
            {
                "name": "island",
                "type": "string",
                "kind": "categorical",
                "categories": ["Biscoe", "Dream", "Torgersen"],
                "optional": True,
            },
            {"name": "code", "type": "long"},  # not in the reference: the MLflow type decides
            {"name": "note", "type": "string"},
            {"name": "when", "type": "datetime"},
        ],
        "target": "species",
    }
    specs = {s.name: s for s in feature_specs(info, frame)}
    island = make_input(specs["island"])
    assert [label for label, _ in island.options] == ["Biscoe", "Dream", "Torgersen", "(missing)"]
    set_input(specs["island"], island, None)
    assert read_input(specs["island"], island) is None  # optional: a missing value is a choice
    assert specs["code"].kind == "numeric" and specs["code"].integer
    assert isinstance(make_input(specs["note"]), w.Text)  # no categories known: free text
    when = make_input(specs["when"])
    when.value = dt.date(2024, 2, 29)
    assert read_input(specs["when"], when) == "2024-02-29"
    assert target_column(info, frame) == "species"


def test_reference_data_problems_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match="no reference data at .*DASHBOARD_REFERENCE_DATA"):
        load_reference(str(tmp_path / "missing.parquet"))
    with pytest.raises(ValueError, match="must be a .csv or .parquet"):
        load_reference("data/train.txt")
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(ValueError, match="cannot read the reference data"):
        load_reference(str(bad))
