"""Reading landed CSV files: arrow's streaming reader, and the same rows, problems and refusals
as pandas' reading, which stays the fallback for what arrow will not parse."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tabml_assets.resources import data_sources
from tabml_assets.resources.data_sources import (
    READ_PROBLEMS_COLUMN,
    SOURCE_ROW_COLUMN,
    UnreadableFileError,
    iter_landing_frames,
    stream_landed_file,
)
from tabml_assets.spec import DatasetSpec

COLUMNS = {
    "measured_at": {"type": "datetime"},
    "reading": {"type": "float"},
    "count": {"type": "integer"},
    "site": {"type": "string", "nullable": True},
    "ok": {"type": "boolean", "nullable": True},
    "label": {"type": "float"},
}
HEADER = ",".join(COLUMNS) + "\n"
UTC = DatasetSpec(columns=COLUMNS, event_time="measured_at", label_columns=["label"])
BERLIN = UTC.model_copy(update={"timezone": "Europe/Berlin"})
DAY_FIRST = UTC.model_copy(update={"datetime_format": "%d/%m/%Y %H:%M"})
# A few hundred bytes per block, so a file of a few thousand rows spans many blocks.
SMALL_BLOCK = 512


def rows(count: int, start: int = 0) -> str:
    return "".join(
        f"2025-08-20 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d},{i / 4},{i},s{i % 5},"
        f"{'true' if i % 2 else 'No'},{i % 3}.5\n"
        for i in range(start, start + count)
    )


def streamed(path: Path, dataset: DatasetSpec, batch_rows: int) -> pd.DataFrame:
    return pd.concat(list(stream_landed_file(path, dataset, batch_rows)), ignore_index=True)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data_sources, "CSV_BLOCK_BYTES", SMALL_BLOCK)


def switch_arrow_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every CSV read by pandas alone from now on: how tabml read CSV files before arrow."""

    def refuse(*args: object) -> Iterator[pa.Table]:
        raise pa.ArrowInvalid("arrow switched off")
        yield  # a generator, as the reader is

    monkeypatch.setattr(data_sources, "_arrow_csv_tables", refuse)


def test_a_bad_number_in_a_later_block_marks_its_row_and_the_other_blocks_stay_typed(
    tmp_path: Path, small_blocks: None
) -> None:
    """Blocks before and after the bad cell are cast by arrow; the batch holding it falls back
    to text for that column alone, so only its row is marked, with the column named."""
    lines = rows(3000).splitlines(keepends=True)
    lines[2400] = lines[2400].replace(",600.0,", ",6OO,")
    path = tmp_path / "readings.csv"
    path.write_text(HEADER + "".join(lines))
    batches = list(iter_landing_frames(path, UTC, 500))
    assert [len(b) for b in batches] == [500] * 6  # batches of rows, not of blocks
    assert [str(b["reading"].dtype) for b in batches] == ["float64"] * 4 + ["object", "float64"]
    assert all(str(b["count"].dtype) == "float64" and str(b["measured_at"].dtype) == "datetime64[us]" for b in batches)
    landed = streamed(path, UTC, 500)
    assert len(landed) == 3000
    assert landed[SOURCE_ROW_COLUMN].tolist() == list(range(3000))
    marked = landed[landed[READ_PROBLEMS_COLUMN] != ""]
    assert marked[SOURCE_ROW_COLUMN].tolist() == [2400]
    assert marked[READ_PROBLEMS_COLUMN].tolist() == ["unparseable reading"]
    assert landed["reading"].isna().sum() == 1
    np.testing.assert_array_equal(landed["reading"].drop(index=2400), np.arange(3000)[np.arange(3000) != 2400] / 4)


def test_a_short_row_past_the_first_blocks_is_read_by_pandas_from_there_without_losing_a_row(
    tmp_path: Path, small_blocks: None
) -> None:
    """An upload cut off mid-row: arrow refuses the short row, pandas reads the rest (filling
    the row's missing cells), and no row is lost or delivered twice."""
    text = HEADER + rows(2000)
    path = tmp_path / "cut.csv"
    path.write_text(text[: text.rstrip("\n").rfind("\n") + 1 + 25])
    landed = streamed(path, UTC, 300)
    assert landed[SOURCE_ROW_COLUMN].tolist() == list(range(2000))
    assert landed["count"].iloc[:1999].tolist() == list(range(1999))
    assert landed["reading"].iloc[-1] == 499.7  # the cut-off 499.75
    assert pd.isna(landed["count"].iloc[-1]) and pd.isna(landed["label"].iloc[-1])


