"""One epoch of :func:`madeflow.fit`: the mini-batches, one optimizer step, divergence checks.

The pieces, in the order an epoch uses them:

* :func:`lr_factor` scales the learning rate (a stateless schedule, so resuming needs nothing);
* :func:`epoch_batches` shuffles the rows with fit's seeded generator and yields this rank's
  part of each global mini-batch (:func:`batch_bounds` merges a tiny last batch into the one
  before it), augmented when asked;
* :meth:`Trainer.step` takes one Adam step on ``-mean(log_prob)`` and cycles the masks of every
  multi-mask MADE; :meth:`Trainer.epoch` runs the steps of one epoch;
* :func:`check_parameters` and :func:`validate` stop a run whose values became NaN or infinite
  with a :class:`NonFiniteLossError` saying what to try.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from madeflow.data.rows import Rows, take
from madeflow.train.distributed import DataParallel, shard
from madeflow.train.evaluation import NumericalError, is_numerical_failure, mean_log_prob

__all__ = [
    "ADVICE",
    "NonFiniteLossError",
    "Trainer",
    "batch_bounds",
    "check_parameters",
    "epoch_batches",
    "lr_factor",
    "mask_modules",
    "validate",
]

ADVICE = "try a lower learning rate, gradient clipping or standardised data"

Batch = tuple[torch.Tensor, "torch.Tensor | None", int]
"""This rank's rows ``(k, D)``, their contexts ``(k, C)`` or ``None``, the global batch size."""


class NonFiniteLossError(NumericalError):
    """The training or validation loss, or the parameters, became NaN or infinite."""


def lr_factor(schedule: str | None, epoch: int, max_epochs: int) -> float:
    """The learning rate of ``epoch`` relative to the initial one.

    Args:
        schedule: ``None``/``"constant"`` (always 1) or ``"cosine"`` (annealed to 0 at
            ``max_epochs``).
        epoch: 0-based epoch.
        max_epochs: Total number of epochs.
    """
    if schedule in (None, "constant"):
        return 1.0
    # Cosine annealing to zero over ``max_epochs``; stateless so resuming needs nothing extra.
    return 0.5 * (1.0 + math.cos(math.pi * epoch / max(max_epochs, 1)))


def mask_modules(model: nn.Module) -> list[nn.Module]:
    """Every submodule with more than one mask to cycle (multi-mask MADEs)."""
    return [
        m
        for m in model.modules()
        if callable(getattr(m, "next_mask", None)) and getattr(m, "num_masks", 1) > 1
    ]


def batch_bounds(n: int, batch_size: int, world: int = 1) -> list[tuple[int, int]]:
    """``(start, stop)`` of each global mini-batch of ``n`` shuffled rows.

    A last batch with fewer than two rows per rank joins the one before it: batch statistics
    (batch norm) need two rows.

    Example:
        >>> batch_bounds(10, 4), batch_bounds(9, 4)
        ([(0, 4), (4, 8), (8, 10)], [(0, 4), (4, 9)])
    """
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] < 2 * world:
        starts.pop()
    return list(zip(starts, [*starts[1:], n]))


