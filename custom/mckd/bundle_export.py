"""Write a self-contained model-zoo copy of a bundle: the ``mckd`` code it needs vendored under ``scripts/``.

In this repository the bundles' configs name components by their installed dotted path (``mckd.networks...``) and
``metadata.json`` pins the ``mckd`` package. The model zoo installs only MONAI and the packages pinned in the metadata
(``pip install name==version``, and ``mckd`` is not on PyPI), and expects custom code under the bundle's ``scripts/``.
The export therefore

1. copies the bundle (without ``models/``, ``eval/``, ``runs/``, caches and ``.gitignore`` files),
2. vendors the import closure of every ``mckd`` module the configs name, plus ``data_prep.brats`` (the datalist
   command, runnable as ``python -m scripts.data_prep.brats``) and ``mckd.ckpt_export`` (the checked TorchScript
   export, ``python -m scripts.mckd.ckpt_export``), as ``scripts/mckd/...`` and ``scripts/data_prep/...``,
   rewriting their absolute imports ``mckd.x`` -> ``scripts.mckd.x`` (relative imports are kept),
3. points the configs' ``_target_`` paths and expressions at ``scripts.mckd...``,
4. drops ``mckd`` from ``required_packages_version`` and validates the metadata against the schema it names (the
   local copy ``bundle/meta_schema_<date>.json`` of this repository is used, so no download is needed),
5. warns about third-party imports of the vendored code that neither MONAI's core dependencies nor the metadata pin.

The result runs from its own folder (``python -m monai.bundle run --config_file configs/train.json``), where ``python
-m`` puts the bundle root on ``sys.path`` so that ``scripts`` is importable, as for every zoo bundle.

Usage::

    python -m mckd.bundle_export --bundle bundle/brats_mri_mckd_segmentation --out DIR [--extra-module MOD ...]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Iterable, Sequence

from mckd.fileio import write_text_atomic

__all__ = [
    "VENDORED_PACKAGES",
    "DEFAULT_EXTRA_MODULES",
    "ExportResult",
    "ExportError",
    "config_module_references",
    "import_closure",
    "rewrite_imports",
    "rewrite_config_text",
    "export_bundle",
    "main",
]

logger = logging.getLogger(__name__)

#: Top-level packages of this repository that are vendored (and whose imports are rewritten) in an export.
VENDORED_PACKAGES: tuple[str, ...] = ("mckd", "data_prep")
#: Modules vendored even though no config names them: the datalist and TorchScript export commands of the README.
DEFAULT_EXTRA_MODULES: tuple[str, ...] = ("data_prep.brats", "mckd.ckpt_export")
#: Name of the bundle's custom-code package (model-zoo convention).
SCRIPTS = "scripts"
#: Folders and files of a working bundle that never go into an export.
_SKIPPED_NAMES = frozenset({"models", "eval", "runs", "__pycache__", ".gitignore", SCRIPTS})
#: Third-party distributions every zoo environment has (MONAI and its core requirements).
_BASE_DISTRIBUTIONS = frozenset({"monai", "torch", "numpy"})
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_REFERENCE = re.compile(r"(?<![\w.])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(VENDORED_PACKAGES))
_PREFIX = re.compile(r"(?<![\w.])(%s)(?=[.\s]|$)" % "|".join(VENDORED_PACKAGES))


class ExportError(ValueError):
    """The bundle cannot be exported (missing files, an unresolvable module, invalid metadata, a bad target)."""


@dataclass
class ExportResult:
    """What :func:`export_bundle` wrote.

    Attributes:
        out: the exported bundle folder.
        modules: vendored module names (``mckd.x.y``), sorted.
        configs: rewritten config files, relative to ``out``.
        unpinned: third-party distributions the vendored code imports that the metadata does not pin.
    """

    out: Path
    modules: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)


def _module_file(name: str) -> Path | None:
    """Source file of module ``name`` (``__init__.py`` for a package), or None when it is not a module."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_package(name: str) -> bool:
    path = _module_file(name)
    return path is not None and path.name == "__init__.py"


