"""Safe checkpoint loading and atomic checkpoint saving for training resume, evaluation and inference.

Loading always goes through ``torch.load(path, map_location, weights_only=True)``: a file can hold tensors, numbers,
strings and containers of them, never an object whose unpickling runs code. Every foreseeable failure becomes a
:class:`CheckpointError` whose message names the file:

- a missing or unreadable file, an empty one, a truncated or corrupted one, a text file or other non-checkpoint
  (each named as such);
- a pickled payload (a non-tensor object) that ``weights_only`` refused, naming the refused global;
- a checkpoint from another configuration: missing entries, missing / unexpected keys and shape mismatches of a
  network's state dict, or optimiser parameter groups of another size, naming the first offending keys and shapes.

Saving: MONAI's ``CheckpointSaver`` (1.6) writes through ignite's ``DiskSaver`` with ``atomic=False``, and ignite's
``Checkpoint`` removes the previous file *before* writing the next one; with ``n_saved=1`` a crash while saving leaves
no usable checkpoint at all. :class:`AtomicCheckpointSaver` is a drop-in ``CheckpointSaver`` whose files are written
to a temporary name beside the target and renamed, and whose superseded files are removed only after the new one is
in place. A process killed while writing (``kill -9``, a node failure) leaves only the hidden temporary file, which
the next :class:`AtomicCheckpointSaver` on the folder removes when it is attached.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pickle
import re
import stat
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.config import PathLike
from monai.handlers import CheckpointSaver
from monai.utils import IgniteInfo, min_version, optional_import
from torch import nn

from mckd.fileio import atomic_path

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Checkpoint")
DiskSaver, _ = optional_import("ignite.handlers", IgniteInfo.OPT_IMPORT_VERSION, min_version, "DiskSaver")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "check_compatible",
    "non_finite_entries",
    "load_objects",
    "save_checkpoint",
    "ensure_writable_folder",
    "FolderInUseError",
    "lock_folder",
    "remove_partial_files",
    "SafeCheckpointLoader",
    "AtomicDiskSaver",
    "AtomicCheckpointSaver",
    "MODEL_FILENAME",
    "IMPORTANCE_FILENAME",
    "DeployableModelSaver",
    "load_deployable",
]

logger = logging.getLogger(__name__)

#: How many mismatching keys a message lists before "and n more".
_SHOWN = 5
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
#: First bytes of PyTorch's zip format and of its legacy (pickle protocol 2) format.
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80\x02"
#: Temporary files of :func:`mckd.fileio.atomic_path`: ``.<name>.<random>.part<suffixes of name>``.
_PARTIAL = re.compile(r"^\..+\.[^.]+\.part(\.\w+)*$")
#: The deployable network in a bundle's ``models/`` folder: its plain state dict, as MONAI's ``ckpt_export``, the model
#: zoo and MONAI Label read it.
MODEL_FILENAME = "model.pt"
#: The learned importance that belongs to :data:`MODEL_FILENAME`: the state dict of ``ModalityImportance`` (``w``).
IMPORTANCE_FILENAME = "modality_weights.pt"
_CAUSE = (
    "the checkpoint was probably saved with another configuration (a different backbone, feature size, number of "
    "modalities or regions, or another optimiser)"
)


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and what is wrong.

    Attributes:
        path: the checkpoint file.
    """

    def __init__(self, path: PathLike, message: str) -> None:
        self.path = str(path)
        super().__init__(f"checkpoint '{self.path}' {message}")


