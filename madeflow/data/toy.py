"""Two-dimensional toy densities, generated in code, for trying density estimators quickly.

Every generator is seeded by its own :class:`torch.Generator`, so ``toy_data(name, n, seed)`` is
the same on every machine and does not touch torch's global random state.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["TOY_DATASETS", "toy_data"]

# Draws are made in float64 whatever the default dtype, so a seed names one data set.
F64 = torch.float64


def _two_moons(n: int, g: torch.Generator) -> torch.Tensor:
    upper = torch.rand(n, generator=g, dtype=F64) < 0.5
    t = torch.rand(n, generator=g, dtype=F64) * math.pi
    x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    return torch.stack([x - 0.5, y - 0.25], -1) * 2.0 + 0.1 * torch.randn(
        n, 2, generator=g, dtype=F64
    )


def _rings(n: int, g: torch.Generator) -> torch.Tensor:
    radius = torch.randint(1, 5, (n,), generator=g).to(F64)
    t = torch.rand(n, generator=g, dtype=F64) * 2 * math.pi
    pts = torch.stack([torch.cos(t), torch.sin(t)], -1) * radius[:, None]
    return pts + 0.08 * torch.randn(n, 2, generator=g, dtype=F64)


def _checkerboard(n: int, g: torch.Generator) -> torch.Tensor:
    x1 = torch.rand(n, generator=g, dtype=F64) * 4 - 2
    x2 = torch.rand(n, generator=g, dtype=F64) - torch.randint(0, 2, (n,), generator=g).to(F64) * 2
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], -1) * 2


def _eight_gaussians(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=g).to(F64)
    angle = k * (2 * math.pi / 8)
    centres = torch.stack([torch.cos(angle), torch.sin(angle)], -1) * 2.0
    return centres + 0.2 * torch.randn(n, 2, generator=g, dtype=F64)


def _spirals(n: int, g: torch.Generator) -> torch.Tensor:
    t = torch.sqrt(torch.rand(n, generator=g, dtype=F64)) * 3 * math.pi
    sign = torch.where(torch.rand(n, generator=g, dtype=F64) < 0.5, -1.0, 1.0).to(F64)
    pts = torch.stack([-torch.cos(t) * t, torch.sin(t) * t], -1) * sign[:, None] / 3.0
    return pts + 0.1 * torch.randn(n, 2, generator=g, dtype=F64)


def _pinwheel(n: int, g: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 5, (n,), generator=g).to(F64)
    r = 1.0 + 0.3 * torch.randn(n, generator=g, dtype=F64)
    r = r.abs()
    angle = k * (2 * math.pi / 5) + 0.25 * torch.randn(n, generator=g, dtype=F64) + 0.8 * r
    return torch.stack([torch.cos(angle), torch.sin(angle)], -1) * r[:, None] * 1.5


TOY_DATASETS: dict[str, Callable[[int, torch.Generator], torch.Tensor]] = {
    "moons": _two_moons,
    "rings": _rings,
    "checkerboard": _checkerboard,
    "8gaussians": _eight_gaussians,
    "spirals": _spirals,
    "pinwheel": _pinwheel,
}
"""Name -> generator ``(n, generator) -> (n, 2)``."""

_ALIASES = {"two_moons": "moons", "two-moons": "moons", "eight_gaussians": "8gaussians"}


def toy_data(name: str, n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw ``n`` points from a named 2-D toy density.

    Args:
        name: One of ``moons``, ``rings``, ``checkerboard``, ``8gaussians``, ``spirals``,
            ``pinwheel`` (also ``two_moons``, ``eight_gaussians``).
        n: Number of points (>= 1).
        seed: Seed of the draw.
        dtype: Floating dtype of the result.

    Returns:
        ``(n, 2)`` points.

    Example:
        >>> toy_data("moons", 5).shape
        torch.Size([5, 2])
    """
    key = _ALIASES.get(name, name)
    if key not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose from {sorted(TOY_DATASETS)}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    return TOY_DATASETS[key](n, g).to(dtype)
