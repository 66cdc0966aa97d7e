"""Your TSV/CSV files with a header line: the named columns of each row.

Used by pairs:FILE (a source and a target column) and labeled:FILE (a text and a label column),
which read the file as strict UTF-8 (a byte-order mark dropped, CRLF as LF). The delimiter is a
comma for .csv, a tab for .tsv/.tab/.txt, otherwise a tab if the header line has one, else a comma.
TSV is read without quoting, since text may hold lone quote marks; CSV with the usual quoting.
Blank lines are skipped; a line with the wrong number of fields, or broken quoting, is an error
naming the file and the line.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import GenlabError, warn


def require_table(path: Path, prefix: str) -> None:
    """A clear error when a pairs:/labeled: FILE is missing (prefix: the data set's prefix)."""
    if not path.is_file():
        raise GenlabError(f"{prefix}: {path} does not exist or is not a file",
                          "give a .tsv or .csv file with a header line")


def read_columns(path: Path, text: str, columns: dict[str, str], delimiter: str | None = None, *,
                 filled: int = 0, filled_names: str = "") -> list[tuple[int, list[str]]]:
    """[(line number, [the cells of `columns`, stripped, in that order])] of a TSV/CSV file's text.

    text: the file's text (read by the caller with data.text.read_text_file).
    columns: {the data setting that names a column (e.g. "source_column"): its header name}; the
    setting is what an error about a missing column tells the user to set.
    filled: rows with an empty cell among the first `filled` columns are skipped, with one notice
    ("... with an empty {filled_names}", e.g. "source or target")."""
    delimiter = delimiter or _delimiter(path, text)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting, strict=True)
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)
        if header is None:
            raise GenlabError(f"{path} is empty", "give a file with a header line and one example per line")
        header = [cell.strip() for cell in header]
        for setting, column in columns.items():
            if column not in header:
                raise GenlabError(f"{path} has no column {column!r} (its header line names: "
                                  f"{', '.join(repr(h) for h in header)})",
                                  f"name the columns with data.{setting}=NAME (and the others)")
        at = [header.index(column) for column in columns.values()]
        rows, empty = [], []
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise GenlabError(f"{path}, line {reader.line_num}: {len(row)} field(s), "
                                  f"but the header has {len(header)}",
                                  f"each line needs {len(header)} fields separated by {_shown(delimiter)}")
            cells = [row[i].strip() for i in at]
            if all(cells[:filled]):
                rows.append((reader.line_num, cells))
            else:
                empty.append(reader.line_num)
    except csv.Error as e:
        raise GenlabError(f"{path}, line {reader.line_num}: {e}", "check the quoting on that line") from None
    if empty:
        warn(f"skipped {len(empty)} line(s) of {path} with an empty {filled_names} (line {empty[0]}"
             f"{', ...' if len(empty) > 1 else ''})")
    return rows


def _delimiter(path: Path, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return ","
    if suffix in (".tsv", ".tab", ".txt"):
        return "\t"
    return "\t" if "\t" in text.partition("\n")[0] else ","


def _shown(delimiter: str) -> str:
    return {"\t": "tabs", ",": "commas", ";": "semicolons"}.get(delimiter, repr(delimiter))
