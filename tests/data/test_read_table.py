"""The one table opener (medxfer.data.tables.read_table): physical lines after blank lines and
multi-line quoted cells, gzip, a byte-order mark, encodings, TSV and Parquet, and every bad
input naming the file, line and column. Expected lines are counted by hand from each text."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medxfer.data.tables import TableError, read_table

#: Header on line 1; row "a" on line 2; a blank line 3; row "b" on lines 4-6 (its note holds
#: two line breaks inside quotes); row "c" on line 7, then two blank lines.
TEXT = 'id,note,age\na,plain,41\n\nb,"one\ntwo\nthree",\nc,"x, y",7\n\n\n'


def _write(tmp_path: Path, content: str | bytes, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_rows_start_on_their_physical_lines(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path, TEXT), numeric=["age"])
    assert table.lines.tolist() == [2, 4, 7]
    assert table.source == str(tmp_path / "t.csv")
    assert table.frame["id"].tolist() == ["a", "b", "c"]
    assert table.frame["note"].tolist() == ["plain", "one\ntwo\nthree", "x, y"]
    np.testing.assert_array_equal(table.frame["age"].to_numpy(), [41.0, np.nan, 7.0])


def test_a_short_row_after_a_multi_line_cell_and_a_blank_line_names_its_line(
    tmp_path: Path,
) -> None:
    path = _write(tmp_path, TEXT + "d,only\n")  # line 10
    with pytest.raises(TableError) as err:
        read_table(path)
    assert str(err.value) == f"{path}: line 10 has 2 fields, the header 3: column 'age' is missing"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            "a,1,2\nb,1,2,3\n",
            "line 3 has 4 fields, the header 3: there are fields after the last column 'y'",
            id="too-many",
        ),
        pytest.param(
            "a,1,2,3\nb,1,2\n",
            "line 2 has 4 fields, the header 3: there are fields after the last column 'y'",
            id="too-many-on-the-first-row",
        ),
        pytest.param(
            "a,1,2\n\n\nb,1\n",
            "line 5 has 2 fields, the header 3: column 'y' is missing",
            id="short",
        ),
    ],
)
def test_rows_of_the_wrong_length_name_file_line_and_column(
    tmp_path: Path, body: str, expected: str
) -> None:
    path = _write(tmp_path, "id,x,y\n" + body)
    with pytest.raises(TableError) as err:
        read_table(path)
    assert str(err.value) == f"{path}: {expected}"


def test_unquoted_table_rows_are_lines_and_text_is_kept_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path, "id,code,age\r\n007,1.50,3\r\n010,2,\r\n")
    table = read_table(path, numeric=["age"])
    assert table.lines.tolist() == [2, 3]
    assert table.frame["id"].tolist() == ["007", "010"]  # not the numbers 7 and 10
    assert table.frame["code"].tolist() == ["1.50", "2"]
    np.testing.assert_array_equal(table.frame["age"].to_numpy(), [3.0, np.nan])


@pytest.mark.parametrize("name", ["t.csv.gz", "t.csv"])  # recognised by content, not by name
def test_gzip(tmp_path: Path, name: str) -> None:
    table = read_table(_write(tmp_path, gzip.compress(TEXT.encode()), name))
    assert table.lines.tolist() == [2, 4, 7]
    assert table.frame["note"].tolist() == ["plain", "one\ntwo\nthree", "x, y"]


def test_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path) -> None:
    path = _write(tmp_path, b"\xef\xbb\xbf" + "id,name\nx,Zoë\n".encode())
    table = read_table(path, required=["id"])
    assert list(table.frame.columns) == ["id", "name"]
    assert table.frame["name"].tolist() == ["Zoë"]
    assert table.lines.tolist() == [2]


@pytest.mark.parametrize(
    ("encoding", "line"),
    [pytest.param("latin-1", 3, id="latin-1"), pytest.param("cp1252", 3, id="cp1252")],
)
def test_text_that_is_not_utf8_names_file_and_line(
    tmp_path: Path, encoding: str, line: int
) -> None:
    path = _write(tmp_path, "id,name\nx,Zoe\ny,Zoë\n".encode(encoding))
    with pytest.raises(TableError) as err:
        read_table(path)
    assert str(err.value).startswith(f"{path}: line {line} is not UTF-8 text")
    assert str(err.value).endswith("save the table as UTF-8")


def test_bad_files_and_headers_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"table not found: .*nothere.csv"):
        read_table(tmp_path / "nothere.csv")
    cut = _write(tmp_path, gzip.compress(b"id,x\n1,2\n")[:12], "cut.csv")
    with pytest.raises(TableError, match=rf"^{cut}: not a readable gzip file"):
        read_table(cut)
    twice = _write(tmp_path, "id,x,id\n1,2,3\n", "twice.csv")
    with pytest.raises(
        TableError, match=rf"^{twice}: line 1 names column\(s\) \['id'\] more than once"
    ):
        read_table(twice)
    missing = _write(tmp_path, "id,x\n1,2\n", "missing.csv")
    with pytest.raises(TableError) as err:
        read_table(missing, required=["id", "y"])
    assert str(err.value) == (
        f"{missing}: missing required column(s) ['y']. Expected ['id', 'y']; found ['id', 'x']"
    )


def test_tsv_with_spaces(tmp_path: Path) -> None:
    table = read_table(_write(tmp_path, "id\t x\na\t 1\n", "t.tsv"), skipinitialspace=True)
    assert table.frame.to_dict("list") == {"id": ["a"], "x": ["1"]}


@pytest.mark.parametrize(
    ("name", "content", "what"),
    [
        pytest.param("h.csv", "id,age\n", "only its header, 2 column(s)", id="header-only"),
        pytest.param("q.csv", 'id,"a, b"\n\n\n', "only its header, 2 column(s)", id="quoted"),
        pytest.param("e.csv", "", "the file is empty", id="empty-file"),
        pytest.param("g.csv.gz", gzip.compress(b"id\tx\n"), "only its header", id="gzip"),
    ],
)
def test_a_table_without_rows_is_named(
    tmp_path: Path, name: str, content: str | bytes, what: str
) -> None:
    path = _write(tmp_path, content, name)
    with pytest.raises(TableError) as err:
        read_table(path, numeric=["age"])
    assert str(err.value).startswith(f"{path}: the table has no rows ({what}")


def test_parquet_rows_are_numbered_from_one(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": ["a", None], "n": [1, 2]}).to_parquet(path)
    table = read_table(path, required=["id"])
    assert table.lines.tolist() == [1, 2]
    assert table.frame.to_dict("list") == {"id": ["a", ""], "n": ["1", "2"]}
    pd.DataFrame({"id": pd.Series([], dtype=str)}).to_parquet(tmp_path / "h.parquet")
    with pytest.raises(TableError, match=r"h\.parquet: the table has no rows \(only its header"):
        read_table(tmp_path / "h.parquet")
