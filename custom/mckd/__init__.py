"""MCKD: meta-learned cross-modal knowledge distillation for missing modalities, as MONAI components."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mckd")
except PackageNotFoundError:  # vendored copy inside an exported bundle
    __version__ = "0.1.0"
