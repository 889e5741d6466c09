"""Write a self-contained model-zoo copy of a bundle: the ``mckd`` code it needs vendored under ``scripts/``.

In this repository the bundles' configs name components by their installed dotted path (``mckd.networks...``), and
the package is installed from the checkout (``pip install -e .``). The model zoo installs only MONAI and the packages
pinned in the metadata (``pip install name==version``; ``mckd`` is not on PyPI), and expects custom code under the
bundle's ``scripts/``.
The export therefore

1. copies the bundle (without ``models/``, ``eval/``, ``runs/``, caches and ``.gitignore`` files),
2. vendors the import closure of every ``mckd`` module the configs name, plus ``data_prep.brats`` (the datalist
   command, runnable as ``python -m scripts.data_prep.brats``) and ``mckd.ckpt_export`` (the checked TorchScript
   export, ``python -m scripts.mckd.ckpt_export``) and ``mckd.onnx_export`` (the checked ONNX export), as
   ``scripts/mckd/...`` and ``scripts/data_prep/...``,
   rewriting their absolute imports ``mckd.x`` -> ``scripts.mckd.x`` (relative imports are kept),
3. points the configs' ``_target_`` paths and expressions at ``scripts.mckd...``,
4. formats the vendored code with black (line length 120, the model zoo's setting), so that the zoo's code-format
   check (black, flake8 with the zoo's ``setup.cfg``) passes on the copy,
5. writes a model-zoo style unit test (``ci/unit_tests/test_<bundle>.py``: train, evaluate and infer on synthetic
   data through ``ConfigWorkflow`` with ``check_properties``) when this package has one for the bundle,
6. optionally merges config overlays into ``inference.json`` (``--overlay cpu_small.json``: the exported inference
   defaults then build the network the shipped weights belong to), copies checked weights to ``models/model.pt``
   and lists them with their SHA-256 in ``large_files.yml`` (``--weights``, ``--weights-url``), and fills
   ``eval_metrics`` from an evaluation report (``--eval-report <output_dir>/evaluation_summary.json``),
7. validates the metadata against the schema it names (the local copy ``bundle/meta_schema_<date>.json`` of this
   repository is used, so no download is needed),
8. warns about third-party packages the vendored code imports at module level (required at run time) that neither
   MONAI's core dependencies nor the metadata pin; imports inside functions and ``optional_import`` calls are optional
   extras (``brats-evaluation`` for the lesion-wise scorer, ``SimpleITK`` for registration) and only listed.

The repository's metadata pins only packages that ``pip`` can install: ``mckd`` itself is not on PyPI, so the
repository bundle documents ``pip install -e .`` instead, and the export vendors the code.

The result runs from its own folder (``python -m monai.bundle run --config_file configs/train.json``), where ``python
-m`` puts the bundle root on ``sys.path`` so that ``scripts`` is importable, as for every zoo bundle.

Usage::

    python -m mckd.bundle_export --bundle bundle/brats_mri_mckd_segmentation --out DIR [--extra-module MOD ...] \
        [--overlay cpu_small.json] [--weights models/model.pt --weights-url URL] [--eval-report SUMMARY_JSON]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

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
    "imported_packages",
    "format_python",
    "merge_overlays",
    "eval_metrics_from_summary",
    "large_files_yaml",
    "export_bundle",
    "main",
]

logger = logging.getLogger(__name__)

#: Top-level packages of this repository that are vendored (and whose imports are rewritten) in an export.
VENDORED_PACKAGES: tuple[str, ...] = ("mckd", "data_prep")
#: Modules vendored even though no config names them: the datalist, TorchScript and ONNX commands of the README.
DEFAULT_EXTRA_MODULES: tuple[str, ...] = ("data_prep.brats", "mckd.ckpt_export", "mckd.onnx_export")
#: Name of the bundle's custom-code package (model-zoo convention).
SCRIPTS = "scripts"
#: The model zoo's black / flake8 line length (its ``pyproject.toml`` and ``setup.cfg``).
ZOO_LINE_LENGTH = 120
#: Folders and files of a working bundle that never go into an export.
_SKIPPED_NAMES = frozenset({"models", "eval", "runs", "__pycache__", ".gitignore", SCRIPTS})
#: Third-party distributions every zoo environment has (MONAI and its core requirements).
_BASE_DISTRIBUTIONS = frozenset({"monai", "torch", "numpy"})
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_REFERENCE = re.compile(r"(?<![\w.])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(VENDORED_PACKAGES))
_PREFIX = re.compile(r"(?<![\w.])(%s)(?=[.\s]|$)" % "|".join(VENDORED_PACKAGES))
#: Where the shipped weights go in the export (the model zoo's ``models/model.pt``).
WEIGHTS_PATH = "models/model.pt"


class ExportError(ValueError):
    """The bundle cannot be exported (missing files, an unresolvable module, invalid metadata, a bad target)."""


@dataclass
class ExportResult:
    """What :func:`export_bundle` wrote.

    Attributes:
        out: the exported bundle folder.
        modules: vendored module names (``mckd.x.y``), sorted.
        configs: rewritten config files, relative to ``out``.
        unpinned: third-party distributions the vendored code imports at module level that the metadata does not pin.
        optional: third-party distributions the vendored code imports only on request (inside functions or through
            ``optional_import``) that the metadata does not pin: optional extras.
        unit_test: the written model-zoo style unit test, or None when this package has none for the bundle.
    """

    out: Path
    modules: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)
    unit_test: Path | None = None


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


def _import_names(node: ast.AST) -> set[str]:
    """Top-level module names an import statement imports (absolute imports only)."""
    if isinstance(node, ast.Import):
        return {alias.name.split(".")[0] for alias in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING"


def _import_time_names(body: Sequence[ast.stmt]) -> set[str]:
    """Modules imported when the module itself is imported: module-level statements, also under ``if`` (except
    ``if TYPE_CHECKING``); a ``try`` block is a guarded, optional import."""
    found: set[str] = set()
    for node in body:
        found |= _import_names(node)
        if isinstance(node, ast.If) and not _is_type_checking(node):
            found |= _import_time_names(node.body) | _import_time_names(node.orelse)
    return found


def _optional_import_names(tree: ast.AST) -> set[str]:
    """First arguments of MONAI's ``optional_import("name", ...)`` calls."""
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or getattr(node.func, "id", getattr(node.func, "attr", None)) != (
            "optional_import"
        ):
            continue
        if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            names.add(node.args[0].value.split(".")[0])
    return names


