"""Data-parallel training on ``torch.distributed``: the process group and what :func:`fit` needs.

``torchrun --nproc_per_node N -m madeflow fit ...`` starts ``N`` processes (*ranks*) with
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. :func:`init` joins them in a
process group (backend ``nccl`` for CUDA, ``gloo`` for the CPU, and a finite timeout, so a dead or
stuck peer ends the job with an error instead of a hang) and gives each rank its device
(``cuda:LOCAL_RANK`` on GPUs). :class:`DataParallel` is what :func:`madeflow.fit` does
differently with several ranks:

* rank 0's parameters and buffers (e.g. a MADE's masks) are copied to every rank at the start;
* each global mini-batch is split across ranks (rank ``r`` takes rows ``r::world``), and the
  model runs inside :class:`~torch.nn.parallel.DistributedDataParallel`, which all-reduces the
  gradients during ``backward``; each rank's loss is scaled so that the all-reduced gradient is
  the gradient of the mean over the *global* batch, so the parameters follow a one-process run
  up to the order of floating-point sums;
* mask schedules (``next_mask``) advance identically on every rank, so DDP does not broadcast
  buffers; floating-point buffers (batch-norm running averages, which each rank updates from its
  own rows) are averaged across ranks at the end of each epoch;
* losses, validation scores and stop decisions are all-reduced, so every rank takes the same
  decision at the same step and none is left waiting.

Every function here works in a single process too (rank 0 of 1, nothing communicated).
"""

from __future__ import annotations

import atexit
import inspect
import os
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from madeflow.data.rows import Rows, subset

__all__ = [
    "DEFAULT_TIMEOUT",
    "TIMEOUT_ENV",
    "DataParallel",
    "all_sum",
    "backend_for",
    "broadcast_object",
    "destroy",
    "gist",
    "init",
    "is_active",
    "is_main",
    "is_peer_failure",
    "launched",
    "local_rank",
    "rank",
    "rank_device",
    "shard",
    "timeout",
    "world_size",
]

TIMEOUT_ENV = "MADEFLOW_DIST_TIMEOUT"
"""Environment variable: seconds a rank waits for its peers in a collective before failing."""

DEFAULT_TIMEOUT = 600.0
"""Default of :data:`TIMEOUT_ENV` in seconds (rank 0 writes checkpoints while the others wait)."""


def launched() -> bool:
    """Whether a launcher (``torchrun``) started this process as one of several (``WORLD_SIZE``)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_active() -> bool:
    """Whether a process group of more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank: in the process group, else the launcher's ``RANK``, else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``; 0 when not launched)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this is rank 0, the one that writes files and prints."""
    return rank() == 0


def timeout() -> timedelta:
    """How long a collective waits for the other ranks: :data:`TIMEOUT_ENV` seconds, or 600.

    Raises:
        ValueError: If the variable is set but is not a positive number.
    """
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return timedelta(seconds=seconds)


def backend_for(device: torch.device | str) -> str:
    """``"nccl"`` for a CUDA device, ``"gloo"`` otherwise."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: torch.device | str) -> torch.device:
    """The device this rank trains on: ``cuda:LOCAL_RANK`` for CUDA under a launcher, else as is."""
    device = torch.device(device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", local_rank())
    return device


def init(device: torch.device | str = "cpu") -> torch.device:
    """Join the launcher's process group (once, if launched) and return this rank's device.

    Reads the rendezvous from the environment ``torchrun`` sets (``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``), picks the backend with :func:`backend_for` and the
    timeout with :func:`timeout`, and leaves the group at exit (or at :func:`destroy`). Does
    nothing but map the device when not launched.

    Args:
        device: Where training runs; a CUDA device becomes ``cuda:LOCAL_RANK``.

    Returns:
        This rank's device.

    Raises:
        RuntimeError: If launched with several processes but torch has no ``torch.distributed``.
    """
    device = rank_device(device)
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return device
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), timeout=timeout())
    # A group still alive when the interpreter exits makes some torch versions abort the process.
    atexit.register(destroy)
    return device


def destroy() -> None:
    """Leave the process group (if one is initialised)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (pickled; returned unchanged without a process group).

    Only for objects made by the ranks of this job (unpickling runs code).
    """
    if not is_active():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _all_reduce(tensors: Sequence[torch.Tensor], op: Any = None) -> None:
    """``dist.all_reduce`` each tensor in place, returning once gloo has let go of them.

    A finished gloo collective's work object can hold its tensors a moment longer on gloo's
    worker thread, which then needs the GIL to release them. If the interpreter is exiting by
    then (the last collective of a run), the process aborts with "terminate called without an
    active exception"; DDP keeps the process group, and so those threads, alive until exit. Waiting
    (at most a second) until the tensors' reference counts are back to what they were leaves
    the last reference to this thread.
    """
    before = [t._use_count() if hasattr(t, "_use_count") else 0 for t in tensors]
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op is None else op)
    if dist.get_backend() != "gloo" or not all(before):
        return
    deadline = time.monotonic() + 1.0
    held = list(zip(tensors, before))
    while held and time.monotonic() < deadline:
        held = [(t, n) for t, n in held if t._use_count() > n]
        time.sleep(0)


def all_sum(values: Sequence[torch.Tensor | float], device: torch.device | str) -> list[float]:
    """Sums over the ranks in float64 (the values themselves without a process group).

    Args:
        values: Numbers or one-element tensors.
        device: Where the all-reduce runs (a CUDA device for ``nccl``).

    Returns:
        The sums, the same on every rank.
    """
    if not is_active():
        return [float(v) for v in values]
    t = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in values]).to(device)
    _all_reduce([t])
    return t.tolist()


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` says that another rank died, hung or could not be reached."""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    signs = ("Connection closed by peer", "Connection reset by peer", "Timed out", "NCCL", "gloo")
    return isinstance(err, RuntimeError) and any(s in text for s in signs)