def epoch_batches(
    train: Rows,
    context: Rows | None,
    batch_size: int,
    par: DataParallel,
    generator: torch.Generator,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> Iterator[Batch]:
    """This rank's part of each mini-batch of one epoch, read (and augmented) when needed.

    The rows are shuffled with ``generator``; rank ``r`` of ``world`` takes rows ``r::world`` of
    every global batch. With ``augment`` every rank reads and augments the whole global batch,
    so the shared generator draws the same numbers on each rank, and keeps its rows.

    Args:
        train: ``(N, D)`` tensor or row source, on ``par.device`` if a tensor.
        context: ``(N, C)`` contexts, or ``None``.
        batch_size: Rows per global mini-batch.
        par: How training is spread over the ranks.
        generator: fit's seeded CPU generator.
        augment: ``augment(batch, generator) -> batch``, or ``None``.

    Yields:
        ``(x, c, count)``: ``(k, D)`` rows, ``(k, C)`` contexts or ``None``, and the number of
        rows in the global mini-batch.
    """
    device = par.device
    order = torch.randperm(len(train), generator=generator).to(device)
    for start, stop in batch_bounds(len(train), batch_size, par.world):
        idx = order[start:stop]
        if len(idx) < par.world:
            break  # fewer rows than ranks: some would have none
        mine = shard(idx, par.rank, par.world)
        if augment is None:
            x = take(train, mine, device)
        else:
            x = shard(augment(take(train, idx, device), generator), par.rank, par.world)
        c = None if context is None else take(context, mine, device)
        yield x, c, len(idx)


@dataclass
class Trainer:
    """Takes the optimizer steps of :func:`madeflow.fit`.

    Args:
        par: The model in its data-parallel wrapper (one process: the model itself).
        optimizer: Adam over the model's parameters.
        log_prob: ``log_prob(x, context) -> (k,)``: ``par.log_prob``, maybe compiled.
        clip_grad_norm: Clip the gradient's total norm to this value; ``None`` does not clip.
    """

    par: DataParallel
    optimizer: torch.optim.Optimizer
    log_prob: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    clip_grad_norm: float | None = None
    masks: list[nn.Module] = field(init=False)

    def __post_init__(self) -> None:
        self.masks = mask_modules(self.par.model)

    def step(self, x: torch.Tensor, c: torch.Tensor | None, count: int, where: str) -> float:
        """One Adam step on this rank's rows of a global batch of ``count`` rows.

        Args:
            x: ``(k, D)`` rows.
            c: ``(k, C)`` contexts, or ``None``.
            count: Rows in the global mini-batch.
            where: ``"epoch E, step S"``, for the error message.

        Returns:
            The global batch's summed log-likelihood (the same on every rank).

        Raises:
            NonFiniteLossError: If the loss is NaN or infinite, or the model's distribution
                refused its own NaN values, on finite data.
        """
        try:
            loss, total = self.par.loss(self.log_prob(x, c), count)
        except (ValueError, NumericalError) as err:
            if not is_numerical_failure(err, x, c):
                raise  # the data's or the caller's fault: the model's own message
            raise _diverged_at(where, "") from err
        # Without distribution validation (torch.compile turns it off for the whole process)
        # the same failure arrives as a NaN loss: one message for both.
        if not math.isfinite(total):
            raise _diverged_at(where, f" (loss {-total / count})")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad_norm is not None:
            nn.utils.clip_grad_norm_(self.par.model.parameters(), self.clip_grad_norm)
        self.optimizer.step()
        for made in self.masks:
            made.next_mask()
        return total

    def epoch(self, batches: Iterable[Batch], epoch: int) -> float:
        """Steps through the batches of ``epoch`` (from 1); returns the mean log-likelihood."""
        total, count = 0.0, 0
        for step, (x, c, n) in enumerate(batches, start=1):
            total += self.step(x, c, n, f"epoch {epoch}, step {step}")
            count += n
        self.par.sync_buffers()
        check_parameters(self.par.model, epoch)
        return total / count


def _diverged_at(where: str, detail: str) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"training diverged at {where}{detail}: the model's values became NaN or Inf on finite "
        f"data; {ADVICE}"
    )


def check_parameters(model: nn.Module, epoch: int) -> None:
    """Refuse parameters that became NaN or infinite during ``epoch`` (counted from 1)."""
    broken = next((k for k, p in model.named_parameters() if not p.isfinite().all()), None)
    if broken is not None:
        raise NonFiniteLossError(f"parameter {broken} became NaN or Inf at epoch {epoch}; {ADVICE}")


def validate(
    par: DataParallel,
    val: Rows,
    context: Rows | None,
    batch_size: int,
    epoch: int,
) -> float:
    """The validation log-likelihood after ``epoch`` (counted from 1; the same on every rank).

    Raises:
        NonFiniteLossError: If it is NaN or infinite, naming the rows where the model
            overflowed when they are known.
    """
    try:
        val_ll = mean_log_prob(par, par.model, val, context, max(batch_size, 1000))
    except NumericalError as err:
        raise NonFiniteLossError(
            f"training diverged at epoch {epoch}: the model's values became NaN or "
            f"Inf on finite validation rows {err.rows}; {ADVICE}"
        ) from err
    if not math.isfinite(val_ll):
        raise NonFiniteLossError(f"validation log-likelihood became {val_ll} at epoch {epoch}")
    return val_ll
