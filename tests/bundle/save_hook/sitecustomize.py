"""Test-only start-up hook: make one checkpoint write hang half-way, so that a test can ``kill -9`` the process there.

``tests/bundle/test_bundle_interruption.py`` puts this folder on ``PYTHONPATH`` of a ``python -m monai.bundle run``
subprocess with ``MCKD_TEST_HANG_SAVE=<part of a file name>`` and ``MCKD_TEST_HANG_READY=<file>``. The ``torch.save``
call whose target's name contains that part writes the first half of the serialised checkpoint to its target, creates
the ready file and sleeps until the process is killed. Without ``MCKD_TEST_HANG_SAVE`` nothing is changed.
"""

import os

if os.environ.get("MCKD_TEST_HANG_SAVE"):
    import io
    import time
    from pathlib import Path

    import torch

    _real_save = torch.save

    def _hanging_save(obj, f, *args, **kwargs):
        if not isinstance(f, (str, os.PathLike)) or os.environ["MCKD_TEST_HANG_SAVE"] not in Path(f).name:
            return _real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        _real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        with open(f, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        Path(os.environ["MCKD_TEST_HANG_READY"]).write_text(str(f))
        while True:
            time.sleep(1)

    torch.save = _hanging_save