def _unreadable(path: Path) -> str:
    """Why ``torch.load`` could not read ``path``, from its size and first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}."
    if size == 0:
        return "is empty (0 bytes), e.g. left by a save that was interrupted."
    if head.startswith(_ZIP_MAGIC):
        return f"is truncated or corrupted: an incomplete or damaged PyTorch zip archive ({size} bytes)."
    if head.startswith(_PICKLE_MAGIC):
        return f"is truncated or corrupted: an incomplete or damaged PyTorch file of the legacy format ({size} bytes)."
    text = head.decode("utf-8", errors="replace")
    if all(char.isprintable() or char in "\t\n\r" for char in text):
        return f"is a text file, not a PyTorch checkpoint (it starts with {text[:32]!r})."
    return "is not a PyTorch checkpoint (neither a zip archive nor a pickle)."


def load_checkpoint(path: PathLike, map_location: Any = None) -> dict[str, Any]:
    """Read a checkpoint with ``torch.load(..., weights_only=True)`` and return its top-level dictionary.

    Args:
        path: the checkpoint file.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"`` or the configured device).

    Raises:
        CheckpointError: when the file does not exist, is empty, truncated or corrupted, is a text file or otherwise
            not a PyTorch checkpoint (each named as the cause), holds a pickled object that ``weights_only`` refuses,
            or is not a dictionary.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "does not exist." if not path.exists() else "is not a file.")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _GLOBAL.search(str(err))
        if refused is None:
            raise CheckpointError(path, _unreadable(path)) from None
        raise CheckpointError(
            path,
            f"was refused: torch.load(weights_only=True) refused a non-tensor object ({refused.group(1)}). "
            "Unpickling it could run code from the file; only state dicts of tensors and plain values are loaded. "
            "If you trust the file, re-save its state dicts with torch.save(model.state_dict(), ...).",
        ) from None  # PyTorch's own message advises weights_only=False, which would run the file's code
    except Exception:  # noqa: BLE001 - any failure to decode the file (EOFError, KeyError, IndexError, ...)
        raise CheckpointError(path, _unreadable(path)) from None  # the cause is named; PyTorch's error adds nothing
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(path, f"holds a {type(checkpoint).__name__}, not a dictionary of state dicts.")
    return dict(checkpoint)


def _listed(items: list[str]) -> str:
    """``a, b, c`` with at most ``_SHOWN`` items and a count of the rest."""
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _shape(value: Any) -> list[int] | None:
    return list(value.shape) if isinstance(value, torch.Tensor) else None


def _module_mismatch(module: nn.Module, state: Mapping[str, Any], strict: bool) -> list[str]:
    """Descriptions of what keeps ``state`` from loading into ``module`` (empty when it fits)."""
    if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        module = module.module
    own = module.state_dict()
    problems = []
    shapes = [
        f"{key} (checkpoint {_shape(state[key])}, network {_shape(value)})"
        for key, value in own.items()
        if key in state and _shape(value) != _shape(state[key])
    ]
    if shapes:
        problems.append(f"shape mismatch at {_listed(shapes)}")
    if strict:
        missing = [key for key in own if key not in state]
        unexpected = [key for key in state if key not in own]
        if missing:
            problems.append(f"missing keys {_listed(missing)}")
        if unexpected:
            problems.append(f"unexpected keys {_listed(unexpected)}")
    return problems


