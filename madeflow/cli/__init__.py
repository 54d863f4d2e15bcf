"""The ``madeflow`` command line: fit, evaluate, sample from, impute with and plot density models.

Exit codes: ``0`` success, ``1`` unexpected error or a missing ``cli`` extra, ``2`` usage error
(bad arguments or flag values, an existing non-empty ``--out`` without ``--resume``, a setting
``--resume`` cannot change, an existing output file without ``--force``), ``3`` data error
(missing, unreadable or malformed data, or a data file changed since ``fit``), ``4`` checkpoint,
run-folder or output-file error (not a run; corrupt, tampered, foreign or incompatible files; a
folder locked by another process; a file that cannot be written: full disk, read-only folder),
``5`` numerical failure (a loss, a parameter or the model's values became NaN/Inf), ``6`` another
process of a distributed run failed or did not answer, ``130`` interrupted. Errors are one line
on stderr (from every rank under ``torchrun`` that met one, tagged with its rank); set
``MADEFLOW_TRACEBACK=1`` to see the traceback.

Nothing is overwritten without ``--force``: ``sample -o``/``evaluate -o``/``impute -o`` refuse
an existing file. A run folder records fingerprints of its data file and ``model.pt``: a
``model.pt`` that is not the one the run saved is refused by ``evaluate``, ``sample``,
``impute``, ``plot`` and ``fit --resume``; a data file changed since ``fit`` is refused by
``evaluate`` (own split) and ``fit --resume``, and only noted by ``plot``. ``--force`` goes on
anyway, with a warning line.

``madeflow fit`` with no arguments trains a 5-layer MAF with a mixture-of-Gaussians base on the
bundled logit digits (fresh dequantization noise each batch), early-stopped on validation; see
:mod:`madeflow.cli.settings`. Commands run on one CPU thread unless ``--threads``.
``torchrun --nproc_per_node N -m madeflow fit ...`` trains data-parallel on ``N`` processes
(:mod:`madeflow.train.distributed`).

The command line needs the ``cli`` extra (matplotlib, scikit-learn, tqdm: ``pip install
"madeflow[cli]"``); without it every command but ``--help`` and ``--version`` stops with one line
saying so (:func:`missing_extra`).

The package, on top of the library (which never imports it): :mod:`~madeflow.cli.parser` (flags),
:mod:`~madeflow.cli.errors` (exit codes), :mod:`~madeflow.cli.settings` (defaults, new run
config), :mod:`~madeflow.cli.data` (the data sources by name), :mod:`~madeflow.cli.fit` and
:mod:`~madeflow.cli.resume` (``madeflow fit``), :mod:`~madeflow.cli.commands` (evaluate, sample,
plot), :mod:`~madeflow.cli.impute` (``madeflow impute``) and :mod:`~madeflow.cli.plots`
(pictures).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence

import torch

from madeflow.cli.commands import cmd_evaluate, cmd_plot, cmd_sample
from madeflow.cli.errors import EXIT_CODES, UsageError, error_kind
from madeflow.cli.fit import cmd_fit
from madeflow.cli.impute import cmd_impute
from madeflow.cli.parser import build_parser
from madeflow.runs.folder import RunWarning
from madeflow.train import distributed

__all__ = ["CLI_EXTRA", "EXIT_CODES", "UsageError", "main", "missing_extra"]

COMMANDS = {
    "fit": cmd_fit,
    "evaluate": cmd_evaluate,
    "sample": cmd_sample,
    "impute": cmd_impute,
    "plot": cmd_plot,
}

CLI_EXTRA = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "tqdm": "tqdm"}
"""Modules of the ``cli`` extra -> the packages that provide them."""


def missing_extra() -> list[str]:
    """The packages of the ``cli`` extra that are not installed (found without importing them)."""
    return [dist for module, dist in CLI_EXTRA.items() if importlib.util.find_spec(module) is None]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring).

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit code.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        argv = ["fit"]  # `madeflow` alone trains the default model
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    missing = missing_extra()
    if missing:
        print(
            f"madeflow: error: the command line needs {', '.join(missing)}: "
            'pip install "madeflow[cli]"',
            file=sys.stderr,
        )
        return 1
    old_dtype, old_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float32)
    try:
        torch.set_num_threads(getattr(args, "threads", None) or 1)
        with warnings.catch_warnings():
            _run_warnings_as_lines()
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("madeflow: interrupted", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    except Exception as err:
        return _fail(err, error_kind(err))
    finally:
        torch.set_default_dtype(old_dtype)
        torch.set_num_threads(old_threads)


def _run_warnings_as_lines() -> None:
    """Show :class:`RunWarning` as ``madeflow: warning: ...`` lines (inside catch_warnings)."""
    original = warnings.showwarning
    warnings.simplefilter("always", RunWarning)

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, RunWarning):
            print(f"madeflow: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _fail(err: Exception, kind: str | None) -> int:
    if os.environ.get("MADEFLOW_TRACEBACK"):
        raise err
    rank = distributed.rank()
    if kind == "numerical" and rank > 0:
        return EXIT_CODES[kind]  # decided alike on every rank: rank 0 says it
    where = f" (rank {rank})" if distributed.launched() else ""
    text = str(err) if kind is not None else f"{type(err).__name__}: {err}"
    print(f"madeflow: error{where}: {text}", file=sys.stderr)
    return 1 if kind is None else EXIT_CODES[kind]
