"""The state of a training run: its history, the best weights so far, and resuming.

:func:`madeflow.fit` keeps a :class:`History`, an :class:`EarlyStopping` counter (the best weights
and the epochs since they improved), Adam's state and two random generators. At the end of each
epoch :func:`snapshot` copies all of it into a dict of plain tensors and numbers (what
:meth:`EpochEnd.state` returns), and :func:`restore` applies such a dict, so a resumed run ends
with bitwise the same parameters (on CPU) as one that never stopped.

A training state is applied piece by piece: model weights, Adam's moments, two random generators,
the history. A damaged or foreign state would fail half-way (with torch's own message, after the
global random state was already replaced) or, worse, at the end of training. :func:`check_state`
checks every field against the model first and raises one :class:`TrainingStateError` naming the
field.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "STATE_VERSION",
    "EarlyStopping",
    "EpochEnd",
    "History",
    "TrainingStateError",
    "check_state",
    "restore",
    "snapshot",
    "upgrade",
]

STATE_VERSION = 2
"""Version of the training-state layout (2: epochs counted from 1, see :func:`upgrade`)."""

STOPPED_EARLY = ("early_stopping", "callback")
"""Values of :attr:`History.stopped` after which a resumed run trains no further."""


class TrainingStateError(ValueError):
    """A training state to resume from is damaged or belongs to another model."""


@dataclass
class History:
    """What happened during :func:`fit`.

    Attributes:
        train_log_lik: Mean training log-likelihood per epoch (nats per example, averaged over the
            epoch's mini-batches while the weights were changing).
        val_log_lik: Mean validation log-likelihood per epoch after the epoch (empty without
            validation data).
        best_epoch: The epoch whose weights were kept, counted from 1 like ``epochs`` (so
            ``1 <= best_epoch <= epochs``); ``0`` before any epoch.
        best_val_log_lik: The validation log-likelihood of the kept weights (``nan`` without
            validation data).
        stopped: Why training ended: ``"max_epochs"``, ``"early_stopping"`` or ``"callback"``.
        epochs: Number of epochs run in total (including those before a resume).
        seconds: Wall-clock time spent in this call.
    """

    train_log_lik: list[float] = field(default_factory=list)
    val_log_lik: list[float] = field(default_factory=list)
    best_epoch: int = 0
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
        epoch: The epoch that just ended, counted from 1 (``history.epochs`` after it).
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


def clone(obj: Any) -> Any:
    """A deep copy of nested dicts/lists of tensors, detached and cloned."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone(v) for v in obj)
    return copy.deepcopy(obj)


class EarlyStopping:
    """The best weights so far and the number of epochs since they improved.

    Args:
        best_weights: The ``state_dict`` to restore at the end if no epoch improves on it.
        bad_epochs: Epochs already run without improvement (when resuming).
    """

    def __init__(self, best_weights: dict[str, Any], bad_epochs: int = 0) -> None:
        self.best_weights = best_weights
        self.bad_epochs = bad_epochs

    def update(
        self, history: History, epoch: int, val_log_lik: float | None, model: nn.Module
    ) -> bool:
        """Record the end of ``epoch`` (counted from 1); returns whether its weights are the best.

        Without validation data (``val_log_lik is None``) every epoch counts as an improvement,
        so the last weights are kept.
        """
        improved = (
            val_log_lik is None or history.best_epoch == 0 or val_log_lik > history.best_val_log_lik
        )
        if improved:
            history.best_epoch = epoch
            if val_log_lik is not None:
                history.best_val_log_lik = val_log_lik
            self.best_weights = clone(model.state_dict())
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1
        return improved

    def exhausted(self, patience: int | None) -> bool:
        """Whether ``patience`` epochs have passed without improvement (never for ``None``)."""
        return patience is not None and self.bad_epochs >= patience


def snapshot(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    history: History,
    best_weights: dict[str, Any],
    bad_epochs: int,
) -> dict[str, Any]:
    """A detached copy of everything :func:`restore` needs to continue after ``epoch``.

    ``epoch`` counts from 1: it is the number of epochs run so far.

    The model, the optimizer, the generators and the history are copied as they are when this is
    called; ``best_weights`` and ``bad_epochs`` are those of the end of ``epoch``.

    Returns:
        A dict of tensors, numbers, strings, lists and dicts (loads with ``weights_only=True``).
    """
    return {
        "version": STATE_VERSION,
        "epoch": epoch,
        "model": clone(model.state_dict()),
        "optimizer": clone(optimizer.state_dict()),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": clone(history.to_dict()),
        "best_model": clone(best_weights),
        "bad_epochs": bad_epochs,
    }


def restore(
    state: dict[str, Any] | None,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    max_epochs: int,
) -> tuple[History, EarlyStopping, int]:
    """Apply a state from :func:`snapshot`, after checking all of it (:func:`check_state`).

    Args:
        state: The state, or ``None`` for a fresh start.
        model: Gets the state's weights.
        optimizer: Gets Adam's state.
        generator: Gets the shuffling generator's state (torch's global one is set too).
        max_epochs: The run's total number of epochs.

    Returns:
        ``(history, early_stopping, first_epoch)``; ``first_epoch`` is ``max_epochs`` when the
        saved run had already stopped early or by its callback.

    Raises:
        TrainingStateError: If ``state`` is damaged or belongs to another model.
    """
    if state is None:
        return History(), EarlyStopping(clone(model.state_dict())), 0
    state = upgrade(state)
    check_state(state, model)
    try:
        model.load_state_dict(state["best_model"])  # checks its MADE buffers now, not at the end
        model.load_state_dict(state["model"])
    except ValueError as err:
        raise TrainingStateError(str(err)) from err
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    history = History(**state["history"])
    stopping = EarlyStopping(clone(state["best_model"]), int(state["bad_epochs"]))
    first = max_epochs if history.stopped in STOPPED_EARLY else int(state["epoch"])
    return history, stopping, first


# ----------------------------------------------------------------------------- checks
_HISTORY_LISTS = ("train_log_lik", "val_log_lik")
_HISTORY_FIELDS = {
    *_HISTORY_LISTS,
    "best_epoch",
    "best_val_log_lik",
    "stopped",
    "epochs",
    "seconds",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_weights(name: str, weights: Any, own: dict[str, torch.Tensor]) -> None:
    if not isinstance(weights, dict):
        raise TrainingStateError(f"{name} is not a state_dict")
    if set(weights) != set(own):
        missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
        raise TrainingStateError(
            f"{name} does not fit this model (missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for key, value in weights.items():
        mine = own[key]
        if not isinstance(value, torch.Tensor) or value.shape != mine.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise TrainingStateError(
                f"{name}.{key} has shape {shape}, expected {tuple(mine.shape)}"
            )
        if value.is_floating_point() != mine.is_floating_point():
            raise TrainingStateError(f"{name}.{key} has dtype {value.dtype}, expected {mine.dtype}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise TrainingStateError(f"{name}.{key} holds NaN or Inf")


def _check_optimizer(opt: Any, params: list[nn.Parameter]) -> None:
    if not isinstance(opt, dict) or not isinstance(opt.get("param_groups"), list):
        raise TrainingStateError("optimizer is not an optimizer state_dict")
    if not isinstance(opt.get("state"), dict):
        raise TrainingStateError("optimizer has no 'state'")
    ids = [i for group in opt["param_groups"] for i in group.get("params", [])]
    if len(ids) != len(params):
        raise TrainingStateError(
            f"optimizer holds {len(ids)} parameters, this model has {len(params)}"
        )
    for index, param in zip(ids, params):
        moments = opt["state"].get(index, {})
        if not isinstance(moments, dict):
            raise TrainingStateError(f"optimizer state of parameter {index} is not a dict")
        for key, value in moments.items():
            if not isinstance(value, torch.Tensor):
                raise TrainingStateError(f"optimizer.state.{index}.{key} is not a tensor")
            if key != "step" and value.shape != param.shape:
                raise TrainingStateError(
                    f"optimizer.state.{index}.{key} has shape {tuple(value.shape)}, expected "
                    f"{tuple(param.shape)}"
                )
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise TrainingStateError(f"optimizer.state.{index}.{key} holds NaN or Inf")


def _check_history(history: Any) -> None:
    if not isinstance(history, dict) or set(history) != _HISTORY_FIELDS:
        raise TrainingStateError(f"history must hold the fields {sorted(_HISTORY_FIELDS)}")
    for key in _HISTORY_LISTS:
        values = history[key]
        if not isinstance(values, list) or not all(
            isinstance(v, numbers.Real) and math.isfinite(v) for v in values
        ):
            raise TrainingStateError(f"history.{key} must be a list of finite numbers")
    for key in ("best_epoch", "epochs"):
        if not _is_int(history[key]) or history[key] < 0:
            raise TrainingStateError(f"history.{key} must be an integer, got {history[key]!r}")
    if not isinstance(history["stopped"], str):
        raise TrainingStateError(f"history.stopped must be a string, got {history['stopped']!r}")


def upgrade(state: Any) -> Any:
    """A version-1 training state in the current layout; anything else unchanged.

    Version 1 counted epochs from 0 (``epoch`` and ``history.best_epoch`` were indices); version 2
    counts them from 1, like ``history.epochs``. Resuming an older run therefore goes on where it
    stopped, and reports the same best epoch as before.

    Args:
        state: A training state as saved, of any version (checked later by :func:`check_state`).

    Returns:
        A shallow copy with the numbers shifted for version 1; ``state`` itself otherwise.
    """
    version = state.get("version") if isinstance(state, dict) else None
    if not _is_int(version) or version != 1:  # anything else is for check_state to judge
        return state
    history = state.get("history")
    new = {**state, "version": STATE_VERSION}
    if _is_int(state.get("epoch")):
        new["epoch"] = state["epoch"] + 1
    if isinstance(history, dict) and _is_int(history.get("best_epoch")):
        new["history"] = {**history, "best_epoch": history["best_epoch"] + 1}
    return new


def check_state(state: Any, model: nn.Module) -> None:
    """Check every field of a training state against ``model`` before anything is applied.

    Args:
        state: What :meth:`madeflow.EpochEnd.state` returned (e.g. read back from disk).
        model: The model to resume, with its parameters in the order the optimizer holds them.

    Raises:
        TrainingStateError: Naming the first field that is missing, of the wrong type or shape,
            non-finite, or of another model.
    """
    if not isinstance(state, dict):
        raise TrainingStateError(f"the training state is a {type(state).__name__}, not a dict")
    missing = {
        "version",
        "epoch",
        "model",
        "optimizer",
        "generator",
        "torch_rng",
        "history",
        "best_model",
        "bad_epochs",
    } - set(state)
    if missing:
        raise TrainingStateError(f"the training state lacks {sorted(missing)}")
    if not _is_int(state["version"]) or state["version"] != STATE_VERSION:
        raise TrainingStateError(f"unsupported training state version {state['version']!r}")
    for key in ("epoch", "bad_epochs"):
        if not _is_int(state[key]) or state[key] < 0:
            raise TrainingStateError(f"{key} must be an integer >= 0, got {state[key]!r}")
    own = model.state_dict()
    _check_weights("model", state["model"], own)
    _check_weights("best_model", state["best_model"], own)
    _check_optimizer(state["optimizer"], list(model.parameters()))
    reference = {"generator": torch.Generator().get_state(), "torch_rng": torch.get_rng_state()}
    for key, ref in reference.items():
        value = state[key]
        if (
            not isinstance(value, torch.Tensor)
            or value.dtype != torch.uint8
            or (value.shape != ref.shape)
        ):
            raise TrainingStateError(f"{key} is not a random generator state")
    _check_history(state["history"])
