r"""scikit-learn's 8x8 digits as a small, offline stand-in for MNIST, with fixed splits.

Two versions: ``"binary"`` (pixel ``> 8`` out of ``0..16``, for :class:`~madeflow.BernoulliMADE`)
and ``"logit"`` (uniformly dequantized and mapped to logit space, as the MAF paper does for
images, for the continuous estimators). Log-likelihoods in logit space convert to pixel space with
:func:`logit_log_jacobian`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.functional import softplus

__all__ = ["DigitSplits", "load_digits", "logit_log_jacobian"]

NUM_IMAGES = 1797
NUM_LEVELS = 17  # pixels take the values 0..16


class DigitSplits(NamedTuple):
    """Train/validation/test images ``(N, 64)`` and their class labels ``(N,)`` (int64)."""

    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    train_y: torch.Tensor
    val_y: torch.Tensor
    test_y: torch.Tensor


def load_digits(
    kind: str = "logit",
    seed: int = 0,
    alpha: float = 0.05,
    dtype: torch.dtype = torch.float32,
) -> DigitSplits:
    r"""Load the 1,797 digits (8x8, 64 pixels) with a seeded train/val/test split.

    The split: ``perm = numpy.random.default_rng(seed).permutation(1797)``; the first 20% (359
    images) are the test set, the next 10% of the total (180) validation, the remaining 1,258
    training.

    - ``"binary"``: ``x = 1.0`` where pixel ``> 8``, else ``0.0``.
    - ``"logit"``: dequantize ``x = (pixel + u) / 17`` in ``[0, 1]`` with ``u ~ U(0, 1)`` drawn
      once from the same generator right after the permutation (one ``(1797, 64)`` draw, in the
      permuted order), so the data are fixed by ``seed``; then
      :math:`y = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`.

    Args:
        kind: ``"logit"`` or ``"binary"``.
        seed: Seed of the split and of the dequantization noise.
        alpha: The logit map's margin, ``0 < alpha < 0.5`` (``"logit"`` only).
        dtype: Floating dtype of the images.

    Returns:
        A :class:`DigitSplits`.

    Raises:
        ImportError: If scikit-learn (in the ``cli`` extra) is not installed.
        ValueError: On an unknown ``kind`` or ``alpha`` outside ``(0, 0.5)``.

    Example:
        >>> data = load_digits("binary")
        >>> tuple(data.train.shape), tuple(data.val.shape), tuple(data.test.shape)
        ((1258, 64), (180, 64), (359, 64))
    """
    if kind not in ("logit", "binary"):
        raise ValueError(f"kind must be 'logit' or 'binary', got {kind!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha!r}")
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "madeflow.data.load_digits needs scikit-learn (it ships the digits on disk): "
            'pip install "madeflow[cli]" (or pip install scikit-learn)'
        ) from err

    bunch = sklearn_digits()
    pixels = np.asarray(bunch.data, dtype=np.float64)
    labels = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(NUM_IMAGES)
    pixels, labels = pixels[perm], labels[perm]
    if kind == "binary":
        data = (pixels > 8).astype(np.float64)
    else:
        x = (pixels + rng.uniform(size=pixels.shape)) / NUM_LEVELS
        s = alpha + (1 - 2 * alpha) * x
        data = np.log(s) - np.log1p(-s)

    n_test = round(0.2 * NUM_IMAGES)
    n_val = round(0.1 * NUM_IMAGES)
    cuts = (slice(n_test + n_val, None), slice(n_test, n_test + n_val), slice(0, n_test))
    images = [torch.as_tensor(data[c], dtype=dtype) for c in cuts]
    ys = [torch.as_tensor(labels[c]) for c in cuts]
    return DigitSplits(*images, *ys)


def logit_log_jacobian(y: torch.Tensor, alpha: float = 0.05) -> torch.Tensor:
    r"""Log-Jacobian of the logit map, summed over pixels, evaluated at the logit-space point.

    With :math:`y = \operatorname{logit}(s)`, :math:`s = \alpha + (1 - 2\alpha) x` and ``x`` in
    ``[0, 1]`` units,

    .. math:: \log\left|\frac{dy}{dx}\right| = \log(1 - 2\alpha) + \operatorname{softplus}(y)
       + \operatorname{softplus}(-y),

    so that :math:`\log p_x(x) = \log p_y(y) + \texttt{logit\_log\_jacobian}(y)` with ``x`` in
    ``[0, 1]`` units. For densities over raw pixel units ``0..17`` subtract ``D * log(17)``
    (``D = 64``).

    Args:
        y: ``(*batch, D)`` logit-space points.
        alpha: The margin used by :func:`load_digits`.

    Returns:
        ``(*batch,)``.

    Example:
        >>> y = torch.zeros(2, 64)
        >>> logit_log_jacobian(y).shape
        torch.Size([2])
    """
    per_pixel = math.log1p(-2 * alpha) + softplus(y) + softplus(-y)
    return per_pixel.sum(-1)
