"""Stop training cleanly on SIGINT / SIGTERM: finish the iteration, save a resumable checkpoint, end the run.

A cluster scheduler's ``SIGTERM`` (pre-emption, time limit) or a user's Ctrl-C (``SIGINT``) must not cost the work
since the last periodic checkpoint. :class:`GracefulInterrupt` turns the first such signal into a flag; the engine
finishes the current iteration (every ``ITERATION_COMPLETED`` handler included: LR schedule, stats), the handler
writes the ``save_dict`` atomically and terminates the run without ``Events.COMPLETED`` (so no "final" checkpoint
claims the training finished). A second signal acts as it did before the handler was installed (e.g. Ctrl-C twice
interrupts at once).

Exit status: ``engine.run()`` returns normally; call :meth:`GracefulInterrupt.exit_if_interrupted` after it (the
bundles' ``finalize`` lists do, after their own clean-up) to leave with ``128 + signal number``, the shell convention:
130 after SIGINT, 143 after SIGTERM. A run that was not interrupted continues (status 0).

Distributed runs (``torch.distributed`` initialised, e.g. under ``torchrun``): a signal may reach the ranks at
different iterations, and a rank that stopped alone would leave the others waiting in the next gradient all-reduce.
So after every iteration the ranks agree (one all-reduce of the received signal number) and all stop after the same
iteration; only rank 0 writes the checkpoint (the ranks hold the same state), and the others wait for it before they
exit, because ``torchrun`` stops every worker as soon as one of them ends.

DataLoader workers: a signal sent to the whole process group (Ctrl-C in a terminal, ``kill -TERM -<pgid>``, a
Slurm time limit) reaches the data loader workers too. SIGTERM kills them, and PyTorch's ``SIGCHLD`` handler would then
fail the main process (``DataLoader worker ... is killed by signal: Terminated``) in the middle of the iteration. On
the first stop signal the handler therefore puts the default ``SIGCHLD`` disposition back for the rest of the
process, so an iteration that holds its batch finishes and the checkpoint is written. A main process that is
waiting for a batch from the killed workers at that moment still fails (PyTorch's own check of the workers); send the
signal to the main process only (``kill <pid>``, Slurm ``--signal=B:TERM@<seconds>`` with ``exec`` in the batch
script) or use ``num_workers 0`` where that matters.

Resume: load the written file with :class:`mckd.checkpoints.SafeCheckpointLoader` (the bundles'
``--resume_checkpoint``) into the same dictionary; the trainer continues at the next iteration.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from monai.config import PathLike
from monai.utils import IgniteInfo, min_version, optional_import

from mckd.checkpoints import ensure_writable_folder, save_checkpoint

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
idist, _ = optional_import("ignite", IgniteInfo.OPT_IMPORT_VERSION, min_version, "distributed")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import(
        "ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine", as_type="decorator"
    )

__all__ = ["GracefulInterrupt"]


class GracefulInterrupt:
    """On SIGINT/SIGTERM, save ``save_dict`` to ``save_dir/filename`` after the current iteration and stop the engine.

    Signal handlers are installed at ``Events.STARTED`` and the previous ones restored when the run completes or is
    terminated, and as soon as a first signal arrives. When the run fails with an exception the handler stays
    installed but passes any signal straight on to the previous handler (registering for ``EXCEPTION_RAISED`` would
    make ignite swallow the exception). Python only delivers signals to the main thread: when the engine runs in
    another thread nothing is installed (a warning is logged).

    Put every object a resume needs in ``save_dict`` (the bundle's ``checkpoint_dict``): network, optimiser, LR
    scheduler, modality importance and its optimiser, and the trainer itself (its iteration and epoch).

    Args:
        save_dict: name -> object with ``state_dict``, as MONAI's ``CheckpointSaver``.
        save_dir: folder of the checkpoint (created when absent).
        filename: file name of the checkpoint. Default ``"interrupted.pt"``.
        signals: the signals to catch. Default SIGINT and SIGTERM.
        name: logger name; ``None`` (default) uses ``engine.logger``.

    Raises:
        ValueError: when ``save_dict`` is empty, ``filename`` is not a plain file name or ``signals`` is empty.
    """

    def __init__(
        self,
        save_dict: Mapping[str, Any],
        save_dir: PathLike,
        filename: str = "interrupted.pt",
        signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
        name: str | None = None,
    ) -> None:
        if not save_dict:
            raise ValueError("save_dict must name at least one object to save.")
        if not filename or Path(filename).name != filename:
            raise ValueError(f"filename must be a plain file name, got '{filename}'.")
        if not signals:
            raise ValueError("signals must name at least one signal.")
        self.save_dict = dict(save_dict)
        self.path = Path(save_dir) / filename
        self.signals = tuple(signal.Signals(s) for s in signals)
        self.logger = logging.getLogger(name)
        self._name = name
        self.received: signal.Signals | None = None
        self.saved_path: Path | None = None
        self._previous: dict[signal.Signals, Any] = {}
        self._running = False

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the trainer.
        """
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_stop)
        engine.add_event_handler(Events.TERMINATE, self._maybe_save)
        engine.add_event_handler(Events.COMPLETED, self._restore_handlers)
        engine.add_event_handler(Events.TERMINATE, self._restore_handlers)

    def _install(self, engine: Engine) -> None:
        """Check the output folder and install the signal handlers (main thread only).

        Raises:
            PermissionError: when the checkpoint folder cannot be created or written (at start, not on the signal).
        """
        ensure_writable_folder(self.path.parent)
        self.received = None
        self.saved_path = None
        self._running = True
        if threading.current_thread() is not threading.main_thread():
            self.logger.warning("GracefulInterrupt: the engine runs outside the main thread; signals are not caught.")
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Record the signal and give the signals back to their previous handlers (a second one acts at once).

        Outside a run (after a failed one) the signal goes straight on to the previous handler. In a run, ``SIGCHLD``
        gets its default disposition for the rest of the process (see the module's notes on data loader workers).
        """
        running = self._running
        self._restore_handlers()
        if running:
            self.received = signal.Signals(signum)
            # data loader workers killed by the same (process-group) signal must not fail this last iteration
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        else:
            signal.raise_signal(signum)

    def _restore_handlers(self, *_: Any) -> None:
        """Put back the signal handlers that were installed before :meth:`_install`."""
        self._running = False
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _maybe_stop(self, engine: Engine) -> None:
        """At the end of an iteration, terminate the run when a signal arrived (on any rank, in a distributed run)."""
        if idist.get_world_size() > 1:
            agreed = int(idist.all_reduce(float(self.received or 0), op="MAX"))
            self.received = signal.Signals(agreed) if agreed else None
        if self.received is not None:
            engine.terminate(skip_completed=True)

    def _maybe_save(self, engine: Engine) -> None:
        """After the last iteration's handlers, write the checkpoint (atomically, rank 0 only) when the stop was ours.

        One warning line says what happened and where the checkpoint is; other ranks wait until it is written.
        """
        if self.received is None:
            return
        if idist.get_rank() == 0:
            self.saved_path = save_checkpoint(self.save_dict, self.path)
            self.logger.warning(
                "%s received: stopped after iteration %d and saved '%s'; resume from it with the same configuration.",
                self.received.name, engine.state.iteration, self.saved_path,
            )
        if idist.get_world_size() > 1:
            idist.barrier()

    @property
    def exit_status(self) -> int:
        """0 when no signal arrived, else ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM)."""
        return 0 if self.received is None else 128 + int(self.received)

    def exit_if_interrupted(self) -> None:
        """Leave the process with :attr:`exit_status` when the run was interrupted; do nothing otherwise.

        Raises:
            SystemExit: with ``128 + signal number`` after an interrupted run.
        """
        if self.received is not None:
            sys.exit(self.exit_status)

