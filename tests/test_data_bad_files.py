"""Odd data files: each is read right, or refused with one ``DataError`` line naming the place.

:data:`FILE_CASES` is the table of awkward files (Excel byte-order marks, a typo in the first
row, blank lines, semicolons, trailing commas, quoted fields, huge values, ...); each names the
bytes written and either the array expected back or the message expected. The property tests
write random finite arrays as CSV (with and without header, BOM, CRLF, quotes, blank lines),
NPY and NPZ and read them back exactly, and feed random bytes to every reader: they must give
an array or a ``DataError``, nothing else.
"""

from __future__ import annotations

import io
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from madeflow.data.files import DataError, load_array
from madeflow.data.memmap import load_memmap


@dataclass
class FileCase:
    """A file (its name and bytes) and what reading it must give.

    ``expect`` is the array read back (float64 values) or a regex the ``DataError`` must match.
    """

    name: str
    content: bytes | None
    expect: list | str


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


FILE_CASES: dict[str, FileCase] = {
    # --- silently wrong before: the first data row was taken for a header
    "csv-utf8-bom": FileCase(
        "excel.csv", "\ufeff1.5,2.0\n3,4\n5,6\n".encode(), [[1.5, 2], [3, 4], [5, 6]]
    ),
    "csv-bom-header": FileCase("h.csv", "\ufeffa,b\n1,2\n3,4\n".encode(), [[1, 2], [3, 4]]),
    "csv-typo-first-row": FileCase(
        "typo.csv", b"1.5,2.O\n3,4\n5,6\n", r"typo\.csv: line 1, column 2 is not a number: '2\.O'"
    ),
    "csv-typo-first-cell": FileCase(
        "typo1.csv", b"l.5,2\n3,4\n5,6\n", r"line 1, column 1 is not a number: 'l\.5'"
    ),
    "csv-underscore-number": FileCase(
        "us.csv", b"1_000,2\n3,4\n", r"line 1, column 1 is not a number: '1_000'"
    ),
    "csv-utf16-bom": FileCase("u16.csv", "x,y\n1,2\n3,4\n".encode("utf-16"), [[1, 2], [3, 4]]),
    "csv-trailing-commas": FileCase("tc.csv", b"1,2,\n3,4,\n5,6,\n", [[1, 2], [3, 4], [5, 6]]),
    "csv-trailing-comma-header": FileCase("tch.csv", b"a,b,\n1,2,\n3,4,\n", [[1, 2], [3, 4]]),
    "csv-quoted": FileCase("q.csv", b'"a","b"\n"1.5","2"\n"3",4\n', [[1.5, 2], [3, 4]]),
    "csv-crlf": FileCase("crlf.csv", b"a,b\r\n1,2\r\n3,4\r\n", [[1, 2], [3, 4]]),
    "csv-spaces-around": FileCase("sp.csv", b" 1 , 2 \n3,\t4\n", [[1, 2], [3, 4]]),
    "csv-unicode-header": FileCase(
        "u.csv", "température,Δt\n1,2\n3,4\n".encode(), [[1, 2], [3, 4]]
    ),
    "csv-blank-lines-only-between": FileCase("bl.csv", b"\n1,2\n\n\n3,4\n   \n", [[1, 2], [3, 4]]),
    # --- unclear before: wrong line numbers, no hints
    "csv-blank-lines-line-number": FileCase(
        "blank.csv", b"1,2\n\n\n3,x\n", r"blank\.csv: line 4, column 2 is not a number: 'x'"
    ),
    "csv-quoted-newline-line-number": FileCase(
        "qn.csv", b'"a\nb",c\n1,2\n3,y\n', r"line 4, column 2 is not a number: 'y'"
    ),
    "csv-semicolons": FileCase(
        "semi.csv", b"1;2\n3;4\n5;6\n", r"semi\.csv: line 1, .*separated by ';'.*comma"
    ),
    "csv-semicolon-header": FileCase(
        "semih.csv", b"a;b\n1;2\n3;4\n", r"line 2, .*separated by ';'"
    ),
    "csv-decimal-commas": FileCase(
        "dec.csv", b"1,5;2,5\n3,5;4,5\n", r"separated by ';'.*decimal point"
    ),
    "csv-tabs": FileCase("tab.csv", b"1\t2\n3\t4\n", r"line 1, .*separated by tabs"),
    "csv-spaces": FileCase("sp2.csv", b"1 2 3\n4 5 6\n", r"line 1, .*separated by spaces"),
    "csv-empty-cell": FileCase(
        "hole.csv", b"1,2,3\n4,,6\n", r"line 2, column 2 is empty; fill in the missing value"
    ),
    "csv-header-width": FileCase(
        "hw.csv",
        b"a,b\n1,2,3\n4,5,6\n",
        r"line 2 has 3 columns, expected 2 \(ragged rows\); the header on line 1 has 2",
    ),
    "csv-only-blank-lines": FileCase(
        "blanks.csv", b"\n\n  \n", r"blanks\.csv is empty \(only blank lines\)"
    ),
    "csv-header-only": FileCase("ho.csv", b"a,b\n", r"has a header but no data rows"),
    "csv-not-utf8": FileCase(
        "latin.csv", "temp\xe9rature\n1\n2\n".encode("latin-1"), r"is not UTF-8 text .*UTF-8"
    ),
    "csv-binary": FileCase("bin.csv", _npy(np.zeros((3, 2))), r"is not UTF-8 text"),
    "csv-nul-byte": FileCase("nul.csv", b"1,2\n3,\x004\n", r"line 2 contains a NUL byte"),
    "csv-inf-line": FileCase(
        "inf.csv", b"a,b\n1,2\n\n3,1e400\n", r"NaN or Inf in 1 row\(s\) \(0-based\): 1 \(line 4\)"
    ),
    "csv-nan-line": FileCase(
        "nan.csv", b"1,2\nnan,4\n", r"NaN or Inf in 1 row\(s\) \(0-based\): 1 \(line 2\)"
    ),
    "csv-beyond-float32": FileCase(
        "big.csv", b"1,2\n3,1e39\n5,6\n", r"beyond the range of float32 .*\(0-based\): 1; rescale"
    ),
    # --- npy / npz / pt
    "npy-beyond-float32": FileCase(
        "big.npy",
        _npy(np.array([[1.0, 2.0], [1e300, 0.0], [3.0, 4.0]])),
        r"float32 .*\(0-based\): 1; rescale",
    ),
    "npy-truncated": FileCase("cut.npy", _npy(np.zeros((50, 2)))[:-40], r"cannot read .*cut\.npy"),
    "npy-complex": FileCase(
        "c.npy", _npy(np.zeros((3, 2), dtype=complex)), r"holds complex128 values; expected numbers"
    ),
    "npy-strings": FileCase("s.npy", _npy(np.array([["a", "b"], ["c", "d"]])), r"expected numbers"),
    "npy-bool": FileCase("b.npy", _npy(np.array([[True, False], [False, True]])), [[1, 0], [0, 1]]),
    "npy-float16": FileCase("h.npy", _npy(np.ones((2, 2), dtype=np.float16)), [[1, 1], [1, 1]]),
    "npz-no-arrays": FileCase("none.npz", _npz(), r"none\.npz holds no arrays"),
    "npz-two-arrays": FileCase(
        "two.npz", _npz(a=np.zeros((3, 2)), b=np.ones((3, 2))), r"several arrays .*two\.npz:NAME"
    ),
    "pt-dict": FileCase("d.pt", None, r"must hold a single tensor, found dict"),
    "directory": FileCase("folder.csv", None, r"not a file: .*folder\.csv"),
    "symlink-loop": FileCase("loop.csv", None, r"loop\.csv is a symbolic link loop"),
    "dangling-symlink": FileCase("gone.csv", None, r"gone\.csv is a broken symbolic link"),
}