def config_module_references(texts: Iterable[str]) -> set[str]:
    """Modules of :data:`VENDORED_PACKAGES` that config texts name (longest importable prefix of each dotted path).

    Raises:
        ExportError: when a dotted path has no importable module prefix.
    """
    modules = set()
    for text in texts:
        for dotted in _REFERENCE.findall(text):
            parts = dotted.split(".")
            prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
            found = next((name for name in prefixes if _module_file(name)), None)
            if found is None:
                raise ExportError(f"the configs name '{dotted}', which is not importable here; install it first.")
            modules.add(found)
    return modules


def _resolve_relative(module: str, level: int, target: str | None) -> str:
    """Absolute name of a relative import ``from <level dots><target> import ...`` inside ``module``."""
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _imported_modules(module: str, source: str) -> set[str]:
    """Modules of the vendored packages that ``source`` (of ``module``) imports, as importable names."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else (node.module or "")
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in candidates:
            if name.split(".")[0] in VENDORED_PACKAGES and _module_file(name) is not None:
                found.add(name)
    return found


def _with_parents(name: str) -> set[str]:
    parts = name.split(".")
    return {".".join(parts[:n]) for n in range(1, len(parts) + 1)}


def import_closure(modules: Iterable[str]) -> dict[str, Path]:
    """Every module (and parent package) needed to import ``modules``, mapped to its source file.

    Raises:
        ExportError: when a module cannot be found.
    """
    todo = set().union(*(_with_parents(m) for m in modules)) if modules else set()
    closure: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        path = _module_file(name)
        if path is None:
            raise ExportError(f"module '{name}' cannot be found.")
        closure[name] = path
        for imported in _imported_modules(name, path.read_text(encoding="utf-8")):
            todo |= _with_parents(imported) - set(closure)
    return dict(sorted(closure.items()))


def rewrite_imports(source: str) -> str:
    """Prefix absolute imports of the vendored packages with ``scripts.`` (only on import statements)."""
    lines = source.splitlines(keepends=True)
    for node in ast.walk(ast.parse(source)):
        # the imported module names sit on the statement's first line, also for a parenthesised name list
        if isinstance(node, ast.Import) or (isinstance(node, ast.ImportFrom) and node.level == 0):
            lines[node.lineno - 1] = _PREFIX.sub(rf"{SCRIPTS}.\1", lines[node.lineno - 1])
    return "".join(lines)


def rewrite_config_text(text: str) -> str:
    """Point every dotted path of a vendored package in a config at its ``scripts.`` copy."""
    return _REFERENCE.sub(rf"{SCRIPTS}.\1", text)


def _third_party_distributions(sources: Iterable[str]) -> set[str]:
    """Distributions (as pip names) of the non-standard-library modules imported by ``sources``."""
    top_level = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                top_level |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                top_level.add(node.module.split(".")[0])
    top_level -= set(sys.stdlib_module_names) | set(VENDORED_PACKAGES) | {SCRIPTS, "__future__"}
    mapping = packages_distributions()
    return {dist.lower() for name in top_level for dist in mapping.get(name, [name])}


def _validate_metadata(meta: dict, schema_dirs: Sequence[Path]) -> None:
    """Validate ``meta`` against the local copy of the schema its ``"schema"`` URL names.

    Raises:
        ExportError: when no local copy is found or the metadata does not validate.
    """
    import jsonschema  # a MONAI extra ("jsonschema"), needed only here

    name = str(meta.get("schema", "")).rsplit("/", 1)[-1]
    schema_file = next((d / name for d in schema_dirs if name and (d / name).is_file()), None)
    if schema_file is None:
        raise ExportError(f"no local copy of the metadata schema '{name}' in {[str(d) for d in schema_dirs]}.")
    try:
        jsonschema.validate(meta, json.loads(schema_file.read_text(encoding="utf-8")))
    except jsonschema.ValidationError as err:
        raise ExportError(f"the exported metadata does not validate against {schema_file}: {err.message}") from err


def _copy_bundle(bundle: Path, out: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == bundle
        return {n for n in names if n in ("__pycache__", ".gitignore") or (top and n in _SKIPPED_NAMES)}

    shutil.copytree(bundle, out, ignore=ignore)


def export_bundle(
    bundle: str | Path,
    out: str | Path,
    extra_modules: Sequence[str] = DEFAULT_EXTRA_MODULES,
    schema_dirs: Sequence[str | Path] | None = None,
) -> ExportResult:
    """Write the self-contained copy of ``bundle`` to ``out`` (see the module docstring).

    Args:
        bundle: the bundle folder (holding ``configs/metadata.json``).
        out: the folder to create; it must not exist yet, or be empty, and must lie outside ``bundle``.
        extra_modules: modules to vendor in addition to those the configs name. Default ``("data_prep.brats",)``.
        schema_dirs: folders searched for the metadata schema file; default the bundle's parent folder (where this
            repository keeps ``meta_schema_20240725.json``) and the bundle itself.

    Raises:
        ExportError: when the bundle has no metadata, ``out`` is unusable, a module cannot be found or the exported
            metadata does not validate.
    """
    bundle, out = Path(bundle).resolve(), Path(out).resolve()
    meta_file = bundle / "configs" / "metadata.json"
    if not meta_file.is_file():
        raise ExportError(f"'{bundle}' is not a bundle: {meta_file} does not exist.")
    if out == bundle or bundle in out.parents:
        raise ExportError(f"the export folder '{out}' must lie outside the bundle '{bundle}'.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"the export folder '{out}' exists and is not empty; choose a new folder.")
    if out.exists():
        out.rmdir()

    config_files = sorted(p for p in (bundle / "configs").iterdir() if p.suffix in _CONFIG_SUFFIXES)
    texts = {p.name: p.read_text(encoding="utf-8") for p in config_files}
    closure = import_closure(config_module_references(texts.values()) | set(extra_modules))

    _copy_bundle(bundle, out)
    result = ExportResult(out=out, modules=list(closure))
    sources = []
    for name, path in closure.items():
        parts = name.split(".")
        relative = Path(*parts, "__init__.py") if path.name == "__init__.py" else Path(*parts).with_suffix(".py")
        source = path.read_text(encoding="utf-8")
        sources.append(source)
        write_text_atomic(out / SCRIPTS / relative, rewrite_imports(source))
    write_text_atomic(
        out / SCRIPTS / "__init__.py",
        f'"""Custom code of this bundle: {", ".join(VENDORED_PACKAGES)} modules vendored by mckd.bundle_export."""\n',
    )

    for name, text in texts.items():
        if name == "metadata.json":
            continue
        rewritten = rewrite_config_text(text)
        if rewritten != text:
            write_text_atomic(out / "configs" / name, rewritten)
            result.configs.append(f"configs/{name}")

    meta = json.loads(texts["metadata.json"])
    packages = dict(meta.get("required_packages_version", {}))
    for vendored in VENDORED_PACKAGES:
        packages.pop(vendored, None)
    meta["required_packages_version"] = packages
    dirs = [Path(d) for d in schema_dirs] if schema_dirs is not None else [bundle.parent, bundle]
    _validate_metadata(meta, dirs)
    # free-text fields name commands too (``python -m data_prep.brats``)
    write_text_atomic(out / "configs" / "metadata.json", rewrite_config_text(json.dumps(meta, indent=4)) + "\n")

    pinned = {name.lower() for name in packages} | _BASE_DISTRIBUTIONS
    result.unpinned = sorted(_third_party_distributions(sources) - pinned)
    for dist in result.unpinned:
        logger.warning("the vendored code imports '%s', which the metadata does not pin.", dist)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mckd.bundle_export",
        description="Write a self-contained model-zoo copy of a bundle (mckd code vendored under scripts/).",
    )
    parser.add_argument("--bundle", required=True, type=Path, help="bundle folder (holding configs/metadata.json)")
    parser.add_argument("--out", required=True, type=Path, help="new folder for the exported bundle")
    parser.add_argument(
        "--extra-module",
        action="append",
        default=None,
        help=f"module to vendor besides those the configs name (repeatable; default {' '.join(DEFAULT_EXTRA_MODULES)})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return 0 on success, 2 when the export fails."""
    args = _parser().parse_args(argv)
    extra = DEFAULT_EXTRA_MODULES if args.extra_module is None else tuple(args.extra_module)
    try:
        result = export_bundle(args.bundle, args.out, extra_modules=extra)
    except ExportError as err:
        logger.error("error: %s", err)
        return 2
    print(
        f"exported {args.bundle} to {result.out}: {len(result.modules)} modules vendored under {SCRIPTS}/, "
        f"configs rewritten: {', '.join(result.configs) or 'none'}"
        + (f"; unpinned imports: {', '.join(result.unpinned)}" if result.unpinned else "")
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
