"""Atomic file output: a crash never leaves a truncated file under its final name, and inputs are never overwritten."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = [
    "InputOverwriteError",
    "DiskFullError",
    "atomic_path",
    "write_json_atomic",
    "write_text_atomic",
    "ensure_not_input",
    "enclosing_folder",
    "check_writable_folder",
]

#: Free space (bytes) under which a writer's failure without an errno (torch's C++ stream: "basic_ios::clear:
#: iostream error", "PytorchStreamWriter failed writing file") is taken for a full disk.
NEARLY_FULL_BYTES = 1 << 20


class DiskFullError(OSError):
    """A write failed because the disk (or the user's quota) is full; the message names the file.

    An ``OSError`` with ``errno.ENOSPC``, so callers that handle write failures handle it too.
    """

    def __init__(self, target: str | os.PathLike) -> None:
        message = f"disk full (No space left on device) while writing '{target}'; free space or write elsewhere."
        super().__init__(errno.ENOSPC, message)
        self.filename = str(target)

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple:
        return type(self), (self.filename,)


def _is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether ``error`` (raised while writing into ``folder``) is a full disk or quota."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(error, RuntimeError):  # torch.save reports a failed C++ stream without an errno
        try:
            info = os.statvfs(folder)
        except OSError:
            return False
        return info.f_bavail * info.f_frsize < NEARLY_FULL_BYTES
    return False


def _default_file_mode() -> int:
    """The permissions an ordinary ``open(..., "w")`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


@contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``, on error delete it.

    The temporary file keeps ``target``'s suffixes (or ``suffix``) so that writers that pick a format from the file
    name (nibabel, ``torch.save``, matplotlib) behave as for the final name.

    Raises:
        PermissionError: when the target's folder cannot be created or written, naming the folder.
        DiskFullError: when the write fails because the disk is full, naming ``target``.
    """
    target = Path(target)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create output folder '{folder}': {err.strerror or err}") from err
    if not os.access(folder, os.W_OK):
        raise PermissionError(f"output folder '{folder}' is not writable.")
    suffix = "".join(target.suffixes) if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".part{suffix}", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates owner-only files; outputs get the usual permissions
        os.replace(tmp, target)
    except BaseException as err:
        full = _is_disk_full(err, folder)  # judged before the partial file is removed and frees its space
        tmp.unlink(missing_ok=True)
        if full and not isinstance(err, DiskFullError):
            raise DiskFullError(target) from err
        raise


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


def write_json_atomic(target: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``target`` atomically and return the path.

    Text is written as UTF-8; a payload holding a name that is not (a file or folder name in another encoding, which
    Python holds with surrogate escapes) is written with ASCII escapes instead (``"caf\\udce9"``), which JSON readers
    read back to the same string, instead of failing after the work it records was done.
    """
    text = json.dumps(payload, indent=4, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(payload, indent=4, ensure_ascii=True)
    return write_text_atomic(target, text + "\n")


class InputOverwriteError(ValueError):
    """An output would be written over one of the run's inputs; the message names it."""


def ensure_not_input(target: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse to write ``target`` when it resolves to one of the ``inputs``: the one rule of every writer.

    Raises:
        InputOverwriteError: naming the input that would have been overwritten.
    """
    resolved = Path(target).resolve()
    for item in inputs:
        if Path(item).resolve() == resolved:
            raise InputOverwriteError(f"refusing to overwrite input file '{item}' with an output.")


def enclosing_folder(path: str | os.PathLike, folders: Iterable[str | os.PathLike]) -> Path | None:
    """The first of ``folders`` that ``path`` is, or lies inside, once both are resolved (symbolic links followed);
    None when there is none. The one test behind every "outputs never inside the inputs" rule."""
    resolved = Path(path).resolve()
    for folder in folders:
        real = Path(folder).resolve()
        if resolved == real or real in resolved.parents:
            return Path(folder)
    return None


def check_writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create ``folder`` if needed and prove that a file can be created in it (a probe file, removed at once).

    For writers that write later (per case, per epoch): an unusable folder fails once, before any work. The probe,
    unlike ``os.access``, also catches a read-only file system for root.

    Args:
        folder: the folder.
        what: how messages name it.

    Raises:
        PermissionError: one line naming the folder: it is a file, lies below a file, cannot be created, or cannot be
            written (the system's reason: read-only file system, permission denied, disk full).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PermissionError(f"{what} '{folder}' is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create {what} '{folder}': {err.strerror or err}.") from None
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".write_probe."):
            pass
    except OSError as err:
        raise PermissionError(f"{what} '{folder}' is not writable: {err.strerror or err}.") from None
    return folder