def _make(tmp: Path, case: FileCase) -> Path:
    path = tmp / case.name
    if case.content is not None:
        path.write_bytes(case.content)
    elif case.name.endswith(".pt"):
        torch.save({"x": torch.zeros(3, 2)}, path)
    elif case.name == "folder.csv":
        path.mkdir()
    elif case.name == "loop.csv":
        os.symlink(path.name, path)
    else:
        os.symlink(tmp / "missing.csv", path)
    return path


@pytest.mark.parametrize("name", list(FILE_CASES))
def test_odd_file_is_read_right_or_refused_in_one_line(name, tmp_path):
    case = FILE_CASES[name]
    path = _make(tmp_path, case)
    if isinstance(case.expect, str):
        with pytest.raises(DataError, match=case.expect) as info:
            load_array(path)
        assert "\n" not in str(info.value)
    else:
        got = load_array(path, dtype=torch.float64)
        assert got.tolist() == [[float(v) for v in row] for row in case.expect]


def test_file_catalogue_has_both_kinds():
    refused = [c for c in FILE_CASES.values() if isinstance(c.expect, str)]
    assert len(refused) >= 20 and len(FILE_CASES) - len(refused) >= 10


def test_memmap_refuses_values_beyond_float32(tmp_path):
    np.save(tmp_path / "big.npy", np.array([[1.0, 2.0], [3.0, 4.0], [-1e300, 0.0]]))
    with pytest.raises(DataError, match=r"float32 .*\(0-based\): 2; rescale"):
        load_memmap(tmp_path / "big.npy")
    assert len(load_memmap(tmp_path / "big.npy", dtype=torch.float64)) == 3