def imported_packages(source: str) -> tuple[set[str], set[str]]:
    """Third-party top-level modules ``source`` imports: ``(required, optional)``.

    Required: imported when the module is imported. Optional: imported only inside functions, ``try`` or
    ``if TYPE_CHECKING`` blocks, or through ``optional_import``; the code runs without them until they are asked for.
    """
    tree = ast.parse(source)
    everything = {name for node in ast.walk(tree) for name in _import_names(node)} | _optional_import_names(tree)
    own = set(sys.stdlib_module_names) | set(VENDORED_PACKAGES) | {SCRIPTS, "__future__"}
    required = _import_time_names(tree.body) - own
    return required, everything - own - required


def _unpinned(modules: Iterable[str], pinned: set[str]) -> list[str]:
    """Distributions (pip names) of ``modules`` none of whose distributions is in ``pinned``."""
    mapping = packages_distributions()
    missing = set()
    for module in modules:
        distributions = {d.lower() for d in mapping.get(module, [module])}
        if not distributions & pinned:
            missing.add(min(distributions))
    return sorted(missing)


def format_python(source: str) -> str:
    """``source`` formatted as the model zoo's code-format check expects (black, line length 120, Python 3.10+).

    Raises:
        ExportError: when black is not installed (``pip install black``).
    """
    try:
        import black  # noqa: PLC0415 - a development tool, needed only by the export
    except ImportError as err:
        raise ExportError("formatting the vendored code needs black: pip install black") from err
    mode = black.Mode(line_length=ZOO_LINE_LENGTH, target_versions={black.TargetVersion.PY310})
    return black.format_str(source, mode=mode)


def merge_overlays(base_text: str, overlay_texts: Sequence[str]) -> str:
    """A config's JSON text with the top-level keys it shares with each overlay set to the overlay's value.

    Keys only an overlay has (training settings in an overlay merged into ``inference.json``) are left out, so the
    result is the config itself with other defaults.
    """
    config = json.loads(base_text)
    for text in overlay_texts:
        config.update({key: value for key, value in json.loads(text).items() if key in config})
    return json.dumps(config, indent=4, ensure_ascii=False) + "\n"


