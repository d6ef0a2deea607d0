"""augment.conditions: the --where grammar, its evaluation, its errors and the training summary (no model)."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import pyarrow as pa
import pytest

from augment.conditions import ConditionError, impossible, parse_where, summarize

SCHEMA = pa.schema([("age", pa.int64()), ("job", pa.string()), ("income", pa.float64()), ("home town", pa.string()),
                    ("when", pa.date32()), ("price", pa.decimal128(9, 2)), ("flag", pa.bool_()),
                    ("label", pa.string())])
CATEGORIES = {"job": ["admin.", "retired", "technician"], "home town": ["Leeds", "York"]}


def table() -> pa.Table:
    return pa.table({
        "age": pa.array([20, 60, 75, None, 45], pa.int64()),
        "job": pa.array(["retired", "admin.", "retired", "technician", None]),
        "income": pa.array([1.5, None, 3.0, 2.0, -1.0]),
        "home town": pa.array(["Leeds", "York", "Leeds", "Leeds", "York"]),
        "when": pa.array([datetime.date(2020, 1, d) for d in (1, 5, 10, 20, 31)], pa.date32()),
        "price": pa.array([decimal.Decimal(x) for x in ("1.00", "12.50", "12.49", "99.99", "0.01")], pa.decimal128(9, 2)),
        "flag": pa.array([True, False, True, None, False]),
        "label": pa.array(["no", "yes", "no", "yes", "no"]),
    }, schema=SCHEMA)


@pytest.mark.parametrize("clauses, rows", [
    (["age >= 60"], [1, 2]),
    (["age>60"], [2]),
    (["age < 45"], [0]),
    (["age <= 45", "age != 20"], [4]),
    (["age = 75"], [2]),
    (["job in retired|technician"], [0, 2, 3]),
    (["job = retired", "age >= 60"], [2]),
    (["job != retired"], [1, 3]),  # a null meets only `is null`
    (["income is null"], [1]),
    (["income IS NOT NULL", "income > 0"], [0, 2, 3]),
    (["job is null"], [4]),
    (["`home town` = Leeds"], [0, 2, 3]),
    (["`home town` in 'York'|Leeds", "age is not null"], [0, 1, 2, 4]),
    (["when >= 2020-01-10"], [2, 3, 4]),
    (["price > 12.49"], [1, 3]),
    (["price in 12.50|0.01"], [1, 4]),
    (["flag = true"], [0, 2]),
    (["flag = no"], [1, 4]),
    ([], [0, 1, 2, 3, 4]),
])
def test_grammar_selects_the_rows_meeting_every_clause(clauses, rows):
    cond = parse_where(clauses, SCHEMA, CATEGORIES)
    assert np.flatnonzero(cond.mask(table())).tolist() == rows
    assert cond.filter(table()).num_rows == len(rows)


@pytest.mark.parametrize("clause, message", [
    ("salary > 3", "unknown column 'salary'; the columns are age, job"),
    ("age >= old", "'old' is not a value of column 'age' (type int64)"),
    ("age >= 60.5", "'60.5' is not a value of column 'age'"),
    ("when < 2020-13-01", "is not a value of column 'when' (type date32"),
    ("price = abc", "is not a value of column 'price'"),
    ("job = pilot", "column 'job' never holds 'pilot' in training; its values are admin., retired, technician"),
    ("job in retired|pilot|astronaut", "never holds 'pilot', 'astronaut'"),
    ("job > retired", "'>' needs an ordered column; 'job' is categorical"),
    ("age", "expected COLUMN OP VALUE"),
    ("age ~ 3", "expected COLUMN OP VALUE"),
    ("age >=", "no value after '>='"),
    ("job in retired||admin.", "empty value in the list"),
    ("home town = Leeds", "backquote"),
])
def test_every_bad_clause_is_a_one_line_error_naming_it(clause, message):
    with pytest.raises(ConditionError) as err:
        parse_where([clause], SCHEMA, CATEGORIES)
    text = str(err.value)
    assert message in text and "\n" not in text and (clause in text or "characters" in text)


def test_all_bad_clauses_are_reported_at_once():
    with pytest.raises(ConditionError) as err:
        parse_where(["salary > 3", "age >= 18", "job = pilot"], SCHEMA, CATEGORIES)
    assert "salary" in str(err.value) and "pilot" in str(err.value) and "age >= 18" not in str(err.value)


def test_hostile_input_is_refused():
    with pytest.raises(ConditionError, match="at most 32"):
        parse_where(["age > 1"] * 33, SCHEMA)
    with pytest.raises(ConditionError, match="characters"):
        parse_where(["job in " + "a|" * 6000 + "b"], SCHEMA)


def test_summary_tells_impossible_from_rare():
    t = table()
    summary = summarize(t, "label", ["no", "yes"], {"job", "home town"})
    assert summary["columns"]["age"]["per_class"][0] == {"rows": 3, "nulls": 0, "min": "20", "max": "75"}
    assert summary["columns"]["job"]["per_class"][0]["values"] == ["retired"]
    assert "label" not in summary["columns"]

    def bad(*clauses):
        return impossible(parse_where(list(clauses), SCHEMA, CATEGORIES), summary, ["no", "yes"], [0, 1])

    assert bad("age >= 100") == ["no training row of class 'no' has age >= 100",
                                 "no training row of class 'yes' has age >= 100"]
    assert bad("age >= 75") == ["no training row of class 'yes' has age >= 75"]  # yes: 60 and a null
    assert bad("age > 75") == ["no training row of class 'no' has age > 75", "no training row of class 'yes' has age > 75"]
    # min/max per class: 'no' (20..75) may hold a 35-year-old as far as the summary knows; 'yes' (60) cannot
    assert bad("age >= 30", "age < 40") == ["no training row of class 'yes' has age >= 30 and age < 40"]
    assert bad("age = 61") == ["no training row of class 'yes' has age = 61"]
    assert bad("job = admin.") == ["no training row of class 'no' has job = admin."]
    assert bad("income is null") == ["no training row of class 'no' has income is null"]
    assert bad("when > 2020-01-20") == ["no training row of class 'yes' has when > 2020-01-20"]
    assert bad("price >= 99.99") == ["no training row of class 'no' has price >= 99.99"]
    assert bad("age >= 20", "job in retired|technician", "income is not null") == []
    assert impossible(parse_where(["age >= 100"], SCHEMA), None, ["no", "yes"], [0, 1]) == []


def test_masks_are_read_from_their_bits_nulls_false():
    from augment.arrays import to_bool

    a = pa.array([True, None, False, True, True, None, False, True, True, False])
    for arr in (a, a.slice(3), a.slice(1, 5), pa.chunked_array([a.slice(2), a]), pa.chunked_array([], pa.bool_())):
        expected = np.array([bool(x) for x in arr.to_pylist()], dtype=bool)
        assert to_bool(arr).dtype == bool and np.array_equal(to_bool(arr), expected)


def test_conditions_never_import_pandas(table_bundle):
    """pa.array, Array.to_numpy and Python scalars in compute calls import pandas (0.5 s here) on first use."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\nfrom augment.rows import generate_table\nfrom augment.generator import Generator\n"
            f"gen = Generator.from_path({str(table_bundle)!r})\n"
            "t = generate_table(gen, {0: 30}, 0, where=['age >= 30', 'job in admin.|technician', 'age is not null'])\n"
            "assert t.num_rows == 30\nprint('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