def _optimizer_mismatch(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> list[str]:
    """Descriptions of what keeps ``state`` from loading into ``optimizer`` (empty when it fits)."""
    groups = state.get("param_groups") if isinstance(state, Mapping) else None
    if not isinstance(groups, (list, tuple)):
        return ["it is not an optimiser state dict (no 'param_groups')"]
    own = [len(group["params"]) for group in optimizer.param_groups]
    saved = [len(group.get("params", ())) for group in groups]
    if own != saved:
        return [f"parameter groups of sizes {saved}, the optimiser has {own}"]
    return []


def check_compatible(
    load_dict: Mapping[str, Any], checkpoint: Mapping[str, Any], path: PathLike, strict: bool = True
) -> None:
    """Check that ``checkpoint`` can be loaded into every object of ``load_dict`` before anything is changed.

    Networks (``nn.Module``) are compared key by key and shape by shape; optimisers by their parameter groups;
    other objects only for presence (their own ``load_state_dict`` decides).

    Args:
        load_dict: name -> object with ``load_state_dict`` (as the ``load_dict`` of MONAI's ``CheckpointLoader``).
        checkpoint: the loaded checkpoint dictionary.
        path: the checkpoint file, for messages.
        strict: also refuse missing and unexpected keys of a network (shape mismatches are always refused).

    Raises:
        CheckpointError: naming the first object that does not fit, the first offending keys and shapes, and the
            likely cause.
    """
    absent = [name for name in load_dict if name not in checkpoint]
    if absent:
        held = ", ".join(sorted(map(str, checkpoint))) or "nothing"
        raise CheckpointError(
            path,
            f"has no entry {_listed(absent)} (it holds {held}): it was written for another use (e.g. network weights "
            "only, where resuming needs a training checkpoint with optimiser and trainer state) or with another "
            "configuration.",
        )
    for name, obj in load_dict.items():
        state = checkpoint[name]
        if isinstance(obj, nn.Module):
            if not isinstance(state, Mapping):
                raise CheckpointError(path, f"entry '{name}' is a {type(state).__name__}, not a state dict.")
            problems = _module_mismatch(obj, state, strict)
        elif isinstance(obj, torch.optim.Optimizer):
            problems = _optimizer_mismatch(obj, state)
        else:
            problems = []
        if problems:
            raise CheckpointError(path, f"does not fit '{name}': {'; '.join(problems)}; {_CAUSE}.")


def non_finite_entries(state: Any, prefix: str = "") -> list[str]:
    """Names (dotted paths) of the floating-point tensors in a nested checkpoint that hold NaN or infinity."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            bad = int((~torch.isfinite(state)).sum())
            return [f"{prefix or 'tensor'} ({bad} of {state.numel()} values)"] if bad else []
        return []
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return []
    found: list[str] = []
    for key, value in items:
        found += non_finite_entries(value, f"{prefix}.{key}" if prefix else str(key))
    return found


def load_objects(
    load_dict: Mapping[str, Any], path: PathLike, map_location: Any = None, strict: bool = True
) -> dict[str, Any]:
    """Load the checkpoint ``path`` into the objects of ``load_dict`` (networks, optimisers, schedulers, engines).

    For use in bundle configs (evaluation, inference), e.g.
    ``"$mckd.checkpoints.load_objects({'model': @network}, @ckpt_path, map_location=@device)"``. A ``load_dict`` with
    one entry also accepts a checkpoint that *is* that entry's state dict (as MONAI's ``CheckpointLoader`` does).

    Args:
        load_dict: name -> object with ``load_state_dict``.
        path: the checkpoint file.
        map_location: passed to ``torch.load``.
        strict: see :func:`check_compatible`.

    Returns:
        the checkpoint dictionary that was loaded.

    Raises:
        CheckpointError: see :func:`load_checkpoint` and :func:`check_compatible`; also when a network's entry holds
            NaN or infinite values (naming the first tensors), or an object's own ``load_state_dict`` rejects its
            entry.
    """
    if not load_dict:
        raise ValueError("load_dict must name at least one object to load.")
    return _load_read(load_dict, load_checkpoint(path, map_location), path, strict)


def _load_read(
    load_dict: Mapping[str, Any], checkpoint: dict[str, Any], path: PathLike, strict: bool
) -> dict[str, Any]:
    """:func:`load_objects` on a checkpoint already read from ``path`` (named in messages)."""
    first, *others = list(load_dict)
    if not others and first not in checkpoint:
        checkpoint = {first: checkpoint}
    check_compatible(load_dict, checkpoint, path, strict)
    modules = [name for name, obj in load_dict.items() if isinstance(obj, nn.Module)]
    bad = [entry for name in modules for entry in non_finite_entries(checkpoint[name], name)]
    if bad:
        more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
        raise CheckpointError(
            path,
            f"holds NaN or infinite values in {', '.join(bad[:_SHOWN])}{more}: the run that wrote it diverged. Use an "
            "earlier checkpoint, or retrain with a lower learning rate or gradient clipping (max_grad_norm).",
        )
    try:
        Checkpoint.load_objects(to_load=dict(load_dict), checkpoint=checkpoint, strict=strict)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(path, f"could not be loaded: {err}; {_CAUSE}.") from err
    return checkpoint


def load_deployable(
    network: nn.Module,
    path: PathLike,
    importance: nn.Module | None = None,
    importance_path: PathLike | None = None,
    map_location: Any = None,
) -> dict[str, Any]:
    """Load a deployable network (and its learned importance) as :class:`DeployableModelSaver` writes them.

    ``path`` may be the network's plain state dict (``models/model.pt``) or a checkpoint with a ``model`` entry (a
    training checkpoint such as ``model_final.pt``, or ``model.pt`` of earlier releases). The importance comes from the
    checkpoint's ``modality_weights`` entry when it has one, else from ``importance_path`` (default:
    :data:`IMPORTANCE_FILENAME` beside ``path``).

    Args:
        network: the network to load into.
        path: the network's checkpoint.
        importance: the ``ModalityImportance`` to load into; None loads the network only.
        importance_path: the importance file when ``path`` does not hold it.
        map_location: passed to ``torch.load``.

    Returns:
        ``{"model": ..., "modality_weights": ...}``: the state dicts that were loaded (the second only with
        ``importance``).

    Raises:
        CheckpointError: see :func:`load_objects`; also when ``importance`` is given and neither ``path`` holds it nor
            the importance file exists, naming both.
    """
    checkpoint = load_checkpoint(path, map_location)
    if importance is not None and "modality_weights" in checkpoint:  # one read of a training checkpoint
        both = _load_read({"model": network, "modality_weights": importance}, checkpoint, path, strict=True)
        return {"model": both["model"], "modality_weights": both["modality_weights"]}
    loaded = {"model": _load_read({"model": network}, checkpoint, path, strict=True)["model"]}
    if importance is None:
        return loaded
    importance_path = Path(importance_path or Path(path).parent / IMPORTANCE_FILENAME)
    if not importance_path.exists():
        raise CheckpointError(
            importance_path,
            f"does not exist, and '{path}' holds only the network: the learned importance is written beside "
            f"{MODEL_FILENAME} by training; copy it along with the weights.",
        )
    loaded["modality_weights"] = load_objects(
        {"modality_weights": importance}, importance_path, map_location=map_location
    )["modality_weights"]
    return loaded


def save_checkpoint(save_dict: Mapping[str, Any], path: PathLike) -> Path:
    """Write the state dicts of ``save_dict`` to ``path`` atomically (temporary name, then rename).

    Distributed and data-parallel wrappers are unwrapped, as ignite's ``Checkpoint`` does, so the file loads with
    :func:`load_objects` / :class:`SafeCheckpointLoader` / MONAI's ``CheckpointLoader`` into the same ``load_dict``.

    Args:
        save_dict: name -> object with ``state_dict``.
        path: the checkpoint file to write.

    Raises:
        PermissionError: when the folder cannot be created or written.
    """
    state = {}
    for name, obj in save_dict.items():
        if isinstance(obj, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            obj = obj.module
        state[name] = obj.state_dict()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        _readable_by_all(tmp)
    return Path(path)


def ensure_writable_folder(folder: PathLike) -> Path:
    """Create ``folder`` if needed and check that files can be written into it; return it.

    For handlers that write later (on a signal, at the end of an epoch): a bad output folder fails at start.

    Raises:
        PermissionError: naming the folder, when it cannot be created (e.g. a path below a regular file) or written.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PermissionError(f"cannot create checkpoint folder '{folder}': {err.strerror or err}") from err
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"checkpoint folder '{folder}' is not writable.")
    return folder