def eval_metrics_from_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``eval_metrics`` for the metadata from an evaluation report's ``evaluation_summary.json``.

    ``mean_over_subsets_<metric>_<region>`` (the headline number: mean over the modality subsets evaluated),
    ``all_modalities_<metric>_<region>`` (the subset with the most modalities), ``num_cases`` and the scoring
    convention, rounded to 4 decimals; metrics that were not defined (no case) are left out.

    Raises:
        ExportError: when the file is not such a summary.
    """
    if not isinstance(summary.get("mean_over_subsets"), Mapping) or not summary.get("per_subset"):
        raise ExportError("the evaluation report is not an evaluation_summary.json (no mean_over_subsets/per_subset).")
    full = max(summary["per_subset"], key=lambda name: len(name.split("+")))
    metrics: dict[str, Any] = {}
    for prefix, table in (
        ("mean_over_subsets", summary["mean_over_subsets"]),
        ("all_modalities", summary["per_subset"][full]),
    ):
        for region, values in table.items():
            metrics.update({f"{prefix}_{m}_{region.lower()}": round(v, 4) for m, v in values.items() if v is not None})
    metrics["all_modalities_subset"] = full
    metrics["num_cases"] = summary.get("num_cases")
    convention = (summary.get("conventions") or {}).get("name")
    if convention:
        metrics["scoring_convention"] = convention
    return metrics


def large_files_yaml(entries: Sequence[Mapping[str, str]]) -> str:
    """The model zoo's ``large_files.yml`` text for ``entries`` (``path``, ``url``, ``hash_val``, ``hash_type``)."""
    lines = ["large_files:"]
    for entry in entries:
        items = [f"{key}: {json.dumps(str(value))}" for key, value in entry.items()]
        lines += [f"  - {items[0]}"] + [f"    {item}" for item in items[1:]]
    return "\n".join(lines) + "\n"


def _validate_metadata(meta: dict, schema_dirs: Sequence[Path]) -> None:
    """Validate ``meta`` against the local copy of the schema its ``"schema"`` URL names.

    Raises:
        ExportError: when no local copy is found or the metadata does not validate.
    """
    import jsonschema  # noqa: PLC0415 - a MONAI extra ("jsonschema"), needed only here

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


