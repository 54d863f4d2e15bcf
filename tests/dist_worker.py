"""Programs that ``tests/test_train_distributed.py`` runs under ``torchrun`` (not a test module).

``python dist_worker.py train DATA.npy OUT``
    Trains three tiny models with :func:`madeflow.fit` and saves, per rank, what the tests
    compare (``OUT/rank{r}.pt``): a multi-mask Gaussian MADE on memory-mapped data with its
    parameters and masks after every step; a MAF-MoG on tensors with augmentation; a MAF with
    batch norm whose last batch (one row) is skipped. Each rank builds its models from a
    different torch seed: :func:`fit` must copy rank 0's. Then checks the collective timeout:
    rank 1 stops answering, and rank 0 records the error it gets.

``python dist_worker.py kill-at EPOCH fit ARGS...``
    ``madeflow fit ARGS...`` in which rank 1 SIGKILLs itself at the end of epoch ``EPOCH``
    (counted from 1), like a machine that dies mid-run. Rank 0 ignores the SIGTERM with which
    ``torchrun`` stops the survivors, so that it always reports the failure itself (without a
    launcher to stop it, that report is all a user would get).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

import madeflow
from madeflow.data import MemmapRows
from madeflow.distributions import GaussianMADE
from madeflow.nn.linear import MaskedLinear
from madeflow.train import distributed

SEED = 7


def made_model() -> GaussianMADE:
    """The multi-mask MADE of the step-by-step checks (masks seeded, weights from torch's RNG)."""
    return GaussianMADE(2, [16], num_masks=3, permutation="random", seed=1)


def maf_model(batch_norm: bool = False) -> torch.nn.Module:
    return madeflow.build_model(
        "maf-mog" if not batch_norm else "maf",
        2,
        hidden_dims=[8],
        num_transforms=2,
        num_components=3,
        batch_norm=batch_norm,
        seed=None,
    )


def jitter(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Augmentation drawing from fit's generator."""
    return batch + 0.05 * torch.randn(batch.shape, generator=gen, dtype=batch.dtype)


def record_steps(model: GaussianMADE, log: dict[str, list]) -> None:
    """Log parameters and masks after each optimizer step (fit calls next_mask right after it)."""
    step = model.made.next_mask

    def next_mask() -> int:
        log["params"].append(torch.cat([p.detach().flatten() for p in model.parameters()]))
        masks = [m.mask.flatten() for m in model.modules() if isinstance(m, MaskedLinear)]
        log["masks"].append(torch.cat(masks))
        log["mask_index"].append(int(model.made.mask_index))
        return step()

    model.made.next_mask = next_mask


def train(data_path: str, out: str) -> None:
    torch.set_default_dtype(torch.float64)
    device = distributed.init("cpu")
    rank = distributed.rank()
    result: dict = {"world": distributed.world_size()}

    rows = MemmapRows(np.load(data_path, mmap_mode="r"), dtype=torch.float64)
    train_rows, val_rows = rows.subset(torch.arange(256)), rows.subset(torch.arange(256, 288))
    torch.manual_seed(100 + rank)  # unlike rank 0 on purpose
    made = made_model()
    log: dict[str, list] = {"params": [], "masks": [], "mask_index": []}
    record_steps(made, log)
    hist = madeflow.fit(
        made, train_rows, val_rows, max_epochs=3, batch_size=32, lr=1e-2, seed=SEED,
        progress=False, device=device,
    )  # fmt: skip
    result["made"] = {k: torch.stack(v) if k != "mask_index" else v for k, v in log.items()}
    result["made_state"] = made.state_dict()
    result["made_history"] = hist.to_dict()

    full = torch.from_numpy(np.load(data_path))
    torch.manual_seed(200 + rank)
    maf = maf_model()
    hist = madeflow.fit(
        maf, full[:256], full[256:], max_epochs=2, batch_size=64, lr=1e-2, seed=SEED,
        progress=False, augment=jitter,
    )  # fmt: skip
    result["maf_state"], result["maf_history"] = maf.state_dict(), hist.to_dict()

    torch.manual_seed(300 + rank)
    bn = maf_model(batch_norm=True)
    hist = madeflow.fit(bn, full[:257], full[257:], max_epochs=2, batch_size=32, progress=False)
    result["bn_state"], result["bn_history"] = bn.state_dict(), hist.to_dict()
    torch.save(result, Path(out) / f"rank{rank}.pt")

    # A peer that stops answering: rank 0's next collective must fail after the timeout.
    done = Path(out) / "timeout.txt"
    torch.distributed.barrier()
    if rank == 0:
        try:
            torch.distributed.all_reduce(torch.ones(1))
            done.write_text("no error")
        except Exception as err:
            done.write_text(f"{distributed.is_peer_failure(err)}\n{type(err).__name__}: {err}")
    else:
        t_end = time.monotonic() + 120
        while not done.exists() and time.monotonic() < t_end:
            time.sleep(0.05)
    sys.stdout.flush()
    os._exit(0)  # the group is broken: leave without tearing it down


def fit_then_die(epoch: int, argv: list[str]) -> int:
    import madeflow.cli
    import madeflow.cli.fit

    real_fit = madeflow.cli.fit.fit

    def fit(*args, callback=None, **kwargs):
        def dying(event):
            out = callback(event)
            if event.epoch == epoch and distributed.rank() == 1:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        return real_fit(*args, callback=dying, **kwargs)

    madeflow.cli.fit.fit = fit
    if distributed.rank() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return madeflow.cli.main(argv)


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "train":
        train(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "kill-at":
        sys.exit(fit_then_die(int(sys.argv[2]), sys.argv[3:]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")