#: Folder (resolved) -> open descriptor of the folder whose lock this process holds.
_HELD_LOCKS: dict[Path, int] = {}


class FolderInUseError(RuntimeError):
    """Another running process holds the lock of a checkpoint folder; the message names its pid and start time."""


def _lock_holder(folder: Path) -> str:
    """``pid N (started <time>): <command>`` of the process holding the ``flock`` of ``folder``, from ``/proc/locks``
    (Linux); ``another process`` where that cannot be told."""
    try:
        info = os.stat(folder)
        inode = f":{info.st_ino}"
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            pids = [int(line.split()[4]) for line in locks if "FLOCK" in line and line.split()[5].endswith(inode)]
        pid = pids[0]
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            ticks = int(handle.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat", encoding="ascii") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        started = datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK")).astimezone()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError, ValueError, StopIteration):
        return "another process"
    return f"pid {pid}, started {started.isoformat(timespec='seconds')}: {' '.join(command.split())[:200]}"


def lock_folder(folder: PathLike) -> Path:
    """Take the exclusive lock of a checkpoint folder for the rest of this process; return the folder.

    ``fcntl.flock`` on the folder itself: no lock file is left behind, and the kernel releases the lock when the
    process ends however it ends (``kill -9`` included), so nothing stale ever blocks a later run. Taking a lock this
    process already holds does nothing (several savers share one folder).

    Raises:
        FolderInUseError: when another process holds it, naming that process's pid and start time.
        PermissionError: when the folder cannot be created or written.
    """
    folder = ensure_writable_folder(folder)
    real = folder.resolve()
    if real in _HELD_LOCKS:
        return folder
    fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderInUseError(
            f"checkpoint folder '{folder}' is in use by another training ({_lock_holder(real)}); wait for it to "
            "end, or give this run its own bundle folder (--bundle_root) or checkpoint folder."
        ) from None
    _HELD_LOCKS[real] = fd
    return folder


def remove_partial_files(folder: PathLike) -> list[Path]:
    """Delete the temporary files that writes interrupted by a killed process left in ``folder``; return them.

    Only names of the :func:`mckd.fileio.atomic_path` pattern (hidden, ``.part`` before the suffixes) are touched.
    """
    folder = Path(folder)
    removed = [p for p in folder.iterdir() if p.is_file() and _PARTIAL.match(p.name)] if folder.is_dir() else []
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def _readable_by_all(path: Path) -> None:
    """Add group and other read permission (a temporary file is created owner-only), as ignite's saver does."""
    os.chmod(path, os.stat(path).st_mode | stat.S_IRGRP | stat.S_IROTH)


