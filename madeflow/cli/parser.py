"""The ``madeflow`` argument parser: every command, flag and flag type.

Flag values are typed on parsing (an integer in range, a finite number), so a bad value is a
usage error (exit 2) with one line saying what was expected. Flags of ``madeflow fit`` default
to ``None`` where ``--resume`` must tell what was given; their defaults are the tables in
:mod:`madeflow.cli.settings` and :data:`madeflow.models.DEFAULTS`, and every help line shows its
flag's default (``madeflow fit --help``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

from madeflow import __version__
from madeflow.cli.settings import EXAMPLES_SEEN, FIT_DEFAULTS
from madeflow.models import DEFAULTS, MODELS
from madeflow.runs.integrity import MAX_TOY_SIZE

__all__ = ["build_parser"]


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line on stderr (exit code 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_MAX_SEED = 2**63 - 1


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[low, high]``, with the range in the message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {bound}, got {value}")
        return value

    return parse


def _number(positive: bool) -> Callable[[str], float]:
    """An argparse type: a finite number, ``> 0`` (``positive``) or ``>= 0``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            bound = "> 0" if positive else ">= 0"
            raise argparse.ArgumentTypeError(f"must be a finite number {bound}, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``madeflow fit|evaluate|sample|impute|plot``."""
    p = _Parser(
        prog="madeflow",
        description="Fit, evaluate and sample MADE/MAF density estimators.",
        epilog="Exit codes: 2 usage, 3 data error, 4 checkpoint/run-folder error, "
        "5 numerical failure, 6 another process of a distributed run failed, 130 interrupted. "
        "Data-parallel: torchrun --nproc_per_node N -m madeflow fit ...",
    )
    p.add_argument("--version", action="version", version=f"madeflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="train a density model (default: MAF-MoG on digits)")
    _fit_model_flags(f)
    _fit_training_flags(f)
    _fit_run_flags(f)
    _evaluate_flags(sub.add_parser("evaluate", help="per-example log-likelihoods of a trained run"))
    _sample_flags(sub.add_parser("sample", help="draw samples in the original data space"))
    _impute_flags(
        sub.add_parser(
            "impute",
            help="fill the missing values (NaN, empty CSV cells) of a data file with exact "
            "conditional draws of a MADE run",
        )
    )
    _plot_flags(sub.add_parser("plot", help="redraw samples.png (and training.png) of a run"))
    return p


def _fit_model_flags(f: argparse.ArgumentParser) -> None:
    """The data and the model of ``madeflow fit``."""
    f.add_argument(
        "data",
        nargs="?",
        help="digits, digits-binary, a toy name (moons, rings, checkerboard, 8gaussians, "
        "spirals, pinwheel) or a .npy/.npz/.csv/.pt file (default: digits)",
    )
    f.add_argument(
        "--model",
        choices=sorted(MODELS),
        help="the density model (default: maf-mog; made-bernoulli for digits-binary)",
    )
    f.add_argument(
        "--hidden",
        type=_integer(1),
        nargs="+",
        help="hidden widths of each MADE (default: sized to the data: two layers of 4 x the "
        "number of columns, kept in [64, 256]; 256 256 for digits)",
    )
    f.add_argument(
        "--num-transforms",
        type=_integer(1),
        help=f"MAF layers (default: {DEFAULTS['num_transforms']})",
    )
    f.add_argument(
        "--num-components",
        type=_integer(1),
        help=f"mixture components of made-mog and maf-mog (default: {DEFAULTS['num_components']})",
    )
    f.add_argument(
        "--num-masks",
        type=_integer(1),
        help="MADE masks for order-agnostic training, cycled after each step "
        f"(default: {DEFAULTS['num_masks']})",
    )
    f.add_argument(
        "--batch-norm", action="store_true", default=None, help="MAF batch norm (default: off)"
    )
    f.add_argument(
        "--toy-size",
        type=_integer(3, MAX_TOY_SIZE),
        help=f"points drawn from a toy density (default: {FIT_DEFAULTS['toy_size']})",
    )
    f.add_argument(
        "--no-standardize",
        action="store_true",
        help="keep file/toy data as is (default: standardize with the training statistics)",
    )
    f.add_argument(
        "--mmap",
        action="store_true",
        help="memory-map a .npy file instead of loading it: only the rows of each mini-batch "
        "are read, for data larger than memory (default: off)",
    )
    f.add_argument(
        "--no-dequantize",
        action="store_true",
        help="digits: keep the fixed dequantization noise instead of redrawing it every batch "
        "(default: redraw)",
    )


def _fit_training_flags(f: argparse.ArgumentParser) -> None:
    """How ``madeflow fit`` trains."""
    f.add_argument(
        "--epochs",
        "--max-epochs",
        dest="max_epochs",
        metavar="N",
        type=_integer(0),
        help="most epochs to train; early stopping may end sooner (default: sized to the data: "
        f"enough to see {EXAMPLES_SEEN:,} training rows, in [20, 300]; 300 for digits)",
    )
    f.add_argument(
        "--batch-size",
        type=_integer(1),
        help="rows per optimizer step (default: sized to the data: a tenth of the training "
        "rows in whole hundreds, in [100, 1000]; 100 for digits)",
    )
    f.add_argument(
        "--lr",
        type=_number(positive=True),
        help=f"Adam learning rate (default: {FIT_DEFAULTS['lr']:g})",
    )
    f.add_argument(
        "--weight-decay",
        type=_number(positive=False),
        help=f"Adam weight decay (default: {FIT_DEFAULTS['weight_decay']:g})",
    )
    f.add_argument(
        "--patience",
        type=_integer(0),
        help="stop after this many epochs without a better validation log-likelihood "
        "(default: sized to the data: a fifth of the epochs, in [10, 30]; 30 for digits)",
    )
    f.add_argument(
        "--clip-grad",
        type=_number(positive=False),
        help=f"clip the gradient norm to this; 0: off (default: {FIT_DEFAULTS['clip_grad']:g})",
    )
    f.add_argument(
        "--seed",
        type=_integer(0, _MAX_SEED),
        help="seed of the data split, the model and training; same seed, same run "
        f"(default: {FIT_DEFAULTS['seed']})",
    )
    f.add_argument(
        "--compile",
        action="store_true",
        help="compile the training loss with torch.compile: 5-20 s of compilation first, then "
        "about 25%% faster steps for small models on CPU, slower ones for hidden widths of "
        "512 and more (docs/benchmarks.md) (default: off)",
    )


def _fit_run_flags(f: argparse.ArgumentParser) -> None:
    """Where ``madeflow fit`` writes, resumes and runs."""
    f.add_argument("--out", help="run folder (default: runs/<model>-<data>-<time>)")
    _device_flag(f)
    f.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with the settings in its config.json; only --epochs "
        "may change (default: off, a new run)",
    )
    f.add_argument(
        "--force",
        action="store_true",
        help="with --resume: go on although the data file or model.pt changed since fit "
        "(default: off, refuse)",
    )
    f.add_argument(
        "--save-every",
        type=_number(positive=False),
        default=10.0,
        help="seconds between resume checkpoints; 0: every epoch (default: %(default)g)",
    )
    f.add_argument(
        "--quiet", action="store_true", help="no progress bar, only the results (default: off)"
    )
    f.add_argument(
        "--threads",
        type=_integer(1, 1024),
        help="CPU threads for torch (default 1: these small matrices gain little from more "
        "threads, and lose up to 7x when other processes share the cores)",
    )


def _device_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where to compute; auto: cuda when available (default: %(default)s)",
    )


