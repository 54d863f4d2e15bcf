r"""Map data to the space a model is trained in and back, with the log-Jacobian of the map.

Density models are trained in *model space*: logits of the dequantized digits, standardised toy
and file data, 0/1 for binary digits. :class:`DataSpace` maps between model space and *data
space* (pixels in ``[0, 1]``, or the file's own units) and gives the log-Jacobian of the map, so
that likelihoods and samples can be reported in the data's units:

.. math:: \log p_\text{data}(x) = \log p_\text{model}(y) + \log\left|\det
   \frac{\partial y}{\partial x}\right|, \qquad y = \texttt{to\_model}(x).

:class:`Dequantize` is the augmentation ``madeflow fit`` trains the digits with: fresh uniform
dequantization noise for every mini-batch, drawn from :func:`madeflow.fit`'s seeded generator.
Everything ``madeflow fit`` does to its data is here and in :mod:`madeflow.data`, so a Python
recipe reaches the same numbers (see ``docs/getting-started.md``).

Example:
    >>> from madeflow.data import load_digits
    >>> data = load_digits("logit", seed=0)
    >>> space = DataSpace.logit(alpha=0.05)
    >>> pixels = space.to_data(data.test)  # (359, 64) in [0, 1]
    >>> torch.allclose(space.to_model(pixels), data.test, atol=1e-4)
    True
    >>> tuple(space.log_jacobian(data.test).shape)
    (359,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from madeflow.data.digits import NUM_LEVELS, logit_log_jacobian
from madeflow.data.files import DataError, Standardizer
from madeflow.data.rows import Rows

__all__ = ["DIGITS", "DataSpace", "Dequantize"]

DIGITS = ("digits", "digits-binary")
"""The kinds of :class:`DataSpace` whose rows are 8x8 images."""


class Dequantize:
    r"""Fresh dequantization noise for logit-space images: an ``augment`` for :func:`madeflow.fit`.

    Recovers each pixel's integer level from its logit and redraws its uniform noise, so a model
    never sees the same dequantized image twice (validation and test data keep their fixed
    noise). With :math:`x = (\sigma(y) - \alpha) / (1 - 2\alpha)` and
    :math:`k = \lfloor L x \rfloor` the level (``L`` levels),

    .. math:: y' = \operatorname{logit}\left(\alpha + (1 - 2\alpha)\,\frac{k + u}{L}\right),
       \qquad u \sim U(0, 1).

    Cost: a few elementwise operations per value, computed in float64.

    Args:
        alpha: The logit map's margin, as in :func:`madeflow.data.load_digits`.
        levels: Number of pixel levels ``L`` (17 for the digits' ``0..16``).

    Example:
        >>> from madeflow.data import load_digits
        >>> y = load_digits("logit", seed=0).train[:5]  # (5, 64)
        >>> y2 = Dequantize(0.05)(y, torch.Generator().manual_seed(0))
        >>> level = lambda v: torch.floor(DataSpace.logit(0.05).to_data(v) * 17)
        >>> torch.equal(level(y), level(y2)), bool((y != y2).any())
        (True, True)
    """

    def __init__(self, alpha: float = 0.05, levels: int = NUM_LEVELS) -> None:
        self.alpha, self.levels = alpha, levels

    def __call__(self, y: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Redraw the noise of ``(*batch, D)`` logits; the result has ``y``'s shape and dtype.

        Args:
            y: Logit-space images.
            generator: A CPU generator the noise is drawn from (fit's, so runs stay seeded).
        """
        a, levels = self.alpha, self.levels
        x = (torch.sigmoid(y.double()) - a) / (1 - 2 * a)
        level = torch.floor(x * levels).clamp(0, levels - 1)
        u = torch.rand(y.shape, generator=generator, dtype=torch.float64).to(y.device)
        return torch.logit(a + (1 - 2 * a) * (level + u) / levels).to(y.dtype)

    def __repr__(self) -> str:
        return f"Dequantize(alpha={self.alpha}, levels={self.levels})"


@dataclass
class DataSpace:
    """Map between model space and data space, with its log-Jacobian.

    Build one with :meth:`logit` (dequantized images), :meth:`standardized` (toy and file data)
    or ``DataSpace(kind)`` (data used as they are, e.g. binary digits).

    Attributes:
        kind: ``"digits"`` (logit map), ``"digits-binary"``, ``"toy"`` or ``"file"``.
        standardizer: The standardisation of toy and file data, else ``None``.
        alpha: The logit map's margin (``"digits"``).
    """

    kind: str
    standardizer: Standardizer | None = None
    alpha: float = 0.05

    @classmethod
    def logit(cls, alpha: float = 0.05) -> DataSpace:
        r"""The logit map of dequantized images in ``[0, 1]``, as in ``"logit"`` digits.

        :math:`y = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`; see
        :func:`madeflow.data.load_digits` and :func:`madeflow.data.logit_log_jacobian`.
        """
        return cls("digits", None, alpha)

    @classmethod
    def standardized(cls, standardizer: Standardizer, kind: str = "file") -> DataSpace:
        """Standardisation with training statistics (:class:`~madeflow.data.Standardizer`).

        Args:
            standardizer: Fitted on the training rows, e.g. ``Standardizer.fit(train)``; float64
                statistics keep values near float32's limit finite.
            kind: ``"file"`` or ``"toy"``.
        """
        return cls(kind, standardizer)

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(8, 8)`` for digits, else ``None``."""
        return (8, 8) if self.kind in DIGITS else None

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Data space to model space, ``(N, D) -> (N, D)``.

        Raises:
            DataError: For pixels outside ``[0, 1]`` (logit map).
        """
        if self.kind == "digits":
            a = self.alpha
            if ((x < 0) | (x > 1)).any():
                raise DataError("digit pixels must lie in [0, 1] (dequantized intensities)")
            return torch.logit(a + (1 - 2 * a) * x)
        if self.standardizer is not None:  # in the statistics' dtype (float64 for new runs)
            return self.standardizer(x.to(self.standardizer.mean.dtype))
        return x

    def to_data(self, y: torch.Tensor) -> torch.Tensor:
        """Model space to data space, ``(N, D) -> (N, D)`` (pixels clamped to ``[0, 1]``)."""
        if self.kind == "digits":
            a = self.alpha
            return ((torch.sigmoid(y) - a) / (1 - 2 * a)).clamp(0.0, 1.0)
        if self.standardizer is not None:
            return self.standardizer.inverse(y)
        return y

    def log_jacobian(self, y: Rows) -> torch.Tensor:
        """``log |det d(model)/d(data)|`` at model-space points, ``(N, D) -> (N,)``.

        ``log p_data = log p_model + log_jacobian``. For a standardisation it is the same for
        every row, so ``y`` may also be a row source (only its length is used).
        """
        if self.kind == "digits":
            return logit_log_jacobian(y, alpha=self.alpha)
        n = len(y)  # a tensor or a row source: only the count and placement matter here
        if self.standardizer is not None:
            log_det = self.standardizer.log_abs_det_jacobian()
            return log_det.to(device=y.device, dtype=y.dtype).expand(n)
        return torch.zeros(n, dtype=y.dtype, device=y.device)

    def augmenter(self) -> Dequantize | None:
        """The augmentation ``madeflow fit`` trains with: :class:`Dequantize` for logit digits.

        ``None`` for other data, which are used as they are.
        """
        return Dequantize(self.alpha) if self.kind == "digits" else None

    def state(self) -> dict[str, Any]:
        """The standardisation statistics to save with the weights (``{}`` without)."""
        if self.standardizer is None:
            return {}
        return {"mean": self.standardizer.mean, "std": self.standardizer.std}

    @classmethod
    def from_state(cls, state: dict[str, Any], kind: str, alpha: float = 0.05) -> DataSpace:
        """Rebuild from :meth:`state` (``{}`` or ``{"mean": (D,), "std": (D,)}``)."""
        std = None
        if state:
            std = Standardizer(state["mean"].shape[0]).to(state["mean"].dtype)
            std.load_state_dict({"mean": state["mean"], "std": state["std"]})
        return cls(kind, std, alpha)
