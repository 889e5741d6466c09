"""Fixtures of the data-preparation tests: small synthetic datasets in every release's layout."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from data_prep.synthetic_brats import WrittenCase, write_dataset

#: Small volume size (x, y, z) that keeps every test fast.
SHAPE = (32, 40, 24)

WriteDataset = Callable[..., tuple[Path, list[WrittenCase]]]


@pytest.fixture
def make_dataset(tmp_path: Path) -> WriteDataset:
    """Write a small synthetic dataset under ``tmp_path/<layout>``; returns its root and the written cases."""

    def make(layout: str = "brats2018", n_cases: int = 7, seed: int = 0) -> tuple[Path, list[WrittenCase]]:
        root = tmp_path / layout
        return root, write_dataset(root, n_cases, layout, SHAPE, seed)

    return make