def _check_out(bundle: Path, out: Path, weights: str | Path | None, weights_url: str | None) -> None:
    """Refuse an export folder inside the bundle or one that holds files; remove an empty one (copytree makes it).

    Raises:
        ExportError: see above, when ``bundle`` has no ``configs/metadata.json``, and for weights without a URL.
    """
    if weights is not None and not weights_url:
        raise ExportError("shipping weights needs --weights-url: large_files.yml names where they are downloaded.")
    if not (bundle / "configs" / "metadata.json").is_file():
        raise ExportError(f"'{bundle}' is not a bundle: {bundle / 'configs' / 'metadata.json'} does not exist.")
    if out == bundle or bundle in out.parents:
        raise ExportError(f"the export folder '{out}' must lie outside the bundle '{bundle}'.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"the export folder '{out}' exists and is not empty; choose a new folder.")
    if out.exists():
        out.rmdir()


def _vendor(closure: Mapping[str, Path], out: Path) -> list[str]:
    """Write the rewritten, formatted modules of ``closure`` under ``out/scripts``; return their sources."""
    sources = []
    for name, path in closure.items():
        parts = name.split(".")
        relative = Path(*parts, "__init__.py") if path.name == "__init__.py" else Path(*parts).with_suffix(".py")
        source = path.read_text(encoding="utf-8")
        sources.append(source)
        write_text_atomic(out / SCRIPTS / relative, format_python(rewrite_imports(source)))
    docstring = (
        f'"""Custom code of this bundle: {", ".join(VENDORED_PACKAGES)} modules vendored by mckd.bundle_export."""\n'
    )
    write_text_atomic(out / SCRIPTS / "__init__.py", format_python(docstring))
    return sources


def _read_overlays(bundle: Path, overlays: Sequence[str | Path]) -> list[str]:
    """Texts of the overlay configs: names under the bundle's ``configs/`` or paths.

    Raises:
        ExportError: for an overlay that exists in neither place.
    """
    texts = []
    for overlay in overlays:
        path = next((p for p in (bundle / "configs" / str(overlay), Path(overlay)) if p.is_file()), None)
        if path is None:
            raise ExportError(f"the overlay '{overlay}' is neither a file under {bundle / 'configs'} nor a path.")
        texts.append(path.read_text(encoding="utf-8"))
    return texts


def _check_weights(weights: Path, inference_text: str) -> None:
    """Load ``weights`` strictly into the network the (merged) inference config builds.

    Raises:
        ExportError: when the file cannot be read or does not fit that network, with the checkpoint's message.
    """
    from monai.bundle import ConfigParser  # noqa: PLC0415 - needed only when weights are shipped

    from mckd.checkpoints import CheckpointError, load_objects  # noqa: PLC0415

    parser = ConfigParser(json.loads(inference_text))
    try:
        load_objects({"model": parser.get_parsed_content("network_def")}, weights, map_location="cpu")
    except CheckpointError as err:
        raise ExportError(f"the weights do not fit the exported inference config's network_def: {err}") from err


def _ship_weights(weights: Path, url: str, out: Path) -> None:
    """Copy the weights to ``out/models/model.pt`` and list them in ``out/large_files.yml`` with their SHA-256."""
    target = out / WEIGHTS_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(weights, target)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    entry = {"path": WEIGHTS_PATH, "url": url, "hash_val": digest, "hash_type": "sha256"}
    write_text_atomic(out / "large_files.yml", large_files_yaml([entry]))


def _write_configs(texts: Mapping[str, str], out: Path, inference_text: str | None) -> list[str]:
    """Write the configs whose text changes (rewritten dotted paths, merged overlays); return their names."""
    written = []
    for name, text in texts.items():
        if name == "metadata.json":
            continue
        source = inference_text if name == "inference.json" and inference_text is not None else text
        rewritten = rewrite_config_text(source)
        if rewritten != text:
            write_text_atomic(out / "configs" / name, rewritten)
            written.append(f"configs/{name}")
    return written


def _write_unit_test(bundle_name: str, out: Path) -> Path | None:
    """Write this package's model-zoo style unit test for ``bundle_name`` into ``out/ci/unit_tests``, if it has one."""
    template = importlib.resources.files("mckd") / "templates" / f"test_{bundle_name}.py"
    if not template.is_file():
        return None
    target = out / "ci" / "unit_tests" / f"test_{bundle_name}.py"
    write_text_atomic(target, format_python(template.read_text(encoding="utf-8")))
    return target


def _export_metadata(text: str, eval_report: Path | None, schema_dirs: Sequence[Path]) -> dict:
    """The exported metadata: vendored packages unpinned, ``eval_metrics`` from the report, schema-validated."""
    meta = json.loads(text)
    packages = {k: v for k, v in meta.get("required_packages_version", {}).items() if k not in VENDORED_PACKAGES}
    meta["required_packages_version"] = packages
    if eval_report is not None:
        try:
            summary = json.loads(Path(eval_report).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ExportError(f"cannot read the evaluation report '{eval_report}': {err}") from err
        meta["eval_metrics"] = eval_metrics_from_summary(summary)
    _validate_metadata(meta, schema_dirs)
    return meta


def export_bundle(
    bundle: str | Path,
    out: str | Path,
    extra_modules: Sequence[str] = DEFAULT_EXTRA_MODULES,
    schema_dirs: Sequence[str | Path] | None = None,
    overlays: Sequence[str | Path] = (),
    weights: str | Path | None = None,
    weights_url: str | None = None,
    eval_report: str | Path | None = None,
) -> ExportResult:
    """Write the self-contained copy of ``bundle`` to ``out`` (see the module docstring).

    Args:
        bundle: the bundle folder (holding ``configs/metadata.json``).
        out: the folder to create; it must not exist yet, or be empty, and must lie outside ``bundle``.
        extra_modules: modules to vendor in addition to those the configs name. Default :data:`DEFAULT_EXTRA_MODULES`.
        schema_dirs: folders searched for the metadata schema file; default the bundle's parent folder (where this
            repository keeps ``meta_schema_20240725.json``) and the bundle itself.
        overlays: config overlays (names under ``configs/`` or paths) merged into the exported ``inference.json``,
            e.g. ``("cpu_small.json",)`` for a model trained with the CPU configuration. Default none.
        weights: a checkpoint to ship as ``models/model.pt``; it must load strictly into the exported inference
            network. Needs ``weights_url``. Default none.
        weights_url: where the weights will be downloaded from, written to ``large_files.yml``.
        eval_report: an ``evaluation_summary.json`` of the evaluation workflow, for ``eval_metrics``. Default none.

    Raises:
        ExportError: when the bundle has no metadata, ``out`` is unusable, a module or overlay cannot be found, the
            weights lack a URL or do not fit, the report is unreadable or the exported metadata does not validate.
    """
    bundle, out = Path(bundle).resolve(), Path(out).resolve()
    _check_out(bundle, out, weights, weights_url)
    config_files = sorted(p for p in (bundle / "configs").iterdir() if p.suffix in _CONFIG_SUFFIXES)
    texts = {p.name: p.read_text(encoding="utf-8") for p in config_files}
    inference = merge_overlays(texts["inference.json"], _read_overlays(bundle, overlays)) if overlays else None
    dirs = [Path(d) for d in schema_dirs] if schema_dirs is not None else [bundle.parent, bundle]
    meta = _export_metadata(texts["metadata.json"], Path(eval_report) if eval_report else None, dirs)
    closure = import_closure(config_module_references(texts.values()) | set(extra_modules))
    if weights is not None:
        _check_weights(Path(weights), inference or texts["inference.json"])

    # built in a hidden sibling folder and renamed at the end: a failed export leaves no half-written bundle
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)) / out.name
    try:
        _copy_bundle(bundle, staging)
        sources = _vendor(closure, staging)
        configs = _write_configs(texts, staging, inference)
        # free-text fields name commands too (``python -m data_prep.brats``)
        metadata = rewrite_config_text(json.dumps(meta, indent=4)) + "\n"
        write_text_atomic(staging / "configs" / "metadata.json", metadata)
        if weights is not None:
            _ship_weights(Path(weights), str(weights_url), staging)
        unit_test = _write_unit_test(bundle.name, staging)
        staging.rename(out)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    result = ExportResult(out=out, modules=list(closure), configs=configs)
    result.unit_test = out / unit_test.relative_to(staging) if unit_test else None
    _check_pins(result, sources, meta)
    return result