# ----------------------------------------------------------------------------- properties
FINITE = st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False, width=64)
ARRAYS = hnp.arrays(np.float64, st.tuples(st.integers(2, 6), st.integers(1, 4)), elements=FINITE)
PROPS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _csv_text(arr: np.ndarray, header: bool, quote: bool, blank: bool) -> str:
    lines = []
    if header:
        lines.append(",".join(f"col{j}" for j in range(arr.shape[1])))
    for row in arr:
        cells = [repr(float(v)) for v in row]
        if quote:
            cells = [f'"{c}"' for c in cells]
        lines.append(",".join(cells))
        if blank:
            lines.append("")
    return "\n".join(lines) + "\n"


@PROPS
@given(
    arr=ARRAYS,
    header=st.booleans(),
    quote=st.booleans(),
    blank=st.booleans(),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_csv_round_trips_random_finite_arrays(
    tmp_path_factory, arr, header, quote, blank, bom, crlf
):
    text = _csv_text(arr, header, quote, blank)
    if crlf:
        text = text.replace("\n", "\r\n")
    data = ("\ufeff" if bom else "").encode() + text.encode()
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    path.write_bytes(data)
    got = load_array(path, dtype=torch.float64).numpy()
    np.testing.assert_array_equal(got, arr)


@PROPS
@given(arr=ARRAYS, compressed=st.booleans(), order=st.sampled_from("CF"))
def test_npy_and_npz_round_trip_random_finite_arrays(tmp_path_factory, arr, compressed, order):
    folder = tmp_path_factory.mktemp("np")
    arr = np.asarray(arr, order=order)
    np.save(folder / "a.npy", arr)
    (np.savez_compressed if compressed else np.savez)(folder / "a.npz", data=arr)
    for name in ("a.npy", "a.npz"):
        got = load_array(folder / name, dtype=torch.float64).numpy()
        np.testing.assert_array_equal(got, arr)


GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet=string.printable + "\ufeff;é\x00", max_size=300).map(str.encode),
)


@PROPS
@given(data=GARBAGE, suffix=st.sampled_from([".csv", ".npy", ".npz", ".pt"]))
def test_random_bytes_give_an_array_or_a_data_error(tmp_path_factory, data, suffix):
    path = tmp_path_factory.mktemp("junk") / f"junk{suffix}"
    path.write_bytes(data)
    try:
        x = load_array(path)
    except DataError as err:
        assert "\n" not in str(err) and str(err)
    else:  # whatever was accepted is a finite (N >= 2, D >= 1) float32 matrix
        assert x.dim() == 2 and x.shape[0] >= 2 and x.shape[1] >= 1
        assert x.dtype == torch.float32 and torch.isfinite(x).all()


@PROPS
@given(
    rows=st.lists(
        st.lists(
            st.sampled_from(["1", "2.5", "-3e2", "x", "", " ", "nan", "1,5", '"4"']),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=6,
    )
)
def test_random_cell_grids_give_an_array_or_a_data_error_naming_a_line(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("grid") / "g.csv"
    path.write_text("\n".join(",".join(r) for r in rows) + "\n")
    try:
        load_array(path)
    except DataError as err:
        assert "\n" not in str(err)
        assert re.search(r"line \d+|is empty|has no data|header but no data|row\(s\)", str(err)), (
            err
        )
