"""Pictures of a run for the command line (library code never plots; only the CLI imports this).

matplotlib is imported lazily with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from madeflow.data.preprocessing import DataSpace
from madeflow.data.rows import Rows, take
from madeflow.runs.folder import METRICS, read_history
from madeflow.runs.safe_io import CheckpointError, atomic_write_bytes
from madeflow.train.evaluation import evaluate_log_prob

__all__ = ["PLOT_ROWS", "plot_run"]

PLOT_ROWS = 10000
"""Test rows drawn from a row source (memory-mapped data); a tensor is drawn whole."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(
    folder: Path,
    model: nn.Module,
    space: DataSpace,
    test: Rows | None,
    config: dict[str, Any],
    seed: int = 0,
) -> list[Path]:
    """Draw ``samples.png`` (and ``training.png`` when metrics exist) into the run folder.

    Digits get a grid of sampled images next to test images; 1-D data the model's density over
    histograms of samples and test data; 2-D data a density heatmap and a scatter of samples;
    other data a scatter of the first two coordinates. An unreadable ``metrics.json`` skips
    ``training.png`` with a warning line.

    Args:
        folder: The run folder.
        model: The trained model (model space).
        space: Map to data space.
        test: Test data in model space ``(N, D)`` (the first :data:`PLOT_ROWS` rows of a row
            source), or ``None``.
        config: The run config.
        seed: Seed of the samples.

    Returns:
        The files written.
    """
    plt = _pyplot()
    model.eval()
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        samples = space.to_data(model.sample((64 if space.image_shape else 2000,))).cpu()
    if test is not None and not isinstance(test, torch.Tensor):  # a row source: plot a part
        test = take(test, torch.arange(min(len(test), PLOT_ROWS)))
    test_data = None if test is None else space.to_data(test.to(device)).cpu()
    written = []
    path = folder / "samples.png"
    if space.image_shape is not None:
        _digit_grids(plt, samples, test_data, space.image_shape, path)
    elif samples.shape[1] == 1:
        _density_1d(plt, model, space, samples, test_data, path, device)
    elif samples.shape[1] == 2:
        _density_2d(plt, model, space, samples, test_data, path, device)
    else:
        _first_two(plt, samples, test_data, path)
    written.append(path)
    hist = _history(folder) if (folder / METRICS).is_file() else None
    if hist is not None:
        _curves(plt, hist, folder / "training.png")
        written.append(folder / "training.png")
    return written


def _first_two(plt: Any, samples: torch.Tensor, test: torch.Tensor | None, path: Path) -> None:
    """A scatter of the first two coordinates of samples and test data."""
    samples = samples.numpy()
    test = None if test is None else test.numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    if test is not None:
        ax.scatter(test[:, 0], test[:, 1], s=3, alpha=0.4, label="test data")
    ax.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.4, label="samples")
    ax.set(xlabel="x[0]", ylabel="x[1]", title="first two coordinates")
    ax.legend()
    _savefig(plt, fig, path)


def _curves(plt: Any, hist: dict[str, list[float]], path: Path) -> None:
    """The training (and validation) log-likelihood per epoch."""
    fig, ax = plt.subplots(figsize=(6, 4))
    epochs = range(1, len(hist["train_log_lik"]) + 1)  # counted from 1, as fit prints them
    ax.plot(epochs, hist["train_log_lik"], label="train")
    if hist["val_log_lik"]:
        ax.plot(epochs[: len(hist["val_log_lik"])], hist["val_log_lik"], label="validation")
    ax.set(xlabel="epoch", ylabel="mean log-likelihood (nats, model space)")
    ax.legend()
    _savefig(plt, fig, path)


def _savefig(plt: Any, fig: Any, path: Path) -> None:
    """Save and close a figure; written atomically, a failure is one :class:`CheckpointError`."""
    import io

    try:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        atomic_write_bytes(path, buffer.getvalue())
    finally:
        plt.close(fig)


def _history(folder: Path) -> dict[str, list[float]] | None:
    """The curves of ``metrics.json``, or ``None`` (with a warning line) if it is unreadable."""
    try:
        return read_history(folder)
    except (CheckpointError, KeyError, TypeError, ValueError) as err:
        print(f"madeflow: warning: training.png not drawn: {err}", file=sys.stderr)
        return None


def _limits(ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plot limits per column: the central 99% of ``ref`` padded by 15% (never zero width)."""
    ref = ref.double()
    lo, hi = ref.quantile(0.005, dim=0), ref.quantile(0.995, dim=0)
    width = hi - lo
    pad = torch.where(width > 0, 0.15 * width, 0.5 * lo.abs().clamp_min(1.0))
    return lo - pad, hi + pad


def _density_1d(
    plt: Any,
    model: nn.Module,
    space: DataSpace,
    samples: torch.Tensor,
    test: torch.Tensor | None,
    path: Path,
    device: torch.device,
) -> None:
    lo, hi = _limits(samples if test is None else test)
    grid = torch.linspace(float(lo[0]), float(hi[0]), 400, dtype=torch.float64)[:, None]
    y = space.to_model(grid.to(device))
    log_p = (evaluate_log_prob(model, y) + space.log_jacobian(y)).cpu()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = torch.linspace(float(lo[0]), float(hi[0]), 60).numpy()
    if test is not None:
        ax.hist(test[:, 0].numpy(), bins=bins, density=True, alpha=0.4, label="test data")
    ax.hist(samples[:, 0].numpy(), bins=bins, density=True, alpha=0.4, label="samples")
    ax.plot(grid[:, 0].numpy(), log_p.exp().numpy(), label="model density")
    ax.set(xlabel="x", ylabel="density", xlim=(float(lo[0]), float(hi[0])))
    ax.legend()
    _savefig(plt, fig, path)


def _digit_grids(
    plt: Any, samples: torch.Tensor, test: torch.Tensor | None, shape: tuple, path: Path
) -> None:
    n = int(math.isqrt(samples.shape[0]))

    def grid(images: torch.Tensor) -> torch.Tensor:
        h, w = shape[0] + 1, shape[1] + 1  # one blank pixel between images
        imgs = torch.nn.functional.pad(images[: n * n].reshape(n, n, *shape), (0, 1, 0, 1))
        return imgs.permute(0, 2, 1, 3).reshape(n * h, n * w)

    panels = [("samples", samples)] + ([("test data", test)] if test is not None else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (title, imgs) in zip(axes[0], panels):
        ax.imshow(grid(imgs).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    _savefig(plt, fig, path)


def _density_2d(
    plt: Any,
    model: nn.Module,
    space: DataSpace,
    samples: torch.Tensor,
    test: torch.Tensor | None,
    path: Path,
    device: torch.device,
) -> None:
    lo, hi = _limits(samples if test is None else test)
    res = 150
    gx, gy = torch.linspace(lo[0], hi[0], res), torch.linspace(lo[1], hi[1], res)
    xx, yy = torch.meshgrid(gx, gy, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], -1).to(device)
    y = space.to_model(pts)
    log_p = (evaluate_log_prob(model, y) + space.log_jacobian(y)).cpu()
    samples, test = samples.numpy(), None if test is None else test.numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    extent = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
    density = log_p.exp().reshape(res, res).numpy()
    axes[0].imshow(density, origin="lower", extent=extent, aspect="auto")
    axes[0].set_title("model density")
    if test is not None:
        axes[1].scatter(test[:, 0], test[:, 1], s=2, alpha=0.3, label="test data")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.3, label="samples")
    axes[1].set(xlim=extent[:2], ylim=extent[2:], title="samples")
    axes[1].legend(loc="upper right")
    _savefig(plt, fig, path)