def _check_pins(result: ExportResult, sources: Sequence[str], meta: dict[str, Any]) -> None:
    """Record (and log) the packages the vendored ``sources`` import that the metadata does not pin."""
    pinned = {name.lower() for name in meta["required_packages_version"]} | _BASE_DISTRIBUTIONS
    required, optional = set(), set()
    for source in sources:
        needed, extra = imported_packages(source)
        required, optional = required | needed, optional | extra
    result.unpinned = _unpinned(required, pinned)
    result.optional = _unpinned(optional - required, pinned)
    for dist in result.unpinned:
        logger.warning("the vendored code imports '%s' at module level, which the metadata does not pin.", dist)
    if result.optional:
        logger.info("optional imports of the vendored code (not pinned): %s", ", ".join(result.optional))


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
    parser.add_argument(
        "--overlay", action="append", default=[], help="config overlay merged into inference.json (repeatable)"
    )
    parser.add_argument("--weights", type=Path, help=f"checkpoint shipped as {WEIGHTS_PATH} (needs --weights-url)")
    parser.add_argument("--weights-url", help="download address of the weights, written to large_files.yml")
    parser.add_argument("--eval-report", type=Path, help="evaluation_summary.json that fills eval_metrics")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return 0 on success, 2 when the export fails."""
    args = _parser().parse_args(argv)
    extra = DEFAULT_EXTRA_MODULES if args.extra_module is None else tuple(args.extra_module)
    try:
        result = export_bundle(
            args.bundle,
            args.out,
            extra_modules=extra,
            overlays=args.overlay,
            weights=args.weights,
            weights_url=args.weights_url,
            eval_report=args.eval_report,
        )
    except ExportError as err:
        logger.error("error: %s", err)
        return 2
    logger.info(
        "exported %s to %s: %d modules vendored under %s/, configs rewritten: %s%s%s",
        args.bundle,
        result.out,
        len(result.modules),
        SCRIPTS,
        ", ".join(result.configs) or "none",
        f"; unit test: {result.unit_test.relative_to(result.out)}" if result.unit_test else "",
        f"; unpinned imports: {', '.join(result.unpinned)}" if result.unpinned else "",
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
