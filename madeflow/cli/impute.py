"""``madeflow impute``: fill the missing values (NaN, empty CSV cells) of a data file.

The run's MADE density estimator draws each row's missing entries from its exact conditional
given the row's observed entries (:func:`madeflow.impute`), in the run's model space, and the
completions are mapped back to the file's units. Observed entries are copied from the file, never
recomputed, so they come back exactly as read (as float64). A CSV file's header is written back
above the completed rows. Every row's observed pattern is checked before anything is drawn: a
pattern that no mask's ordering puts first is refused with the rows and the orderings that would
work. The output file is checked before any work and written atomically, never overwritten
without ``--force``.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
import torch

from madeflow.cli.commands import SAMPLE_CHUNK, check_output, write_array
from madeflow.cli.errors import UsageError
from madeflow.cli.settings import device_from
from madeflow.data.csv_reader import read_csv_header
from madeflow.data.files import DataError, load_array
from madeflow.data.preprocessing import DataSpace
from madeflow.distributions.made import MADEDensity
from madeflow.imputation import check_imputable, impute
from madeflow.runs.folder import load_run
from madeflow.runs.safe_io import atomic_write_bytes

__all__ = ["cmd_impute", "complete_rows"]

_CLI_REMEDY = (
    "With madeflow fit alone (identity ordering): put the columns that are observed first in the "
    "file and fit on that order."
)


def cmd_impute(args: argparse.Namespace) -> int:
    """``madeflow impute RUN DATA -o OUT``: the rows of ``DATA`` with their NaN filled in."""
    out = check_output(args.output, args.force)
    device = device_from(args.device)
    config, model, space = load_run(args.run, device, force=args.force)
    if not isinstance(model, MADEDensity):
        raise UsageError(
            f"madeflow impute needs a MADE density estimator run (made-bernoulli, made-gaussian "
            f"or made-mog); {args.run} holds a {config['model']['name']!r} model, whose "
            "conditionals given the observed columns are not exact"
        )
    x_data = load_array(args.data, dtype=torch.float64, missing=True)
    d = config["model"]["input_dim"]
    if x_data.shape[1] != d:
        raise DataError(f"{args.data} has {x_data.shape[1]} columns; the model expects {d}")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        completed = complete_rows(model, space, x_data.to(device), args.draws, args.data)
    missing = torch.isnan(x_data)
    _write(out, completed.cpu().numpy(), _header(args.data, out))
    print(
        f"filled {int(missing.sum())} missing value(s) in {int(missing.any(1).sum())} of "
        f"{len(x_data)} rows of {args.data} "
        + ("(one draw each)" if args.draws == 1 else f"(the mean of {args.draws} draws each)")
    )
    print(f"wrote {out}")
    return 0


def complete_rows(
    model: MADEDensity, space: DataSpace, x_data: torch.Tensor, draws: int, label: str
) -> torch.Tensor:
    """Fill the NaN of data-space rows with exact conditional draws (or their mean).

    Args:
        model: The run's estimator.
        space: The run's map between data and model space.
        x_data: ``(N, D)`` float64 in data space, NaN where missing.
        draws: Draws per row; more than one returns their mean, in data space.
        label: The data's name, for messages.

    Returns:
        ``(N, D)`` float64: ``x_data``'s observed entries, bit for bit, and the draws elsewhere.

    Raises:
        DataError: If a row's observed pattern cannot be conditioned on, an observed value is
            outside what the model accepts, or becomes infinite in model space.
    """
    x = space.to_model(x_data)
    if bool(torch.isinf(x).any()):
        raise DataError(f"{label} has values that become infinite in the model's space")
    x = x.to(model.model_dtype())
    try:
        check_imputable(model, x)  # every row, before any draw (row indices are the file's)
    except ValueError as err:
        raise DataError(f"{label}: {err} {_CLI_REMEDY}") from None
    try:
        parts = []
        with torch.no_grad():
            for start in range(0, len(x), max(1, SAMPLE_CHUNK // draws)):
                rows = x[start : start + max(1, SAMPLE_CHUNK // draws)]
                filled = impute(model, rows, (draws,))
                parts.append(space.to_data(filled.flatten(0, 1)).double().reshape(filled.shape))
    except ValueError as err:
        raise DataError(f"{label}: {err}") from None
    completed = torch.cat(parts, 1).mean(0)
    return torch.where(torch.isnan(x_data), completed, x_data)


def _header(data: str, out: Path) -> list[str] | None:
    """The header of a CSV input, to write above CSV output; ``None`` otherwise."""
    path = Path(data)
    if path.suffix.lower() != ".csv" or out.suffix.lower() != ".csv":
        return None
    return read_csv_header(path, missing=True)


def _write(out: Path, rows: np.ndarray, header: list[str] | None) -> None:
    """Write ``.npy``, or CSV with the header and every value's shortest exact decimal form."""
    if out.suffix.lower() == ".npy":
        write_array(out, rows)
        return
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows([repr(v) for v in row] for row in rows.tolist())
    atomic_write_bytes(out, text.getvalue().encode("utf-8"))
