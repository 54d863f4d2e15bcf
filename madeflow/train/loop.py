"""Fit any density model with a ``log_prob(x, context=None)`` by maximum likelihood.

:func:`fit` runs Adam on mini-batches, cycles the masks of every multi-mask MADE inside the model
after each step, stops early on the validation log-likelihood and restores the best weights. It is
seeded (its own :class:`torch.Generator` shuffles the data) and resumable: the ``callback`` gets,
at the end of every epoch, an :class:`EpochEnd` whose :meth:`EpochEnd.state` is everything a later
``fit(..., state=...)`` needs to finish with bitwise the same parameters (on CPU).

Launched by ``torchrun`` (or inside an initialised process group of several ranks), :func:`fit`
trains data-parallel: see :mod:`madeflow.train.distributed`. Training and validation data may be
tensors or row sources read a mini-batch at a time (:mod:`madeflow.data.rows`), such as
memory-mapped files.

The pieces: argument checks (:mod:`madeflow.train.checks`), the resumable state and early stopping
(:mod:`madeflow.train.state`), the mini-batches and the optimizer step
(:mod:`madeflow.train.step`), scoring (:mod:`madeflow.train.evaluation`) and the ranks
(:mod:`madeflow.train.distributed`). This module puts them together: one epoch at a time, then
the callback.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from madeflow.data.rows import Rows, to_device
from madeflow.train import distributed
from madeflow.train.checks import check_args, check_model, check_numbers
from madeflow.train.evaluation import NumericalError, evaluate_log_prob
from madeflow.train.state import (
    EarlyStopping,
    EpochEnd,
    History,
    TrainingStateError,
    restore,
    snapshot,
)
from madeflow.train.step import NonFiniteLossError, Trainer, epoch_batches, lr_factor, validate

__all__ = [
    "EpochEnd",
    "History",
    "NonFiniteLossError",
    "NumericalError",
    "TrainingStateError",
    "evaluate_log_prob",
    "fit",
]

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""``augment(batch, generator) -> batch``, drawing its randomness from ``generator``."""

GOING_ON = "max_epochs"
"""The stop reason while no other one applies (the loop ends at ``max_epochs``)."""


