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
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from madeflow.data.rows import Rows, take, to_device
from madeflow.train import distributed
from madeflow.train.checks import (
    STATE_VERSION,
    TrainingStateError,
    check_args,
    check_model,
    check_numbers,
    check_state,
)
from madeflow.train.evaluation import (
    NumericalError,
    evaluate_log_prob,
    is_numerical_failure,
    mean_log_prob,
)

__all__ = [
    "EpochEnd",
    "History",
    "NonFiniteLossError",
    "NumericalError",
    "TrainingStateError",
    "evaluate_log_prob",
    "fit",
]

ADVICE = "try a lower learning rate, gradient clipping or standardised data"


class NonFiniteLossError(NumericalError):
    """The training or validation loss, or the parameters, became NaN or infinite."""


@dataclass
class History:
    """What happened during :func:`fit`.

    Attributes:
        train_log_lik: Mean training log-likelihood per epoch (nats per example, averaged over the
            epoch's mini-batches while the weights were changing).
        val_log_lik: Mean validation log-likelihood per epoch after the epoch (empty without
            validation data).
        best_epoch: Index (0-based) of the epoch whose weights were kept; ``-1`` before any epoch.
        best_val_log_lik: The validation log-likelihood of the kept weights (``nan`` without
            validation data).
        stopped: Why training ended: ``"max_epochs"``, ``"early_stopping"`` or ``"callback"``.
        epochs: Number of epochs run in total (including those before a resume).
        seconds: Wall-clock time spent in this call.
    """

    train_log_lik: list[float] = field(default_factory=list)
    val_log_lik: list[float] = field(default_factory=list)
    best_epoch: int = -1
    best_val_log_lik: float = float("nan")
    stopped: str = ""
    epochs: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return asdict(self)


@dataclass
class EpochEnd:
    """Passed to ``callback`` at the end of each epoch.

    Attributes:
        epoch: Index (0-based) of the epoch that just ended.
        train_log_lik: Its mean training log-likelihood.
        val_log_lik: Its validation log-likelihood, ``None`` without validation data.
        improved: Whether these are the best weights so far.
        last: Whether training ends after this epoch (early stopping or ``max_epochs``).
        history: The running :class:`History`.
    """

    epoch: int
    train_log_lik: float
    val_log_lik: float | None
    improved: bool
    last: bool
    history: History
    _state: Callable[[], dict[str, Any]]

    def state(self) -> dict[str, Any]:
        """A detached copy of the full training state; ``torch.save`` it to resume later.

        Contains only tensors, numbers, strings, lists and dicts, so it loads with
        ``torch.load(..., weights_only=True)``.
        """
        return self._state()