class SafeCheckpointLoader:
    """Ignite handler that loads a checkpoint at ``Events.STARTED``, like MONAI's ``CheckpointLoader``, with checks.

    Differences from ``monai.handlers.CheckpointLoader`` (which also loads with ``weights_only=True``): the checkpoint
    is checked against every object before any is changed, and failures raise :class:`CheckpointError` naming the
    file, the object, the first mismatching keys and shapes and the likely cause, instead of a bare ``RuntimeError``
    / ``KeyError`` / ``UnpicklingError``. MONAI's ``strict_shape=False`` (partial transfer) is not offered.

    As in MONAI: the engine's ``max_epochs`` is kept (a checkpoint whose epoch exceeds it is an error), and a
    ``load_dict`` with one entry accepts a checkpoint that is that entry's state dict.

    Args:
        load_path: the checkpoint file.
        load_dict: name -> object with ``load_state_dict`` (network, optimisers, LR scheduler, modality importance,
            the trainer itself for resume).
        name: logger name; ``None`` (default) uses ``engine.logger``.
        map_location: passed to ``torch.load``.
        strict: see :func:`check_compatible`. Default True.

    Raises:
        ValueError: when ``load_path`` is empty or ``load_dict`` is empty.
    """

    def __init__(
        self,
        load_path: PathLike,
        load_dict: Mapping[str, Any],
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        if not load_path:
            raise ValueError("load_path must name the checkpoint file to load.")
        if not load_dict:
            raise ValueError("load_dict must name at least one object to load.")
        self.load_path = Path(load_path)
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.strict = strict
        self.logger = logging.getLogger(name)
        self._name = name

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the engine (trainer, evaluator) whose run starts by loading the checkpoint.
        """
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        """
        Args:
            engine: the engine.

        Raises:
            CheckpointError: see :func:`load_objects`; also when the checkpoint's epoch exceeds the engine's
                ``max_epochs``.
        """
        prior_max_epochs = engine.state.max_epochs
        load_objects(self.load_dict, self.load_path, self.map_location, self.strict)
        if prior_max_epochs is not None and engine.state.epoch > prior_max_epochs:
            raise CheckpointError(
                self.load_path,
                f"is at epoch {engine.state.epoch}, beyond the engine's max_epochs {prior_max_epochs}; "
                "raise max_epochs to train further.",
            )
        engine.state.max_epochs = prior_max_epochs
        self.logger.info("Restored all variables from %s (iteration %d)", self.load_path, engine.state.iteration)


class AtomicDiskSaver(DiskSaver):
    """Ignite ``DiskSaver`` that writes via :func:`mckd.fileio.atomic_path` and removes superseded files afterwards.

    Ignite's ``Checkpoint`` calls ``remove(old)`` *before* ``__call__(new)``; here ``remove`` only schedules the
    removal, which happens once the next file has been written and renamed into place, so a crash while saving leaves
    the previous checkpoint intact and no partial file under a final name. Files get the permissions of an ordinary
    file readable by group and others, as ignite's own atomic saver makes them.

    Args:
        dirname: folder of the checkpoints (created when absent).
        filename: a fixed file name that replaces ignite's generated one (as MONAI's ``final_filename`` /
            ``key_metric_filename``); None keeps ignite's names.
    """

    def __init__(self, dirname: PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, require_empty=False)
        self.filename = filename
        self._pending: list[str] = []

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        """Write ``checkpoint`` under ``filename`` (or the fixed name), then remove the superseded files."""
        filename = self.filename or filename
        super().__call__(checkpoint, filename, metadata)
        pending, self._pending = self._pending, []
        for old in pending:
            if old != filename:
                (self.dirname / old).unlink(missing_ok=True)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        with atomic_path(path) as tmp:
            func(checkpoint, tmp, **self.kwargs)
            _readable_by_all(tmp)

    def remove(self, filename: str) -> None:
        """Schedule ``filename`` (or the fixed name) for removal after the next successful write."""
        self._pending.append(self.filename or filename)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (same arguments and behaviour) with atomic writes that never lose the last file.

    Every checkpoint (interval, key metric, final) goes through :class:`AtomicDiskSaver`: written to a temporary name
    and renamed, the previous file removed only after that. Use it wherever a bundle uses ``CheckpointSaver``. When
    attached, it takes the folder's lock (:func:`lock_folder`: a second training writing into the same folder is
    refused at start, naming the first), then removes temporary files that a killed earlier run left in ``save_dir``
    (see :func:`remove_partial_files`), with a log line naming them.

    Args:
        save_dir: see ``monai.handlers.CheckpointSaver``.
        save_dict: see ``monai.handlers.CheckpointSaver``.
        kwargs: the other arguments of ``monai.handlers.CheckpointSaver``.

    Raises:
        PermissionError: when ``save_dir`` cannot be created or written (see :func:`ensure_writable_folder`).
    """

    def __init__(self, save_dir: str, save_dict: dict, **kwargs: Any) -> None:
        ensure_writable_folder(save_dir)
        super().__init__(save_dir, save_dict, **kwargs)
        for checkpoint in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if checkpoint is not None:
                checkpoint.save_handler = AtomicDiskSaver(save_dir, getattr(checkpoint.save_handler, "filename", None))

    def attach(self, engine: Engine) -> None:
        """As ``CheckpointSaver.attach``, except that nothing is saved when the run ends in an exception.

        MONAI saves the final checkpoint on ``EXCEPTION_RAISED`` too: the weights of a diverged or half-updated step
        under the name of a finished run. The last interval checkpoint stays the resume point instead.

        Args:
            engine: the engine whose events trigger the saves.

        Raises:
            FolderInUseError: when another process holds ``save_dir`` (see :func:`lock_folder`).
        """
        lock_folder(self.save_dir)  # before removing partial files: they may be another live run's save in progress
        if self._name is None:
            self.logger = engine.logger
        if self._final_checkpoint is not None:
            engine.add_event_handler(Events.COMPLETED, self.completed)
        if self._key_metric_checkpoint is not None:
            engine.add_event_handler(Events.EPOCH_COMPLETED, self.metrics_completed)
        if self._interval_checkpoint is not None:
            every = Events.EPOCH_COMPLETED if self.epoch_level else Events.ITERATION_COMPLETED
            engine.add_event_handler(every(every=self.save_interval), self.interval_completed)
        for path in remove_partial_files(self.save_dir):
            self.logger.warning("Removed '%s', a partial checkpoint left by an interrupted save.", path)