# Cells pandas and arrow could read differently: the missing-value words, blanks, padding,
# offsets, times a clock change skips or repeats, quoted newlines, integers written as floats.
TRICKY = {
    "missing_words": "2025-08-20 01:00:00,NA,null,None,,\n2025-08-20 01:00:01,\"\",3,\"\",TRUE,\n"
    "2025-08-20 01:00:02,nan,#N/A,n/a,N/A,NaN\n2025-08-20 01:00:03,4.5,4,<NA>,Yes,1\n",
    "padding": "2025-08-20 01:00:00, 3.5,4 ,  ,  true ,1\n 2025-08-20 01:00:02,1,1,x,y,1\n",
    "offsets": "2025-08-20T01:00:00Z,1,1,a,t,1\n2025-08-20 03:00:00+02:00,1,1,a,t,1\n2025-08-20 04:00:00,1,1,a,t,1\n",
    "clock_changes": "2025-10-26 02:30:00,1,1,a,t,1\n2025-03-30 02:30:00,1,1,a,t,1\n2025-08-20 04:00:00,1,1,a,t,1\n",
    "date_forms": "2025-08-20,1,1,a,t,1\n2025-08-20T10:11:12.5,1,1,a,t,1\n2025-8-20 10:00,1,1,a,t,1\n"
    "Aug 20 2025 10:00,1,1,a,t,1\nnot a date,1,1,a,t,1\n",
    "integers": "2025-08-20 01:00:00,1,3.0,a,t,1\n2025-08-20 01:00:01,1,3.5,a,t,1\n2025-08-20 01:00:02,1,1e3,a,t,1\n",
    "quoted_newline": '2025-08-20 01:00:00,1,1,"two\nlines",t,1\n2025-08-20 01:00:01,inf,2,"a,b",f,1\n',
    "blank_lines": "2025-08-20 01:00:00,1,1,a,t,1\n\n\n2025-08-20 01:00:01,2,2,b,f,1\n\n",
}


@pytest.mark.parametrize("dataset", [UTC, BERLIN], ids=["utc", "berlin"])
@pytest.mark.parametrize("cells", TRICKY.values(), ids=TRICKY.keys())
def test_arrow_reads_tricky_cells_as_pandas_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cells: str, dataset: DatasetSpec
) -> None:
    path = tmp_path / "tricky.csv.gz"
    path.write_bytes(gzip.compress((HEADER + cells).encode()))
    with_arrow = streamed(path, dataset, 2)
    switch_arrow_off(monkeypatch)
    pd.testing.assert_frame_equal(with_arrow, streamed(path, dataset, 2))


# Dates in a declared format: as the format writes them, and as pandas refuses or reads them.
FORMATTED = {
    "as_written": "05/11/2025 08:00,1,1,a,t,1\n20/08/2025 23:59,1,1,a,t,1\n,1,1,a,t,1\n",
    "unpadded": "5/1/2026 8:00,1,1,a,t,1\n20/08/2025 23:59,1,1,a,t,1\n",
    "impossible_day": "31/02/2026 08:00,1,1,a,t,1\n20/08/2025 23:59,1,1,a,t,1\n",
    "leading_space": " 05/11/2026 08:00,1,1,a,t,1\n20/08/2025 23:59,1,1,a,t,1\n",
    "iso_instead": "2025-08-20 10:00:00,1,1,a,t,1\n20/08/2025 23:59,1,1,a,t,1\n",
}


@pytest.mark.parametrize("dataset", [DAY_FIRST, DAY_FIRST.model_copy(update={"timezone": "Europe/Berlin"})],
                         ids=["utc", "berlin"])
@pytest.mark.parametrize("cells", FORMATTED.values(), ids=FORMATTED.keys())
def test_arrow_reads_dates_in_the_declared_format_as_pandas_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cells: str, dataset: DatasetSpec
) -> None:
    path = tmp_path / "formatted.csv"
    path.write_text(HEADER + cells)
    with_arrow = streamed(path, dataset, 100)
    switch_arrow_off(monkeypatch)
    pd.testing.assert_frame_equal(with_arrow, streamed(path, dataset, 100))


def test_dates_written_as_the_declared_format_writes_them_are_cast_by_arrow(tmp_path: Path) -> None:
    path = tmp_path / "formatted.csv"
    path.write_text(HEADER + FORMATTED["as_written"])
    (batch,) = iter_landing_frames(path, DAY_FIRST, 100)
    assert str(batch["measured_at"].dtype) == "datetime64[us]"
    assert batch["measured_at"].iloc[0] == pd.Timestamp("2025-11-05 08:00")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (HEADER + rows(3) + "2025-08-20 01:00:00,1,1,a,t,1,surplus\n", "Expected 6 fields in line 5, saw 7"),
        ((HEADER + rows(3)).encode() + "caf\u00e9,1,1,a,t,1\n".encode("latin-1"), "found byte 0xe9, which is not utf-8"),
        ("\n", "No columns to parse from file"),
        (HEADER + "".join(f"2025-08-20 01:00:0{i},far,1,a,t,1\n" for i in range(5)),
         "column 'reading' expected float, found object values such as ['far', 'far']"),
    ],
    ids=["surplus_field", "undecodable_byte", "no_header", "no_number_at_all"],
)
def test_a_file_refused_by_arrow_is_refused_with_pandas_message_naming_line_and_file(
    tmp_path: Path, small_blocks: None, content: str | bytes, expected: str
) -> None:
    path = tmp_path / "refused.csv"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    with pytest.raises(UnreadableFileError) as refused:
        streamed(path, UTC, 2)
    assert str(path) in str(refused.value) and expected in str(refused.value)


def test_extra_columns_are_named_and_an_absent_label_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "extra.csv"
    path.write_text("measured_at,note,reading,count,site,ok,more\n" + "2025-08-20 01:00:00,n,1.5,2,a,t,m\n" * 3)
    ignored: list[str] = []
    landed = pd.concat(list(stream_landed_file(path, UTC, 2, ignored)), ignore_index=True)
    assert ignored == ["note", "more"]
    assert landed["label"].isna().all() and landed["reading"].tolist() == [1.5] * 3
    assert (landed[READ_PROBLEMS_COLUMN] == "").all()
