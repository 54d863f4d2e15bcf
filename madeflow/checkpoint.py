"""Safe checkpoints: atomic writes, ``weights_only`` loads, a format version, and a run lock.

A run folder holds ``config.json`` (what to build), ``model.pt`` (the weights as a ``state_dict``),
and while training ``train_state.pt`` (everything needed to resume). Every file is written to a
temporary file in the same folder, flushed, fsynced and moved into place with :func:`os.replace`,
so a kill mid-write leaves the previous complete file. Tensors are loaded with
``torch.load(..., weights_only=True)``: a checkpoint can never run code.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "RunLock",
    "atomic_write_bytes",
    "load_json",
    "load_tensors",
    "save_json",
    "save_tensors",
]

FORMAT_VERSION = 1
"""Version of the run-folder format; bumped on incompatible changes."""


class CheckpointError(RuntimeError):
    """A checkpoint or run folder is missing, corrupt, locked, or incompatible."""


def _fsync_dir(folder: Path) -> None:
    # Makes the rename durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    Args:
        path: Destination file.
        data: The full contents.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def save_tensors(obj: dict[str, Any], path: str | os.PathLike) -> None:
    """``torch.save`` a dict of tensors/numbers/strings atomically, tagged with the format version.

    Args:
        obj: Contents (must be loadable with ``weights_only=True``: no custom classes).
        path: Destination file.
    """
    import io

    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **obj}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_tensors(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a file written by :func:`save_tensors`, never unpickling code.

    Args:
        path: The file.
        map_location: Where to put the tensors.

    Returns:
        The saved dict.

    Raises:
        CheckpointError: If the file is missing, unreadable, holds anything but plain data, or has
            another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot load checkpoint {path} safely: {first}") from err
    if not isinstance(obj, dict) or "format_version" not in obj:
        raise CheckpointError(f"{path} is not a madeflow checkpoint")
    if obj["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {obj['format_version']}, this madeflow reads "
            f"version {FORMAT_VERSION}"
        )
    return obj


def save_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically.

    Args:
        obj: JSON-serialisable object.
        path: Destination file.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n"
    atomic_write_bytes(path, text.encode())


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, with a :class:`CheckpointError` if it is missing or corrupt.

    Args:
        path: The file.

    Returns:
        The parsed object.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


class RunLock:
    """An exclusive lock on a run folder: a ``.lock`` file created with ``O_CREAT | O_EXCL``.

    The file holds the owner's pid. A lock whose process no longer exists (on this machine) is
    stale and is taken over. Use as a context manager.

    Args:
        folder: The run folder (created if needed).

    Raises:
        CheckpointError: On entering, if another live process holds the lock.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / ".lock"
        self.held = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`CheckpointError`."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or "0")
                except (OSError, ValueError):
                    pid = 0
                if pid != os.getpid() and _pid_alive(pid):
                    raise CheckpointError(
                        f"{self.path.parent} is in use by another madeflow process (pid {pid}); "
                        f"remove {self.path} if that is wrong"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # stale: its process is gone
                continue
            except OSError as err:
                if err.errno in (errno.EACCES, errno.EROFS):
                    raise CheckpointError(f"cannot write to {self.path.parent}: {err}") from err
                raise
            with os.fdopen(fd, "w") as f:
                f.write(str(os.getpid()))
            self.held = True
            return
        raise CheckpointError(f"could not lock {self.path.parent}")

    def release(self) -> None:
        """Drop the lock (if held)."""
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