def _clone(obj: Any) -> Any:
    """Deep copy of nested dicts/lists of tensors, detached and cloned."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v) for v in obj)
    return copy.deepcopy(obj)


def _mask_modules(model: nn.Module) -> list[nn.Module]:
    """Every submodule with more than one mask to cycle (multi-mask MADEs)."""
    return [
        m
        for m in model.modules()
        if callable(getattr(m, "next_mask", None)) and getattr(m, "num_masks", 1) > 1
    ]


def _diverged(epoch: int, step: int, detail: str) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"training diverged at epoch {epoch}, step {step}{detail}: the model's values became "
        f"NaN or Inf on finite data; {ADVICE}"
    )


def _lr_factor(schedule: str | None, epoch: int, max_epochs: int) -> float:
    if schedule in (None, "constant"):
        return 1.0
    # Cosine annealing to zero over ``max_epochs``; stateless so resuming needs nothing extra.
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max(max_epochs, 1)))


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
            a terminal.
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
            about 15 % faster with H=256 and no faster with H=1024 (where madeflow's eager
            grouped product already skips the masked half), after 10-20 s of compilation; so it
            pays on long runs of small and medium models. Each mask of a multi-mask MADE is
            compiled separately. Validation is not compiled.

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
    if device is None:
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    if distributed.launched():
        device = distributed.init(device)
    model.to(device)
    train, val, train_context, val_context = (
        to_device(t, device) for t in (train, val, train_context, val_context)
    )
    par = distributed.DataParallel(model, device)
    if len(train) < par.world:
        raise ValueError(f"{len(train)} training examples are too few for {par.world} ranks")
    state = par.share(state)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    history = History()
    best_state = _clone(model.state_dict())
    bad_epochs = 0
    start_epoch = 0
    if state is not None:
        check_state(state, model)
        try:
            model.load_state_dict(
                state["best_model"]
            )  # checks its MADE buffers now, not at the end
            model.load_state_dict(state["model"])
        except ValueError as err:
            raise TrainingStateError(str(err)) from err
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = History(**state["history"])
        best_state = _clone(state["best_model"])
        bad_epochs = int(state["bad_epochs"])
        start_epoch = int(state["epoch"]) + 1
        if history.stopped in ("early_stopping", "callback"):
            start_epoch = max_epochs  # that run had finished; do not train further

    masks = _mask_modules(model)
    log_prob = torch.compile(par.log_prob) if compile else par.log_prob
    show = par.rank == 0 and (sys.stderr.isatty() if progress is None else progress)
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, initial=min(start_epoch, max_epochs), unit="epoch")
    t0 = time.perf_counter()
    n = len(train)
    stopped = history.stopped or "max_epochs"
    try:
        for epoch in range(start_epoch, max_epochs):
            for group in optimizer.param_groups:
                group["lr"] = lr * _lr_factor(lr_schedule, epoch, max_epochs)
            model.train()
            order = torch.randperm(n, generator=gen).to(device)
            total, count = 0.0, 0
            starts = list(range(0, n, batch_size))
            if len(starts) > 1 and n - starts[-1] < 2 * par.world:
                starts.pop()  # a tiny last batch joins the one before: batch norm needs 2 rows
            for step, start in enumerate(starts):
                stop = starts[step + 1] if step + 1 < len(starts) else n
                idx = order[start:stop]
                if len(idx) < par.world:
                    break  # fewer rows than ranks: some would have none
                mine = par.mine(idx)
                if augment is None:
                    x = take(train, mine, device)
                else:
                    # The whole global batch, so the shared generator draws the same on each rank.
                    x = par.mine(augment(take(train, idx, device), gen))
                c = None if train_context is None else take(train_context, mine, device)
                try:
                    loss, batch_total = par.loss(log_prob(x, c), len(idx))
                except ValueError as err:
                    if not is_numerical_failure(err, x, c):
                        raise  # the data's or the caller's fault: the model's own message
                    raise _diverged(epoch, step, "") from err
                # Without distribution validation (torch.compile turns it off for the whole
                # process) the same failure arrives as a NaN loss: one message for both.
                if not math.isfinite(batch_total):
                    raise _diverged(epoch, step, f" (loss {-batch_total / len(idx)})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
                optimizer.step()
                for made in masks:
                    made.next_mask()
                total += batch_total
                count += len(idx)
            par.sync_buffers()
            broken = next((k for k, p in model.named_parameters() if not p.isfinite().all()), None)
            if broken is not None:
                raise NonFiniteLossError(
                    f"parameter {broken} became NaN or Inf at epoch {epoch}; {ADVICE}"
                )
            train_ll = total / count
            history.train_log_lik.append(train_ll)
            history.epochs = epoch + 1

            val_ll = None
            improved = True
            if val is not None:
                try:
                    val_ll = mean_log_prob(par, model, val, val_context, max(batch_size, 1000))
                except NumericalError as err:
                    raise NonFiniteLossError(
                        f"training diverged at epoch {epoch}: the model's values became NaN or "
                        f"Inf on finite validation rows {err.rows}; {ADVICE}"
                    ) from err
                if not math.isfinite(val_ll):
                    raise NonFiniteLossError(
                        f"validation log-likelihood became {val_ll} at epoch {epoch}"
                    )
                history.val_log_lik.append(val_ll)
                improved = history.best_epoch < 0 or val_ll > history.best_val_log_lik
            if improved:
                history.best_epoch = epoch
                if val_ll is not None:
                    history.best_val_log_lik = val_ll
                best_state = _clone(model.state_dict())
                bad_epochs = 0
            else:
                bad_epochs += 1
            if val is not None and patience is not None and bad_epochs >= patience:
                stopped = "early_stopping"
            if bar is not None:
                post = {"train": f"{train_ll:.3f}"}
                if val_ll is not None:
                    post["val"] = f"{val_ll:.3f}"
                    post["best"] = f"{history.best_val_log_lik:.3f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)

            history.stopped = stopped if stopped != "max_epochs" else ""

            def snapshot(
                epoch: int = epoch, bad: int = bad_epochs, best: dict = best_state
            ) -> dict[str, Any]:
                return {
                    "version": STATE_VERSION,
                    "epoch": epoch,
                    "model": _clone(model.state_dict()),
                    "optimizer": _clone(optimizer.state_dict()),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": _clone(history.to_dict()),
                    "best_model": _clone(best),
                    "bad_epochs": bad,
                }

            last = stopped != "max_epochs" or epoch + 1 >= max_epochs
            event = EpochEnd(epoch, train_ll, val_ll, improved, last, history, snapshot)
            stop = callback is not None and bool(callback(event))
            if par.any(stop) and stopped == "max_epochs":
                stopped = "callback"
            if stopped != "max_epochs":
                break
    finally:
        par.close()
        if bar is not None:
            bar.close()
    if val is not None:
        model.load_state_dict(best_state)
    history.stopped = stopped
    history.seconds = time.perf_counter() - t0
    return history
