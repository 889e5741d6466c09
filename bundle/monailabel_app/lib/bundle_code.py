"""Where a served bundle's ``mckd`` code lives: the installed package, or the copy a model-zoo export vendors.

In this repository the bundle's configs name ``mckd.*`` (the package installed with ``pip install -e .``); a model-zoo
export (``python -m mckd.bundle_export``) vendors the same modules as ``scripts.mckd.*`` inside the bundle, and its
configs name those. The app uses the code of the bundle it serves, so it serves an export in an environment without
``mckd``. MONAI Label unloads the ``scripts`` package before each request (``unload_module("scripts")``) and imports
it anew, so a vendored class is a new class object on every request: components are recognised by their qualified
name (:func:`is_component`), never by class identity.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Any

__all__ = ["bundle_package", "import_bundle_module", "is_component"]

#: The project's package, as installed and as vendored under an export's ``scripts/``.
PACKAGE = "mckd"
VENDORED = f"scripts.{PACKAGE}"


def bundle_package(bundle_path: str) -> str:
    """``"scripts.mckd"`` when the bundle vendors the code (``scripts/mckd/__init__.py``), else ``"mckd"``."""
    vendored = os.path.join(bundle_path, *VENDORED.split("."), "__init__.py")
    return VENDORED if os.path.isfile(vendored) else PACKAGE


def import_bundle_module(bundle_path: str, module: str) -> ModuleType:
    """Import ``<package>.<module>`` (e.g. ``brats.conventions``) from the bundle's package.

    The bundle folder is put on ``sys.path`` for the import, as MONAI Label does around its own calls.

    Raises:
        ModuleNotFoundError: when neither the vendored copy nor the installed ``mckd`` provides the module.
    """
    package = bundle_package(bundle_path)
    sys.path.insert(0, bundle_path)
    try:
        return importlib.import_module(f"{package}.{module}")
    finally:
        sys.path.remove(bundle_path)


def is_component(obj: Any, dotted: str) -> bool:
    """Whether ``obj`` is an instance of ``mckd.<dotted>`` (e.g. ``brats.loading.LoadModalitiesd``), installed or
    vendored."""
    wanted = {f"{PACKAGE}.{dotted}", f"{VENDORED}.{dotted}"}
    return any(f"{cls.__module__}.{cls.__qualname__}" in wanted for cls in type(obj).__mro__)
