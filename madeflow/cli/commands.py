"""``madeflow evaluate``, ``madeflow sample`` and ``madeflow plot``: use a finished run.

Each loads the run with :func:`madeflow.load_run` (everything validated, a foreign ``model.pt``
refused unless ``--force``). Output files are checked before any work and written atomically;
nothing is overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import numpy as np
import torch

from madeflow.cli.data import prepare
from madeflow.cli.errors import UsageError, say
from madeflow.cli.settings import device_from
from madeflow.data.files import DataError, check_range, load_array
from madeflow.data.rows import to_device
from madeflow.runs.folder import data_drift, load_run
from madeflow.runs.safe_io import atomic_write_bytes
from madeflow.train.evaluation import evaluate_log_prob, mean_and_stderr

__all__ = [
    "MAX_SAMPLE_VALUES",
    "SAMPLE_CHUNK",
    "check_output",
    "cmd_evaluate",
    "cmd_plot",
    "cmd_sample",
    "write_array",
]

MAX_SAMPLE_VALUES = 2 * 10**8
"""Most values (rows times columns) one ``madeflow sample`` call writes (1.6 GB as float64)."""

SAMPLE_CHUNK = 100_000
"""Rows drawn per model call by ``madeflow sample`` (bounds the memory of the sampler)."""


def check_output(name: str, force: bool) -> Path:
    """Check an output file before any work: suffix, folder, and nothing overwritten unforced."""
    path = Path(name)
    if path.suffix.lower() not in (".npy", ".csv"):
        raise UsageError(f"output file must end in .npy or .csv, got {path}")
    if not path.parent.is_dir():
        raise UsageError(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise UsageError(f"output {path} is a folder; name a file")
    if os.path.lexists(path) and not force:
        raise UsageError(
            f"{path} already exists; pass --force to overwrite it, or choose another -o"
        )
    return path


def write_array(path: Path, arr: np.ndarray, columns: list[str] | None = None) -> None:
    """Write ``.npy`` or ``.csv`` atomically, to exactly ``path`` (``np.save`` adds ``.npy``).

    A CSV gets ``columns`` as its header line (quoted where a name needs it), if given.
    """
    buffer = io.BytesIO()
    if path.suffix.lower() == ".npy":
        np.save(buffer, arr)
    else:
        if columns:
            line = io.StringIO()
            csv.writer(line, lineterminator="\n").writerow(columns)
            buffer.write(line.getvalue().encode())
        np.savetxt(buffer, arr.reshape(arr.shape[0], -1), delimiter=",", fmt="%.9g")
    atomic_write_bytes(path, buffer.getvalue())


def _drift(config: dict, force: bool, action: str) -> bool:
    """Refuse (or with ``force`` warn about) a training data file changed since ``fit``."""
    drift = data_drift(config)
    if drift is None:
        return False
    if not force:
        raise DataError(f"{drift}; {action} Restore it, or pass --force to use it anyway")
    say(False, f"madeflow: warning: {drift}; using it anyway (--force)")
    return True


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``madeflow evaluate``: per-row log-likelihoods and their mean ± standard error."""
    device = device_from(args.device)
    out = check_output(args.output, args.force) if args.output else None
    config, model, space = load_run(args.run, device, force=args.force)
    if args.data:
        x_data = load_array(args.data, dtype=torch.float64).to(device)
        d = config["model"]["input_dim"]
        if x_data.shape[1] != d:
            raise DataError(f"{args.data} has {x_data.shape[1]} columns; the model expects {d}")
        x = space.to_model(x_data).to(torch.float32)  # standardised in float64 first
        check_range(x, f"{args.data} (in model space)")
        label = args.data
    else:
        _drift(config, args.force, f"its {args.split} split is not the one the run was scored on.")
        x = to_device(getattr(prepare(config["data"]), args.split), device)
        label = f"{args.split} split"
    ll = evaluate_log_prob(model, x)
    ll_data = ll + space.log_jacobian(x).to(ll.device)
    if not torch.isfinite(ll_data).all():
        bad = torch.nonzero(~torch.isfinite(ll_data)).flatten()[:10].tolist()
        print(f"madeflow: warning: non-finite log-likelihood in rows {bad}", file=sys.stderr)
    m, se = mean_and_stderr(ll_data)
    print(f"{label}: {len(ll)} rows, log-likelihood {m:.4f} ± {se:.4f} nats (data space)")
    if space.kind == "digits" or space.standardizer is not None:
        mm, sem = mean_and_stderr(ll)
        print(f"  in model space: {mm:.4f} ± {sem:.4f} nats")
    if out is not None:
        write_array(out, ll_data.detach().cpu().double().numpy())
        print(f"wrote {out}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """``madeflow sample``: draw samples and save them in the original data space."""
    out = check_output(args.output, args.force)
    device = device_from(args.device)
    config, model, space = load_run(args.run, device, force=args.force)
    d = config["model"]["input_dim"]
    if args.num_samples * d > MAX_SAMPLE_VALUES:
        raise UsageError(
            f"-n {args.num_samples} would write {args.num_samples * d:.2e} values (D={d}), more "
            f"than {MAX_SAMPLE_VALUES:.0e} in one call; draw fewer samples per call"
        )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(args.seed)
        with torch.no_grad():
            parts = []
            for start in range(0, args.num_samples, SAMPLE_CHUNK):
                n = min(SAMPLE_CHUNK, args.num_samples - start)
                parts.append(space.to_data(model.sample((n,))).detach().cpu().double())
    columns = config["data"].get("columns")  # a CSV's header, recorded by fit
    write_array(out, torch.cat(parts).numpy(), columns if len(columns or ()) == d else None)
    print(f"wrote {args.num_samples} samples to {out}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """``madeflow plot``: redraw the run's pictures (the test data too, unless it changed)."""
    from madeflow.cli import plots  # matplotlib only for this command

    config, model, space = load_run(args.run, force=args.force)
    test = None
    drift = data_drift(config)
    if drift is not None:
        say(False, f"madeflow: warning: {drift}; plotting the model without its test data")
    else:
        try:
            test = prepare(config["data"]).test
        except DataError as err:
            say(False, f"madeflow: warning: {err}; plotting the model without its test data")
    for path in plots.plot_run(Path(args.run), model, space, test, config, seed=args.seed):
        print(f"wrote {path}")
    return 0
