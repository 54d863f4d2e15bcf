"""Safe checkpoints: atomic writes, ``weights_only`` loads, a format version, and a run lock.

A run folder holds ``config.json`` (what to build), ``model.pt`` (the weights as a ``state_dict``),
and while training ``train_state.pt`` (everything needed to resume). Every file is written to a
temporary file in the same folder, flushed, fsynced and moved into place with :func:`os.replace`,
so a kill mid-write leaves the previous complete file; files get the permissions the umask
allows (``0o666 & ~umask``), like any other file the user creates. A write that fails (a full
disk, a read-only folder) raises a :class:`CheckpointError` naming the file and the cause, and
leaves no temporary file. Tensors are loaded with ``torch.load(..., weights_only=True)``: a
checkpoint can never run code. JSON is strict (no bare ``NaN``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from madeflow.data.files import path_problem

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "RunLock",
    "atomic_write_bytes",
    "finite_or_none",
    "load_json",
    "load_tensors",
    "save_json",
    "save_tensors",
    "write_error",
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


def _umask() -> int:
    mask = os.umask(0o22)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def write_error(path: str | os.PathLike, err: OSError) -> CheckpointError:
    """A one-line :class:`CheckpointError` for a failed write, saying what to do.

    Args:
        path: The file that could not be written.
        err: The ``OSError``.

    Returns:
        The error to raise (``from err``).
    """
    advice = {
        errno.ENOSPC: "the disk is full: free some space and try again",
        errno.EDQUOT: "the disk quota is exceeded: free some space and try again",
        errno.EROFS: "the file system is read-only: write somewhere else",
        errno.EACCES: "permission denied: make the folder writable or write somewhere else",
        errno.EPERM: "permission denied: make the folder writable or write somewhere else",
    }.get(err.errno or 0, err.strerror or str(err) or type(err).__name__)
    return CheckpointError(f"cannot write {path}: {advice}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + ``os.replace``).

    The file gets mode ``0o666 & ~umask``. On failure the previous file (if any) is unchanged
    and no temporary file is left.

    Args:
        path: Destination file.
        data: The full contents.

    Raises:
        CheckpointError: If the file cannot be written (full disk, read-only folder, ...).
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp makes it 0o600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
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
    problem = path_problem(path, "checkpoint")
    if problem is not None:
        raise CheckpointError(problem)
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
    """Write ``obj`` as indented, strict JSON atomically.

    Args:
        obj: JSON-serialisable object without NaN or infinite floats (write ``None`` for a
            number that is not defined; see :func:`finite_or_none`).
        path: Destination file.

    Raises:
        ValueError: If ``obj`` holds a NaN or infinite float (strict JSON has no such value).
        CheckpointError: If the file cannot be written.
    """
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def finite_or_none(obj: Any) -> Any:
    """A copy of nested dicts and lists with every NaN or infinite float replaced by ``None``.

    Example:
        >>> finite_or_none({"mean": 1.5, "stderr": float("nan"), "all": [float("inf"), 2.0]})
        {'mean': 1.5, 'stderr': None, 'all': [None, 2.0]}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def load_json(path: str | os.PathLike) -> Any:
    """Read a strict JSON file, with a :class:`CheckpointError` if it is missing or corrupt.

    Args:
        path: The file.

    Returns:
        The parsed object.

    Raises:
        CheckpointError: If the file is missing, unreadable, not UTF-8, truncated, or holds a
            bare ``NaN``/``Infinity``.
    """
    path = Path(path)
    problem = path_problem(path, "file")
    if problem is not None:
        raise CheckpointError(problem)
    try:
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_reject_constant)
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot read {path}: {first} (truncated or edited by hand?); restore it"
        ) from err


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
        folder = self.path.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise CheckpointError(f"{folder} is a symbolic link loop") from err
            if isinstance(err, (FileExistsError, NotADirectoryError)):
                raise CheckpointError(
                    f"cannot create run folder {folder}: it, or a folder above it, is a file"
                ) from err
            raise CheckpointError(f"cannot create run folder {folder}: {err.strerror}") from err
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
                try:
                    os.unlink(self.path)  # stale: its process is gone
                except FileNotFoundError:
                    pass
                except OSError as err:
                    raise write_error(self.path, err) from err
                continue
            except OSError as err:
                raise write_error(self.path, err) from err
            self.held = True
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(str(os.getpid()))
            except OSError as err:
                self.release()
                raise write_error(self.path, err) from err
            return
        raise CheckpointError(f"could not lock {self.path.parent}")

    def release(self) -> None:
        """Drop the lock (if held).

        A lock file that cannot be removed (the folder became read-only) is left: once this
        process ends it is stale and the next run takes it over. Never raises, so an error
        that ended the run is the one reported.
        """
        if self.held:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
