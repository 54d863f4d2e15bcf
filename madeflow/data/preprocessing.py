"""Map data to the space a model is trained in and back, with the log-Jacobian of the map.

:class:`DataSpace` holds the logit map of the dequantized digits and the standardisation of toy
and file data, their log-Jacobians (so likelihoods can be reported in the data's own units) and
the dequantization augmenter that redraws each training pixel's noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from madeflow.data.files import DataError, Standardizer
from madeflow.data.rows import Rows

__all__ = ["DataSpace"]

DIGITS = ("digits", "digits-binary")


@dataclass
class DataSpace:
    """Map between model space and data space.

    Attributes:
        kind: ``digits``, ``digits-binary``, ``toy`` or ``file``.
        standardizer: For standardised data, else ``None``.
        alpha: Logit constant (digits).
    """

    kind: str
    standardizer: Standardizer | None
    alpha: float

    @property
    def image_shape(self) -> tuple[int, int] | None:
        """``(8, 8)`` for digits, else ``None``."""
        return (8, 8) if self.kind in DIGITS else None

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        """Data-space ``(N, D)`` -> model space."""
        if self.kind == "digits":
            a = self.alpha
            if ((x < 0) | (x > 1)).any():
                raise DataError("digit pixels must lie in [0, 1] (dequantized intensities)")
            return torch.logit(a + (1 - 2 * a) * x)
        if self.standardizer is not None:  # in the statistics' dtype (float64 for new runs)
            return self.standardizer(x.to(self.standardizer.mean.dtype))
        return x

    def to_data(self, y: torch.Tensor) -> torch.Tensor:
        """Model-space ``(N, D)`` -> data space."""
        if self.kind == "digits":
            a = self.alpha
            return ((torch.sigmoid(y) - a) / (1 - 2 * a)).clamp(0.0, 1.0)
        if self.standardizer is not None:
            return self.standardizer.inverse(y)
        return y

    def log_jacobian(self, y: Rows) -> torch.Tensor:
        """``log |det d(model)/d(data)|`` at model-space points ``(N, D)``, shape ``(N,)``.

        ``log p_data = log p_model + log_jacobian``.
        """
        if self.kind == "digits":
            from madeflow.data.digits import logit_log_jacobian

            return logit_log_jacobian(y, alpha=self.alpha)
        n = len(y)  # a tensor or a row source: only the count and placement matter here
        if self.standardizer is not None:
            log_det = self.standardizer.log_abs_det_jacobian()
            return log_det.to(device=y.device, dtype=y.dtype).expand(n)
        return torch.zeros(n, dtype=y.dtype, device=y.device)

    def augmenter(self) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None:
        """Fresh dequantization noise for logit digits (``None`` for other data).

        Recovers each training pixel's integer level from its logit and redraws the uniform
        noise, so the model never sees the same dequantized image twice. Validation and test
        data keep their fixed noise.
        """
        if self.kind != "digits":
            return None
        a, levels = self.alpha, 17

        def redraw(y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            x = (torch.sigmoid(y.double()) - a) / (1 - 2 * a)
            level = torch.floor(x * levels).clamp(0, levels - 1)
            u = torch.rand(y.shape, generator=gen, dtype=torch.float64).to(y.device)
            return torch.logit(a + (1 - 2 * a) * (level + u) / levels).to(y.dtype)

        return redraw

    def state(self) -> dict[str, Any]:
        """Tensors to save with the weights."""
        if self.standardizer is None:
            return {}
        return {"mean": self.standardizer.mean, "std": self.standardizer.std}

    @classmethod
    def from_state(cls, cfg: dict[str, Any], state: dict[str, Any]) -> DataSpace:
        """Rebuild from a data config and :meth:`state`."""
        std = None
        if state:
            std = Standardizer(state["mean"].shape[0]).to(state["mean"].dtype)
            std.load_state_dict({"mean": state["mean"], "std": state["std"]})
        return cls(cfg["kind"], std, cfg["alpha"])
