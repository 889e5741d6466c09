"""Fixtures of the reliability tests: one intra-op thread, and the toy training module for in-process runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def single_thread():
    """One intra-op thread: the tiny tensors here gain nothing from more, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def toy() -> ModuleType:
    """``toy_training.py`` (also run as a script by the signal tests), imported once."""
    name = "reliability_toy_training"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "toy_training.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
