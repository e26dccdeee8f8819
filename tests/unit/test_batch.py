"""CSV batch validation: good files parse exactly; every kind of bad file is refused with a
message that names the line, the column and what was expected."""

import codecs
import gzip
import io

import numpy as np
import pytest

from fraudlib.batch import BatchLimits, BatchValidationError, read_batch
from fraudlib.schema import FEATURE_COLUMNS, LABEL_COLUMN
from fraudlib.synthetic import generate_transactions, to_csv_bytes

SOURCE = "incoming/2024-09-01.csv"


@pytest.fixture(scope="module")
def columns():
    return generate_transactions(500, seed=3)


@pytest.fixture(scope="module")
def csv_bytes(columns):
    return to_csv_bytes(columns)


def read(data: bytes, source: str = SOURCE, **limits):
    return read_batch(io.BytesIO(data), source=source, limits=BatchLimits(**limits) if limits else None)


def refused(data: bytes, source: str = SOURCE, **limits) -> BatchValidationError:
    with pytest.raises(BatchValidationError) as caught:
        read(data, source, **limits)
    return caught.value


def replace_cell(data: bytes, line: int, column: str, value: str) -> bytes:
    lines = data.decode().split("\n")
    header = [name.strip('"') for name in lines[0].split(",")]
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines).encode()


def test_good_file_round_trips_exactly(columns, csv_bytes):
    batch = read(csv_bytes)
    assert batch.n_rows == 500
    assert batch.labelled
    np.testing.assert_array_equal(batch.labels, columns[LABEL_COLUMN])
    for name in FEATURE_COLUMNS:
        np.testing.assert_array_equal(batch.column(name), columns[name])


def test_columns_in_any_order_and_without_label(columns):
    shuffled = {name: columns[name] for name in reversed(FEATURE_COLUMNS)}
    batch = read(to_csv_bytes(shuffled))
    assert not batch.labelled
    np.testing.assert_array_equal(batch.column("V7"), columns["V7"])
    np.testing.assert_array_equal(batch.features[:, 0], columns["Time"])


def test_bom_crlf_and_unquoted_header(csv_bytes):
    header, body = csv_bytes.split(b"\n", 1)
    data = codecs.BOM_UTF8 + header.replace(b'"', b"") + b"\r\n" + body.replace(b"\n", b"\r\n")
    assert read(data).n_rows == 500


def test_gzip_is_read_by_content(csv_bytes):
    assert read(gzip.compress(csv_bytes), source="incoming/a.csv.gz").n_rows == 500


def test_blocks_join_exactly_across_block_boundaries(monkeypatch, columns, csv_bytes):
    monkeypatch.setattr("fraudlib.batch.PARSE_BLOCK_BYTES", 997)
    batch = read(csv_bytes)
    np.testing.assert_array_equal(batch.column("Amount"), columns["Amount"])


def test_empty_file():
    assert refused(b"").code == "empty_file"


def test_header_only(csv_bytes):
    error = refused(csv_bytes.split(b"\n", 1)[0] + b"\n")
    assert error.code == "no_data_rows"
    assert "no data rows" in str(error)


def test_missing_column_is_named(columns):
    without_v7 = {name: values for name, values in columns.items() if name != "V7"}
    error = refused(to_csv_bytes(without_v7))
    assert (error.code, error.column, error.line) == ("missing_column", "V7", 1)
    assert str(error) == f"column V7 is missing from {SOURCE}"


def test_extra_column_is_named(columns):
    error = refused(to_csv_bytes({**columns, "merchant": np.zeros(500)}))
    assert (error.code, error.column) == ("unexpected_column", "merchant")


def test_duplicate_column(csv_bytes):
    header, body = csv_bytes.split(b"\n", 1)
    error = refused(header.replace(b'"V2"', b'"V1"') + b"\n" + body)
    assert (error.code, error.column) == ("duplicate_column", "V1")


def test_non_numeric_cell_names_line_and_column(csv_bytes):
    error = refused(replace_cell(csv_bytes, 42, "V13", "abc"))
    assert (error.code, error.line, error.column, error.found) == ("not_a_number", 42, "V13", "abc")
    assert "column V13 on line 42" in str(error)


def test_empty_cell(csv_bytes):
    error = refused(replace_cell(csv_bytes, 7, "Amount", ""))
    assert (error.code, error.line, error.column) == ("not_a_number", 7, "Amount")


def test_underscore_number_is_refused_like_numpy(csv_bytes):
    assert refused(replace_cell(csv_bytes, 3, "V1", "1_000")).code == "not_a_number"


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-Infinity", "1e400"])
def test_non_finite_values(csv_bytes, value):
    error = refused(replace_cell(csv_bytes, 10, "V5", value))
    assert (error.code, error.line, error.column) == ("not_finite", 10, "V5")


def test_short_row(csv_bytes):
    lines = csv_bytes.split(b"\n")
    lines[19] = lines[19].rsplit(b",", 1)[0]
    error = refused(b"\n".join(lines))
    assert (error.code, error.line) == ("wrong_field_count", 20)
    assert "30 fields; the header has 31" in str(error)


def test_bad_label(csv_bytes):
    error = refused(replace_cell(csv_bytes, 5, "Class", '"2"'))
    assert (error.code, error.line, error.column) == ("bad_label", 5, "Class")


def test_wrong_delimiter(csv_bytes):
    error = refused(csv_bytes.replace(b",", b";"))
    assert error.code == "wrong_delimiter"
    assert "';'" in str(error)


def test_binary_file():
    rng = np.random.default_rng(0)
    error = refused(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    assert error.code in ("not_text", "corrupt_gzip")


def test_latin1_text_is_not_utf8(csv_bytes):
    error = refused(csv_bytes.split(b"\n", 1)[0] + b"\n\xe9t\xe9,1\n")
    assert error.code == "not_text"


def test_gz_name_without_gzip_content(csv_bytes):
    error = refused(csv_bytes, source="incoming/a.csv.gz")
    assert error.code == "not_gzip"


def test_truncated_gzip(csv_bytes):
    error = refused(gzip.compress(csv_bytes)[:300], source="incoming/a.csv.gz")
    assert error.code == "corrupt_gzip"


def test_oversized_file(csv_bytes):
    error = refused(csv_bytes, max_bytes=len(csv_bytes) - 1)
    assert error.code == "too_large"
    assert read(csv_bytes, max_bytes=len(csv_bytes)).n_rows == 500


def test_gzip_bomb_is_limited_on_decompressed_size(csv_bytes):
    compressed = gzip.compress(csv_bytes)
    error = refused(compressed, source="incoming/a.csv.gz", max_bytes=len(compressed) * 2)
    assert error.code == "too_large"


def test_too_many_rows(csv_bytes):
    assert refused(csv_bytes, max_rows=499).code == "too_many_rows"
    assert read(csv_bytes, max_rows=500).n_rows == 500


def test_error_report_is_json_ready(csv_bytes):
    error = refused(replace_cell(csv_bytes, 42, "V13", "abc"))
    assert error.to_dict() == {
        "code": "not_a_number",
        "message": f"column V13 on line 42 of {SOURCE} is not a number: 'abc'",
        "line": 42,
        "column": "V13",
        "expected": "a decimal number",
        "found": "abc",
    }
