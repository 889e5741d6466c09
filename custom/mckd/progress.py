"""Progress bars for the long loops (evaluation, synthetic data, AV-MNIST builds): tqdm, silent off a terminal.

MONAI's own progress reporting is tqdm (``monai[tqdm]``, e.g. ``monai.apps.download_url``); ignite's ``ProgressBar``
(tqdm too) serves the engines, such as inference's evaluator. Loops outside an engine use :func:`progress_bar`,
which draws on ``stderr`` only when it is a terminal (tqdm's ``disable=None``), so logs, CI output and files
redirected from a command stay free of bar lines.
"""

from __future__ import annotations

from typing import IO

from tqdm import tqdm

__all__ = ["progress_bar"]


def progress_bar(total: int | None, desc: str, unit: str = "it", file: IO[str] | None = None) -> tqdm:
    """A tqdm bar for ``total`` steps (``update(n)`` per step; a context manager that closes it).

    Args:
        total: number of steps, or None when unknown.
        desc: what is counted, shown before the bar (e.g. ``"synthetic cases"``).
        unit: name of one step. Default ``"it"``.
        file: where to draw; default ``sys.stderr``. Nothing is drawn unless it is a terminal.
    """
    return tqdm(total=total, desc=desc, unit=unit, file=file, disable=None, leave=False, dynamic_ncols=True)
