"""Read a CSV file of numbers, refusing anything ambiguous with the line and column.

The rules (see also ``docs/cli.md``): the text is UTF-8, with or without Excel's byte-order mark,
or UTF-16 with its mark. The first non-blank line is a header exactly when none of its cells is
a number, data when all are; a line with both (``1.5,2.O``) is an error, never a silent header. A
cell is a decimal number with an optional exponent, or ``nan``/``inf`` (refused later with their
rows); ``1_000``, which Python's ``float`` accepts, is not. Blank lines are skipped and counted in
line numbers, a comma ending every line is ignored, and a file written with ``;``, tabs, ``|`` or
spaces between values is refused with a hint.

With ``missing=True`` (files of rows with missing values, for imputation) an empty cell or
``nan`` marks a missing value and becomes NaN; a line of commas alone is a row with every value
missing, and only Inf is refused.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

import numpy as np

from madeflow.data.files import DataError, nonfinite_error

__all__ = ["read_csv", "read_csv_header"]

_NUMBER = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|nan|inf|infinity)", re.IGNORECASE
)
"""A number as a CSV cell may write it: decimal, optional exponent, or nan/inf (no ``1_000``)."""

_SEPARATORS = ((";", "';'"), ("\t", "tabs"), ("|", "'|'"), (None, "spaces"))


def _is_number(cell: str) -> bool:
    return _NUMBER.fullmatch(cell.strip()) is not None


def _decode(path: Path, raw: bytes) -> str:
    """The text of a CSV file: UTF-8 (with or without Excel's byte-order mark) or UTF-16."""
    encoding = "utf-8"
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # the codec reads the byte order from the mark
    elif raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]  # Excel's "CSV UTF-8"
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8 CSV"
        ) from None


def _separator_hint(row: list[str]) -> str:
    """A hint when a CSV record reads as numbers written with another separator."""
    text = ",".join(row)
    for sep, name in _SEPARATORS:
        parts = text.split(sep)
        if len(parts) < 2:
            continue
        if all(_is_number(p) for p in parts):
            return (
                f"; the file looks separated by {name}, but madeflow reads comma-separated "
                "values: re-save it with commas"
            )
        if sep == ";" and all(_is_number(p.replace(",", ".")) for p in parts):
            return (
                "; the file looks separated by ';' with decimal commas: re-save it with ',' "
                "between values and '.' as the decimal point"
            )
    return ""


def _records(path: Path, text: str, missing: bool = False) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records with the line (1-based) on which each starts.

    With ``missing``, a line of separators alone (``,,``) is a record: a row of missing values.
    """
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(f"{path}: line {line} contains a NUL byte; is it a binary file?")
    reader = csv.reader(io.StringIO(text, newline=""))
    records = []
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(f"{path}: line {reader.line_num}: {err}") from None
        if any(cell.strip() for cell in row) or (missing and len(row) > 1):
            records.append((line, row))
        line = reader.line_num + 1
    if records and len(records[0][1]) > 1 and all(not r[-1].strip() for _, r in records):
        records = [(n, r[:-1]) for n, r in records]  # every line ends with a comma
    return records


def _is_header(first: list[str], missing: bool) -> bool:
    """A first record is a header when none of its cells is a number (nor empty, if missing)."""
    header = not any(_is_number(c) or (missing and not c.strip()) for c in first)
    return header and not _separator_hint(first)  # a data line with another separator is not


def read_csv_header(path: Path, missing: bool = False) -> list[str] | None:
    """The header cells of a CSV file (stripped), or ``None`` when its first line is data.

    Args:
        path: The file, as :func:`read_csv` reads it.
        missing: As :func:`read_csv`.

    Returns:
        The names, or ``None``.

    Raises:
        DataError: If the file cannot be decoded or parsed, or is empty.
    """
    records = _records(path, _decode(path, path.read_bytes()), missing)
    if not records:
        raise DataError(f"{path} is empty (only blank lines)")
    first = records[0][1]
    return [c.strip() for c in first] if _is_header(first, missing) else None


def read_csv(path: Path, missing: bool = False) -> np.ndarray:
    """Read a comma-separated file of numbers, with an optional header line.

    The first non-blank line is a header when none of its cells is a number, and data when all
    are; a line with both (``1.5,2.O``) is an error naming the cell, never a silent header.
    Blank lines are skipped (line numbers in messages count them), a byte-order mark is
    dropped, and a comma ending every line is ignored.

    Args:
        path: The file.
        missing: Read an empty cell or ``nan`` as a missing value (NaN) and refuse only Inf;
            a line of commas alone is a row of missing values, and a header has no empty cell.

    Returns:
        ``(N, D)`` float64 values, all finite (NaN where missing with ``missing=True``).

    Raises:
        DataError: Naming the line (and column) of the first problem, with a hint when the file
            uses another separator.
    """
    records = _records(path, _decode(path, path.read_bytes()), missing)
    if not records:
        raise DataError(f"{path} is empty (only blank lines)")
    first_line, first = records[0]
    header = _is_header(first, missing)
    body = records[1:] if header else records
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    width = len(first)
    out = np.empty((len(body), width), dtype=np.float64)
    for i, (line, row) in enumerate(body):
        for j, cell in enumerate(row[:width]):
            if not _is_number(cell) and not (missing and not cell.strip()):
                if not cell.strip():
                    raise DataError(
                        f"{path}: line {line}, column {j + 1} is empty; fill in the missing "
                        "value or remove the line"
                    )
                raise DataError(
                    f"{path}: line {line}, column {j + 1} is not a number: {cell.strip()!r}"
                    + _separator_hint(row)
                )
        if len(row) != width:
            where = f"; the header on line {first_line} has {width}" if header else ""
            raise DataError(
                f"{path}: line {line} has {len(row)} columns, expected {width} (ragged rows)"
                + where
                + _separator_hint(row)
            )
        out[i] = [float(c) if c.strip() else np.nan for c in row]
    bad = np.flatnonzero(~_allowed(out, missing).all(axis=1))
    if len(bad):
        raise nonfinite_error(path, bad, lines=[body[i][0] for i in bad], missing=missing)
    return out


def _allowed(values: np.ndarray, missing: bool) -> np.ndarray:
    """Where values are acceptable: finite, or NaN too when it marks a missing value."""
    return ~np.isinf(values) if missing else np.isfinite(values)
