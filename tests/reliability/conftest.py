"""Fixtures of the reliability tests: the toy training module for in-process runs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


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
