"""The value checks every table reader shares (medxfer.data.tables): sex spellings, age range,
repeated rows and near-miss class names, each against hand-written cases."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from medxfer.data.tables import (
    TableError,
    check_age,
    check_duplicates,
    close_names,
    near_duplicate_names,
    normalise_sex,
)


def _where(i: int) -> str:
    return f"t.csv, line {i + 2}, column 'sex'"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("Female", "Female", id="chexpert-female"),
        pytest.param("Male", "Male", id="chexpert-male"),
        pytest.param("Unknown", "Unknown", id="chexpert-unknown"),
        pytest.param("F", "Female", id="nih-f"),
        pytest.param("M", "Male", id="nih-m"),
        pytest.param("FEMALE", "Female", id="scin-female"),
        pytest.param(" male ", "Male", id="padded-lower"),
        pytest.param("", "Unknown", id="blank"),
    ],
)
def test_documented_sex_spellings(value: str, expected: str) -> None:
    assert normalise_sex(pd.Series(["F", value]), _where).tolist() == ["Female", expected]


@pytest.mark.parametrize("value", ["X", "O", "W", "femme", "1"])
def test_other_sex_values_are_an_error_or_unknown_when_asked(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    values = pd.Series(["M", "F", value, value])
    with pytest.raises(TableError) as err:
        normalise_sex(values, _where)
    assert str(err.value).startswith(f"t.csv, line 4, column 'sex': sex {value!r} is not one of")
    with caplog.at_level(logging.WARNING):
        out = normalise_sex(values, _where, unknown=True)
    assert out.tolist() == ["Male", "Female", "Unknown", "Unknown"]
    assert f"{{{value!r}: 2}}" in caplog.text and "t.csv, line 4" in caplog.text


def test_ages_outside_0_120_are_errors() -> None:
    check_age(np.array([0.0, 120.0, np.nan, 57.5]), str)  # edges and unknown are fine
    for ages, row, shown in [([30, -1], 1, "-1"), ([120.5], 0, "120.5"), ([np.nan, 412], 1, "412")]:
        with pytest.raises(TableError) as err:
            check_age(np.array(ages, dtype=float), lambda i: f"t.csv, line {i + 2}")
        assert str(err.value) == f"t.csv, line {row + 2}: age {shown} is outside [0, 120] years"


def test_duplicates_are_named_dropped_when_asked_and_conflicts_kept_as_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = pd.DataFrame({"id": ["a", "b", "a", "c", "a"], "y": [1, 2, 1, 3, 1]})
    lines = [2, 3, 4, 5, 6]
    with pytest.raises(TableError) as err:
        check_duplicates(table, ["id"], lines, "t.csv", "image")
    assert str(err.value) == (
        "t.csv: lines 2, 4, 6 hold the same image (id='a'); remove the copies, or set "
        "drop_duplicates: true to drop identical ones (counted)"
    )
    with caplog.at_level(logging.WARNING):
        keep = check_duplicates(table, ["id"], lines, "t.csv", "image", drop=True)
    assert keep.tolist() == [True, True, False, True, False]
    assert "dropped 2 repeated row(s) of the same image" in caplog.text
    table.loc[4, "y"] = 9  # the third copy differs
    with pytest.raises(TableError, match=r"lines 2, 4, 6 hold the same image .*copies differ in"):
        check_duplicates(table, ["id"], lines, "t.csv", "image", drop=True)
    # the line column never makes two copies differ
    keep = check_duplicates(
        pd.DataFrame({"id": ["a", "a"], "line": [2, 3]}), ["id"], [2, 3], "t", "x", drop=True
    )
    assert keep.tolist() == [True, False]


@pytest.mark.parametrize("drop", [False, True], ids=["error", "drop_duplicates"])
def test_copies_that_differ_name_the_columns_and_both_values(drop: bool) -> None:
    """Line 6 repeats image 'a' of line 2 (line 4 is an identical copy) with another Sex and
    Age; both blank 'Note's agree; four differing columns show the first three."""
    table = pd.DataFrame(
        {
            "Path": ["a", "b", "a", "c", "a"],
            "Sex": ["Female", "Male", "Female", "Male", "Male"],
            "Age": [41.0, 50.0, 41.0, 60.0, 14.0],
            "Note": [np.nan, "x", np.nan, "y", np.nan],
            "Edema": [1.0, 0.0, 1.0, 0.0, 0.0],
            "Effusion": [np.nan, 0.0, np.nan, 0.0, 1.0],
        }
    )
    with pytest.raises(TableError) as err:
        check_duplicates(table, ["Path"], [2, 3, 4, 5, 6], "train.csv", "image", drop=drop)
    assert str(err.value) == (
        "train.csv: lines 2, 4, 6 hold the same image (Path='a'); the copies differ in column(s) "
        "'Sex': 'Female' on line 2, 'Male' on line 6; 'Age': 41.0 on line 2, 14.0 on line 6; "
        "'Edema': 1.0 on line 2, 0.0 on line 6 and 1 more, so neither can be dropped: fix the "
        "table"
    )


def test_near_miss_names() -> None:
    assert close_names("Eczma", ["Psoriasis", "Eczema", "Acne"]) == "; did you mean 'Eczema'?"
    assert close_names("Melanoma", ["Psoriasis", "Eczema", "Acne"]) == ""
    counts = {"Eczema": 40.0, "Eczma": 1.0, "Acne": 12.0, "Acme": 12.0}
    assert near_duplicate_names(counts) == [("Eczma", "Eczema")]  # equal counts: no guess
