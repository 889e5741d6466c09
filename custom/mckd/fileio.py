"""Atomic file output: a crash never leaves a truncated file under its final name, and inputs are never overwritten."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

__all__ = ["atomic_path", "write_json_atomic", "write_text_atomic", "ensure_not_input"]


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
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def ensure_not_input(target: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse to write ``target`` when it resolves to one of the ``inputs``.

    Raises:
        ValueError: naming the input that would have been overwritten.
    """
    resolved = Path(target).resolve()
    for item in inputs:
        if Path(item).resolve() == resolved:
            raise ValueError(f"refusing to overwrite input file '{item}' with an output.")
