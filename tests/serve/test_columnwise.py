"""The column-wise conversion of request rows (serve.signature.RequestSchema.fast_arrays) must give exactly
what the per-row validation gives, and must hand every row it cannot vouch for to that validation (whose
422 names the row and the feature). Generated rows, valid and broken, in both body forms."""

from __future__ import annotations

import random

import numpy as np
import pytest

from serve.errors import FeatureError
from serve.signature import Column, RequestSchema

COLUMNS = (
    Column("amount", "double"),
    Column("ratio", "float"),
    Column("visits", "long"),
    Column("age", "integer"),
    Column("plan", "string"),
    Column("active", "boolean"),
)
SCHEMA = RequestSchema("fuzz", COLUMNS, (), 10_000)
GOOD = {
    "double": lambda r: r.choice([r.uniform(-1e6, 1e6), r.randint(-10, 10), 0.0, -0.0, 1e150]),
    "float": lambda r: r.choice([r.uniform(-100, 100), r.randint(0, 5)]),
    "long": lambda r: r.choice([r.randint(-(2**62), 2**62), 0]),
    "integer": lambda r: r.randint(-1000, 1000),
    "string": lambda r: r.choice(["basic", "pro", "", "ünïcode", "x" * 200]),
    "boolean": lambda r: r.choice([True, False]),
}
# values the row model refuses for a column type (strict: no bool for a number, no number for a string...)
BAD = {
    "double": [True, "1.5", None, 1e151, [1.0]],
    "float": [False, "x", None, {"v": 1}],
    "long": [1.5, True, "3", None, 2**64],
    "integer": [2.0, False, None],
    "string": [1, True, None, ["a"]],
    "boolean": [1, 0, "true", None],
}


def _row(r: random.Random) -> dict:
    return {c.name: GOOD[c.type](r) for c in COLUMNS}


def _columns_of(rows: list[dict]) -> dict[str, np.ndarray] | None:
    cols = SCHEMA.columns_from_records(rows)
    return SCHEMA.fast_arrays(cols) if cols is not None else None


@pytest.mark.parametrize("seed", range(5))
def test_valid_rows_convert_column_wise_to_exactly_what_the_row_validation_gives(seed: int) -> None:
    r = random.Random(seed)
    rows = [_row(r) for _ in range(r.randint(1, 300))]
    fast = _columns_of(rows)
    assert fast is not None
    slow = SCHEMA.arrays(SCHEMA.validate(rows))
    assert list(fast) == list(slow) == [c.name for c in COLUMNS]
    for name in slow:
        assert fast[name].dtype == slow[name].dtype, name
        assert fast[name].tolist() == slow[name].tolist(), name
    # the compact form, columns in another order, gives the same arrays in signature order
    shuffled = [c.name for c in COLUMNS]
    r.shuffle(shuffled)
    split = SCHEMA.columns_from_split(shuffled, [[row[n] for n in shuffled] for row in rows])
    assert split is not None
    by_split = SCHEMA.fast_arrays(split)
    assert by_split is not None and all(by_split[n].tolist() == slow[n].tolist() for n in slow)


@pytest.mark.parametrize("seed", range(5))
def test_one_bad_value_anywhere_goes_to_the_row_validation_which_names_row_and_feature(seed: int) -> None:
    r = random.Random(100 + seed)
    rows = [_row(r) for _ in range(50)]
    col = r.choice(COLUMNS)
    at = r.randrange(len(rows))
    rows[at][col.name] = r.choice(BAD[col.type])
    assert _columns_of(rows) is None
    with pytest.raises(FeatureError) as err:
        SCHEMA.validate(rows)
    assert any(p["row"] == at and p["feature"] == col.name for p in err.value.problems)


@pytest.mark.parametrize(
    "change",
    [
        lambda rows: rows[3].pop("plan"),  # a missing feature
        lambda rows: rows[0].update(extra=1),  # an unknown one
        lambda rows: rows.__setitem__(7, ["not", "an", "object"]),
    ],
    ids=["missing", "unknown", "not-an-object"],
)
def test_rows_of_the_wrong_shape_are_not_converted_column_wise(change) -> None:
    r = random.Random(7)
    rows = [_row(r) for _ in range(10)]
    change(rows)
    assert _columns_of(rows) is None
    with pytest.raises(FeatureError):
        SCHEMA.validate(rows)


def test_the_compact_form_with_a_missing_duplicate_or_short_column_is_not_converted_column_wise() -> None:
    names = [c.name for c in COLUMNS]
    row = [1.0, 2.0, 3, 4, "pro", True]
    assert SCHEMA.columns_from_split(names[:-1], [row[:-1]]) is None
    assert SCHEMA.columns_from_split([*names[:-1], names[0]], [row]) is None
    assert SCHEMA.columns_from_split(names, [row, row[:-1]]) is None
    assert SCHEMA.columns_from_split(names, []) is None


def test_datetime_and_binary_columns_always_take_the_row_validation() -> None:
    schema = RequestSchema("dates", (Column("when", "datetime"), Column("n", "double")), (), 100)
    cols = schema.columns_from_records([{"when": "2024-05-01T12:30:00", "n": 1.0}])
    assert cols is not None and schema.fast_arrays(cols) is None