def fit(
    model: nn.Module,
    train: Rows,
    val: Rows | None = None,
    *,
    train_context: Rows | None = None,
    val_context: Rows | None = None,
    max_epochs: int = 100,
    batch_size: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    lr_schedule: str | None = None,
    patience: int | None = 30,
    clip_grad_norm: float | None = None,
    seed: int = 0,
    progress: bool | None = None,
    callback: Callable[[EpochEnd], bool | None] | None = None,
    device: torch.device | str | None = None,
    state: dict[str, Any] | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    compile: bool = False,
) -> History:
    """Train ``model`` by maximum likelihood with Adam and early stopping.

    Each epoch shuffles ``train`` with a generator seeded by ``seed``, takes one Adam step per
    mini-batch on ``-mean(log_prob)``, then calls ``next_mask()`` on every multi-mask MADE inside
    the model (found with ``model.modules()``). After each epoch the model is scored on ``val``;
    the best weights are kept and restored at the end, and training stops after ``patience``
    epochs without improvement.

    With several ranks (started by ``torchrun``, which :func:`fit` joins with
    :func:`madeflow.train.distributed.init`, or in a process group you initialised) every rank calls
    :func:`fit` with the same arguments and trains data-parallel: each rank computes its rows
    ``r::world`` of every global mini-batch of ``batch_size`` and the gradients are all-reduced,
    so the parameters follow a one-process run up to floating-point summation order and are
    bitwise equal on all ranks; rank 0's model and ``state`` are copied to the others first. A
    last mini-batch with fewer than two rows per rank is merged into the one before it (batch
    statistics need two rows). With ``augment``, every rank reads and
    augments the whole global batch (so the shared generator stays in step) and keeps its rows.
    On CUDA each rank uses ``cuda:LOCAL_RANK``. See :mod:`madeflow.train.distributed`.

    Args:
        model: Any ``nn.Module`` with ``log_prob(x, context=None) -> (batch,)``. Trained in place.
        train: ``(N, D)`` training examples: a tensor, or a row source
            (:class:`madeflow.data.RowSource`, e.g. :class:`madeflow.data.MemmapRows`) from
            which each mini-batch is read when needed.
        val: ``(M, D)`` validation examples (tensor or row source); without them there is no
            early stopping and the final weights are kept.
        train_context: ``(N, C)`` contexts of ``train`` for conditional models.
        val_context: ``(M, C)`` contexts of ``val``.
        max_epochs: Total number of epochs (counting those before a resume).
        batch_size: Examples per step.
        lr: Adam learning rate.
        weight_decay: Adam's L2 penalty.
        lr_schedule: ``None``/``"constant"`` or ``"cosine"`` (annealed to 0 at ``max_epochs``).
        patience: Epochs without validation improvement before stopping; ``None`` never stops.
        clip_grad_norm: Clip the gradient's total norm to this value; ``None`` does not clip.
        seed: Seed of the shuffling; same seed, data and initial model give bitwise the same
            parameters on CPU.
        progress: Show a tqdm bar with the log-likelihoods; ``None`` shows it only when stderr is
            a terminal and tqdm (in the ``cli`` extra) is installed.
        callback: Called with an :class:`EpochEnd` after every epoch (e.g. to checkpoint
            ``event.state()``); returning ``True`` stops training (on every rank, if any rank's
            callback returns ``True``).
        device: Where to train; ``None`` uses the device of the model's parameters.
        state: A dict from :meth:`EpochEnd.state` to continue from.
        augment: ``augment(batch, generator) -> batch`` applied to every training mini-batch,
            drawing its randomness from ``generator`` (fit's seeded CPU generator, so runs stay
            reproducible and resumable), e.g. fresh dequantization noise each epoch.
        compile: Compile the training loss (forward and backward) with ``torch.compile``.
            Measured on CPU (``benchmarks/bench_compile.py``, MAF D=64, batch 256): steps
            about 25 % faster with H=256 and slower with H=1024 (where madeflow's eager
            grouped product already skips the masked half, and the compiled graph cannot),
            after 5-20 s of compilation; so it pays on long runs of small models. Each mask of
            a multi-mask MADE is compiled separately. Validation is not compiled.

    Returns:
        The :class:`History`; the model holds the best-on-validation weights.

    Raises:
        NonFiniteLossError: If a loss, a validation log-likelihood or a parameter becomes NaN or
            infinite, or the model's values overflow on finite data (training diverged).
        TrainingStateError: If ``state`` is damaged or belongs to another model.
        TypeError: If the data are not tensors or row sources (e.g. NumPy arrays).
        ValueError: On inconsistent arguments or shapes.
        RuntimeError: If another rank fails or does not answer within
            :func:`madeflow.train.distributed.timeout`.

    Example:
        >>> class Gauss(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.loc = nn.Parameter(torch.zeros(2))
        ...
        ...     def log_prob(self, x, context=None):
        ...         return torch.distributions.Normal(self.loc, 1.0).log_prob(x).sum(-1)
        >>> data = torch.randn(200, 2) + 3.0
        >>> hist = fit(Gauss(), data[:160], data[160:], max_epochs=5, lr=0.1, progress=False)
        >>> len(hist.train_log_lik)
        5
    """
    check_args(train, val, train_context, val_context, batch_size, max_epochs, lr_schedule)
    check_model(model)
    check_numbers(lr=lr, weight_decay=weight_decay, clip_grad_norm=clip_grad_norm)
    device = _training_device(model, device)
    model.to(device)
    data = _Data(*(to_device(t, device) for t in (train, val, train_context, val_context)))
    par = distributed.DataParallel(model, device)
    if len(train) < par.world:
        raise ValueError(f"{len(train)} training examples are too few for {par.world} ranks")
    state = par.share(state)
    optimizer = adam(model.parameters(), lr, weight_decay)
    generator = torch.Generator().manual_seed(seed)
    history, stopping, first = restore(state, model, optimizer, generator, max_epochs)
    log_prob = torch.compile(par.log_prob) if compile else par.log_prob
    options = _Options(max_epochs, batch_size, lr, lr_schedule, patience, augment, callback)
    bar = _Bar(max_epochs, first) if par.rank == 0 and _show_bar(progress) else None
    trainer = Trainer(par, optimizer, log_prob, clip_grad_norm)
    run = _Run(data, trainer, generator, options, history, stopping, bar)
    t0 = time.perf_counter()
    stopped = run.epochs(first)
    if val is not None:
        model.load_state_dict(stopping.best_weights)
    history.stopped = stopped
    history.seconds = time.perf_counter() - t0
    return history


def adam(params: Any, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with its fused kernel where torch has one for these parameters.

    One kernel for every parameter instead of several per tensor: measured on CPU
    (``benchmarks/bench_maf.py --optimizer``), a step of the default MAF-MoG runs several times
    faster. The arithmetic is Adam's either way.
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):  # older torch, or parameters it cannot fuse
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _training_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """``device``, else the model's; under ``torchrun``, this rank's (joining its group once)."""
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    return distributed.init(device) if distributed.launched() else device


@dataclass
class _Data:
    """Training and validation rows and contexts, on the training device."""

    train: Rows
    val: Rows | None
    train_context: Rows | None
    val_context: Rows | None