def _run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a run folder written by madeflow fit")


def _evaluate_flags(e: argparse.ArgumentParser) -> None:
    _run_argument(e)
    e.add_argument("data", nargs="?", help="a data file to score (default: the run's own --split)")
    e.add_argument(
        "--split",
        default="test",
        choices=("train", "val", "test"),
        help="which split of the run's data to score without a data file (default: %(default)s)",
    )
    e.add_argument(
        "--output",
        "-o",
        help="write per-row log-likelihoods to this .npy or .csv file (default: none, only the "
        "mean is printed)",
    )
    _device_flag(e)
    e.add_argument(
        "--force",
        action="store_true",
        help="overwrite --output; use a model.pt or data file that changed since fit "
        "(default: off, refuse)",
    )


def _sample_flags(s: argparse.ArgumentParser) -> None:
    _run_argument(s)
    s.add_argument(
        "-n",
        "--num-samples",
        type=_integer(1),
        default=1000,
        help="number of samples (default: %(default)s)",
    )
    s.add_argument(
        "-o",
        "--output",
        required=True,
        help=".npy or .csv file, in the data's units; a CSV keeps the header of a CSV the run "
        "was trained on (required)",
    )
    s.add_argument(
        "--seed",
        type=_integer(0, _MAX_SEED),
        default=0,
        help="seed of the draw; same seed, same samples (default: %(default)s)",
    )
    _device_flag(s)
    s.add_argument(
        "--force",
        action="store_true",
        help="overwrite --output; use a changed model.pt (default: off, refuse)",
    )


def _impute_flags(i: argparse.ArgumentParser) -> None:
    i.add_argument("run", help="a run of made-bernoulli, made-gaussian or made-mog")
    i.add_argument(
        "data",
        help=".npy/.npz/.csv/.pt file with NaN (in CSV: nan or an empty cell) where a value is "
        "missing",
    )
    i.add_argument("-o", "--output", required=True, help=".npy or .csv file (a CSV header is kept)")
    i.add_argument(
        "--draws",
        type=_integer(1, 10_000),
        default=1,
        help="draws per row: 1 writes one exact conditional draw, more write their mean (a "
        "point estimate; for binary data, the probability of a 1) (default: %(default)s)",
    )
    i.add_argument(
        "--seed",
        type=_integer(0, _MAX_SEED),
        default=0,
        help="seed of the draws; same seed, same output (default: %(default)s)",
    )
    _device_flag(i)
    i.add_argument(
        "--force",
        action="store_true",
        help="overwrite --output; use a changed model.pt (default: off, refuse)",
    )


def _plot_flags(g: argparse.ArgumentParser) -> None:
    _run_argument(g)
    g.add_argument(
        "--seed",
        type=_integer(0, _MAX_SEED),
        default=0,
        help="seed of the samples drawn (default: %(default)s)",
    )
    g.add_argument(
        "--force", action="store_true", help="use a changed model.pt (default: off, refuse)"
    )
