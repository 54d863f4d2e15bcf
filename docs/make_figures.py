"""Render the static figures of the docs: ``python docs/make_figures.py``."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from madeflow import MADE  # noqa: E402

OUT = Path(__file__).parent / "_static"


def masks_figure() -> None:
    """Masks of a small MADE and its Jacobian, in input order and in the ordering."""
    perm = [2, 0, 5, 1, 4, 3]
    made = MADE(6, [10, 10], permutation=perm, param_dims=(1,), activation=torch.nn.Tanh)
    mats = [layer.mask for layer in made.layers] + [made.output_layer.mask]
    names = ["input -> hidden 1", "hidden 1 -> hidden 2", "hidden 2 -> output"]
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.4))
    for ax, m, name in zip(axes, mats, names):
        ax.imshow(m.int(), cmap="Greys", vmin=0, vmax=1)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("from unit")
        ax.set_ylabel("to unit")
    jac = torch.autograd.functional.jacobian(lambda x: made(x), torch.randn(6, dtype=torch.float32))
    axes[3].imshow((jac.abs() > 0).int(), cmap="Greys", vmin=0, vmax=1)
    axes[3].set_title("d output / d input (ordering 2,0,5,1,4,3)", fontsize=10)
    axes[3].set_xlabel("input")
    axes[3].set_ylabel("output")
    ordered = (jac.abs() > 0).int()[perm][:, perm]
    axes[4].imshow(ordered, cmap="Greys", vmin=0, vmax=1)
    axes[4].set_title("same, rows and columns in that order", fontsize=10)
    axes[4].set_xlabel("k-th input")
    axes[4].set_ylabel("k-th output")
    fig.tight_layout()
    fig.savefig(OUT / "masks.png", dpi=110)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    masks_figure()