@dataclass
class _Options:
    """The settings of one :func:`fit` call that its epochs use."""

    max_epochs: int
    batch_size: int
    lr: float
    lr_schedule: str | None
    patience: int | None
    augment: Augment | None
    callback: Callable[[EpochEnd], bool | None] | None


def _show_bar(progress: bool | None) -> bool:
    """``progress``, or for ``None``: whether stderr is a terminal and tqdm is installed."""
    if progress is None:
        return sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None
    return progress


class _Bar:
    """A tqdm bar of epochs showing the log-likelihoods (tqdm is imported only when shown).

    Its total is ``max_epochs`` while training goes on; when training ends before (early
    stopping, the callback) the total shrinks to the epochs run, so the bar ends full.
    """

    def __init__(self, total: int, initial: int) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError as err:
            raise ImportError(
                'fit(progress=True) draws its bar with tqdm: pip install "madeflow[cli]" '
                "(or pip install tqdm), or pass progress=False"
            ) from err

        self.tqdm = tqdm(total=total, initial=min(initial, total), unit="epoch")

    def update(self, train_ll: float, val_ll: float | None, best: float) -> None:
        """Advance by one epoch."""
        post = {"train": f"{train_ll:.3f}"}
        if val_ll is not None:
            post["val"] = f"{val_ll:.3f}"
            post["best"] = f"{best:.3f}"
        self.tqdm.set_postfix(post, refresh=False)
        self.tqdm.update(1)

    def end_early(self) -> None:
        """Training stopped before ``max_epochs``: the total becomes the epochs run."""
        self.tqdm.total = self.tqdm.n
        self.tqdm.refresh()

    def close(self) -> None:
        """Close the bar."""
        self.tqdm.close()


@dataclass
class _Run:
    """The epochs of one :func:`fit` call: train, validate, keep the best, tell the callback."""

    data: _Data
    trainer: Trainer
    generator: torch.Generator
    options: _Options
    history: History
    stopping: EarlyStopping
    bar: _Bar | None

    @property
    def par(self) -> distributed.DataParallel:
        """The model in its data-parallel wrapper."""
        return self.trainer.par

    def epochs(self, first: int) -> str:
        """Run the epochs from ``first`` until one says stop; returns why training ended."""
        stopped = self.history.stopped or GOING_ON
        try:
            for epoch in range(first, self.options.max_epochs):
                stopped = self.epoch(epoch)
                if stopped != GOING_ON:
                    if self.bar is not None:
                        self.bar.end_early()
                    break
        finally:
            self.par.close()
            if self.bar is not None:
                self.bar.close()
        return stopped

    def epoch(self, epoch: int) -> str:
        """Run ``epoch``; returns why training stops after it (:data:`GOING_ON`: it goes on)."""
        o, d, h = self.options, self.data, self.history
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = o.lr * lr_factor(o.lr_schedule, epoch, o.max_epochs)
        self.par.model.train()
        batches = epoch_batches(
            d.train, d.train_context, o.batch_size, self.par, self.generator, o.augment
        )
        number = epoch + 1  # epochs are counted from 1 wherever users see them
        train_ll = self.trainer.epoch(batches, number)
        h.train_log_lik.append(train_ll)
        h.epochs = number
        val_ll = None
        if d.val is not None:
            val_ll = validate(self.par, d.val, d.val_context, o.batch_size, number)
            h.val_log_lik.append(val_ll)
        improved = self.stopping.update(h, number, val_ll, self.par.model)
        stopped = GOING_ON
        if d.val is not None and self.stopping.exhausted(o.patience):
            stopped = "early_stopping"
        if self.bar is not None:
            self.bar.update(train_ll, val_ll, h.best_val_log_lik)
        h.stopped = "" if stopped == GOING_ON else stopped
        last = stopped != GOING_ON or number >= o.max_epochs
        event = EpochEnd(number, train_ll, val_ll, improved, last, h, self._state(number))
        return self._tell(event, stopped)

    def _state(self, epoch: int) -> Callable[[], dict[str, Any]]:
        """What :meth:`EpochEnd.state` returns after ``epoch`` (from 1): a snapshot when called."""
        s = self.stopping
        return functools.partial(
            snapshot,
            epoch,
            self.par.model,
            self.trainer.optimizer,
            self.generator,
            self.history,
            s.best_weights,
            s.bad_epochs,
        )

    def _tell(self, event: EpochEnd, stopped: str) -> str:
        """Call the callback; a ``True`` from it on any rank stops every rank."""
        callback = self.options.callback
        stop = callback is not None and bool(callback(event))
        if self.par.any(stop) and stopped == GOING_ON:
            stopped = "callback"
        return stopped