class DeployableModelSaver:
    """Write the deployable files of a bundle: the network's state dict and the learned importance beside it.

    ``models/model.pt`` holds only the network's state dict (no optimiser, schedule or trainer: resume state lives in
    the training checkpoints), so MONAI's ``ckpt_export`` without ``--key_in_ckpt``, the model zoo and MONAI Label load
    it as it is; ``models/modality_weights.pt`` holds the ``ModalityImportance`` state dict of the same moment. Both are
    written atomically by :class:`AtomicCheckpointSaver`:

    - with a ``validator``, whenever its key metric improves (the best-validation network);
    - when training completes, if no validation wrote them during this run (no validation list, as in the paper
      protocol, or no validation reached): the final network;
    - never after an exception, so a failed run leaves no file that looks like a result.

    Args:
        save_dir: the bundle's ``models`` folder.
        network: the network (data-parallel wrappers are unwrapped).
        importance: the learned importance, or None to write the network only.
        validator: the validation evaluator, or None to write the final network only.
        model_filename: default :data:`MODEL_FILENAME`.
        importance_filename: default :data:`IMPORTANCE_FILENAME`.

    Raises:
        PermissionError: when ``save_dir`` cannot be created or written.
    """

    def __init__(
        self,
        save_dir: PathLike,
        network: nn.Module,
        importance: nn.Module | None = None,
        validator: Engine | None = None,
        model_filename: str = MODEL_FILENAME,
        importance_filename: str = IMPORTANCE_FILENAME,
    ) -> None:
        files = {model_filename: {"model": network}}
        if importance is not None:
            files[importance_filename] = {"modality_weights": importance}
        self.validator = validator
        self._best = (
            [
                AtomicCheckpointSaver(str(save_dir), objects, save_key_metric=True, key_metric_filename=filename)
                for filename, objects in files.items()
            ]
            if validator is not None
            else []
        )
        self._final = [
            AtomicCheckpointSaver(str(save_dir), objects, save_final=True, final_filename=filename)
            for filename, objects in files.items()
        ]

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer (the validator was given at construction).
        """
        for saver in self._best:
            saver.attach(self.validator)
        for saver in self._final:
            saver.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _completed(self, engine: Engine) -> None:
        if any(saver._key_metric_checkpoint.last_checkpoint is not None for saver in self._best):
            return
        for saver in self._final:
            saver.completed(engine)