def gist(err: BaseException) -> str:
    """The first sentence of an error, without the source-file prefix gloo and NCCL put first."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if text.startswith("[") and "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(". ", 1)[0]


def shard(data: Rows | None, part: int | None = None, parts: int | None = None) -> Rows | None:
    """Rows ``part::parts`` of ``data``: by default this rank's share (all of it in one process).

    Args:
        data: ``(N, D)`` tensor, row source, or ``None``.
        part: Which share; defaults to :func:`rank`.
        parts: How many shares; defaults to :func:`world_size`.

    Returns:
        A strided view of a tensor, a lazy subset of a row source, or ``None``.
    """
    part = rank() if part is None else part
    parts = world_size() if parts is None else parts
    if data is None or parts == 1:
        return data
    if isinstance(data, torch.Tensor):
        return data[part::parts]
    return subset(data, torch.arange(part, len(data), parts))


class _LogProb(nn.Module):
    """``forward(x, context) = model.log_prob(x, context)``: DDP reduces what ``forward`` uses."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``(k, D) -> (k,)`` log-likelihoods."""
        if context is None:
            return self.model.log_prob(x)
        return self.model.log_prob(x, context=context)


def _no_buffer_sync() -> dict[str, bool]:
    # Newer torch renames the flag; both leave buffers alone in forward (DataParallel syncs them).
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    if "forward_sync_buffers" in params:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


class DataParallel:
    """One training run spread over the ranks of the process group, or run in this process alone.

    See the module docstring for what is shared and what is split. With one process (no process
    group, or a group of one) every method is the plain single-process computation.

    Args:
        model: The module being trained (with ``log_prob``), already on ``device``.
        device: This rank's device.
    """

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.world = world_size() if is_active() else 1
        self.rank = rank() if self.world > 1 else 0
        self._ddp: nn.Module | None = None
        if self.world > 1:
            # Buffers too (DDP copies only parameters): ranks may have drawn different masks.
            main = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            state = broadcast_object(main if self.rank == 0 else None)
            if self.rank != 0:
                model.load_state_dict(state)
            ids = [device] if device.type == "cuda" else None
            self._ddp = nn.parallel.DistributedDataParallel(
                _LogProb(model), device_ids=ids, **_no_buffer_sync()
            )

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the training state to resume from)."""
        return broadcast_object(obj) if self.world > 1 else obj

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """``model.log_prob`` of this rank's rows, through DDP when distributed."""
        if self._ddp is not None:
            return self._ddp(x, context)
        if context is None:
            return self.model.log_prob(x)
        return self.model.log_prob(x, context=context)

    def loss(self, log_p: torch.Tensor, count: int) -> tuple[torch.Tensor, float]:
        """The loss to back-propagate and the global batch's summed log-likelihood.

        Args:
            log_p: ``(k,)`` log-likelihoods of this rank's rows.
            count: Rows in the global mini-batch.

        Returns:
            ``(loss, total)``: ``loss`` is ``-mean(log_p)`` in one process and
            ``-sum(log_p) * world / count`` on each rank (DDP averages gradients over the ranks,
            giving the gradient of the global mean); ``total`` is the same number on every rank,
            NaN or infinite if any rank's is.
        """
        if self.world == 1:
            loss = -log_p.mean()
            return loss, -loss.item() * count
        local = log_p.sum()
        (total,) = self.sum([local.detach()])
        return -local * (self.world / count), total

    def sum(self, values: Sequence[torch.Tensor | float]) -> list[float]:
        """Sums over the ranks, in float64 (the values themselves in one process)."""
        if self.world == 1:
            return [float(v) for v in values]
        return all_sum(values, self.device)

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (so that every rank stops together)."""
        if self.world == 1:
            return bool(flag)
        t = torch.tensor([int(bool(flag))], device=self.device)
        _all_reduce([t], op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sync_buffers(self) -> None:
        """Average the model's floating-point buffers over the ranks (integer buffers are equal)."""
        if self.world == 1:
            return
        floating = [buf for buf in self.model.buffers() if buf.is_floating_point()]
        _all_reduce(floating)
        for buf in floating:
            buf.div_(self.world)

    def close(self) -> None:
        """Drop the DDP wrapper (and its gradient hooks); the model stays as trained."""
        self._ddp = None
