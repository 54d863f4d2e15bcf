"""The optional dependency: import sbi, or say how to install it."""

from __future__ import annotations

__all__ = ["INSTALL_HINT", "require_sbi"]

INSTALL_HINT = 'pip install "madeflow[sbi]"'
MIN_VERSION = (0, 27)


def require_sbi() -> None:
    """Import sbi and check that it has the estimator API madeflow.sbi builds on.

    Raises:
        ImportError: If sbi is missing or older than 0.27, naming the extra that installs it.
    """
    try:
        import sbi
    except ImportError as err:
        raise ImportError(
            f"madeflow.sbi needs the optional dependency sbi (>= 0.27): {INSTALL_HINT}"
        ) from err
    version = tuple(int(p) for p in _numeric_prefix(getattr(sbi, "__version__", "0")))
    if version < MIN_VERSION:
        raise ImportError(
            f"madeflow.sbi needs sbi >= 0.27, found sbi {sbi.__version__}: {INSTALL_HINT}"
        )


def _numeric_prefix(version: str) -> list[str]:
    """``"0.27.1rc2"`` -> ``["0", "27", "1"]``."""
    parts = []
    for part in version.split(".")[:3]:
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(digits)
    return parts or ["0"]
