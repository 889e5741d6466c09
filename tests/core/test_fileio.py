"""Atomic outputs: nothing under the final name until the write succeeded; usual permissions; inputs protected."""

from __future__ import annotations

import os
import stat

import pytest

from mckd.fileio import atomic_path, ensure_not_input, write_json_atomic


def test_failed_write_leaves_neither_the_target_nor_a_temporary_file(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("writer crashed")
    assert list(tmp_path.iterdir()) == []


def test_temporary_name_keeps_the_suffixes_that_writers_read(tmp_path):
    with atomic_path(tmp_path / "case_seg.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_output_gets_the_permissions_of_an_ordinary_new_file(tmp_path):
    written = write_json_atomic(tmp_path / "a.json", {"k": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask


def test_output_under_a_regular_file_is_reported_with_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(PermissionError, match="file"):
        with atomic_path(blocker / "out.json"):
            pass


def test_writing_over_an_input_is_refused(tmp_path):
    source = tmp_path / "t1.nii.gz"
    with pytest.raises(ValueError, match="t1.nii.gz"):
        ensure_not_input(tmp_path / "." / "t1.nii.gz", [source])
