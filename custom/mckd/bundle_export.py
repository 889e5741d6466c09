"""Write a self-contained model-zoo copy of a bundle: the ``mckd`` code it needs vendored under ``scripts/``.

In this repository the bundles' configs name components by their installed dotted path (``mckd.networks...``), and
the package is installed from the checkout (``pip install -e .``). The model zoo installs only MONAI and the packages
pinned in the metadata (``pip install name==version``; ``mckd`` is not on PyPI), and expects custom code under the
bundle's ``scripts/``.
The export therefore

1. copies the bundle (without ``models/``, ``eval/``, ``runs/``, caches and ``.gitignore`` files),
2. vendors the import closure of every ``mckd`` module the configs (and the bundle's own ``scripts/*.py``) name, plus
   ``data_prep.brats`` (the datalist command, runnable as ``python -m scripts.data_prep.brats``) and
   ``mckd.ckpt_export`` (the checked TorchScript export, ``python -m scripts.mckd.ckpt_export``) and
   ``mckd.onnx_export`` (the checked ONNX export), as ``scripts/mckd/...`` and ``scripts/data_prep/...``, rewriting
   their absolute imports ``mckd.x`` -> ``scripts.mckd.x`` (relative imports are kept); the bundle's own
   ``scripts/*.py`` are kept beside them, rewritten the same way,
3. points the configs' ``_target_`` paths and expressions at ``scripts.mckd...``,
4. formats every Python file as the zoo's code-format check (``runtests.sh --codeformat``) expects: isort and black
   with the zoo's settings (:data:`ZOO_ISORT`, :data:`ZOO_BLACK_TARGETS`, line length 120, magic trailing commas
   skipped), and runs flake8 with the zoo's settings and plugins (:data:`ZOO_FLAKE8`): what the plugins flag in the
   vendored code is waived line by line with ``# noqa`` (logged, and listed in :attr:`ExportResult.waived`); a
   finding elsewhere stops the export,
5. writes the model-zoo style unit tests (``ci/unit_tests/test_<bundle>.py``: train, evaluate and infer on synthetic
   data through ``ConfigWorkflow`` with ``check_properties``; ``test_<bundle>_dist.py``: ``multi_gpu_train.json``
   under ``torchrun``, 2 gloo processes on a CPU) when this package has them for the bundle,
6. writes ``docs/README.md`` from the model card in the shape of the zoo's README template (:data:`README_SECTIONS`;
   relative links that leave the bundle become plain text),
7. optionally merges config overlays into ``inference.json`` (``--overlay cpu_small.json``: the exported inference
   defaults then build the network the shipped weights belong to), ships checked weights as ``models/model.pt`` (the
   network's plain state dict, as ``ckpt_export`` without ``--key_in_ckpt`` reads it, also from a checkpoint with a
   ``model`` entry) listed with their SHA-256 in ``large_files.yml`` (``--weights``, ``--weights-url``), with the
   learned importance ``models/modality_weights.pt`` beside them when the weights have one, and fills
   ``eval_metrics`` from an evaluation report (``--eval-report <output_dir>/evaluation_summary.json``),
8. validates the metadata against the schema it names (the local copy ``bundle/meta_schema_<date>.json`` of this
   repository is used, so no download is needed),
9. warns about third-party packages the vendored code imports at module level (required at run time) that neither
   MONAI's core dependencies nor the metadata pin; imports inside functions and ``optional_import`` calls are optional
   extras (``brats-evaluation`` for the lesion-wise scorer, ``SimpleITK`` for registration) and only listed.

The metadata's ``required_packages_version`` (and ``numpy_version``, ``pytorch_version``, ``monai_version``) are the
one place of the bundle's pins; the zoo's CI installs them as ``name==version`` on Python 3.10, so each must have a
release for 3.10 (``tests/bundle/test_zoo_ci.py`` holds the checked table).
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
import importlib
import importlib.resources
import importlib.util
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import tokenize
from dataclasses import dataclass, field
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from mckd.checkpoints import IMPORTANCE_FILENAME, MODEL_FILENAME, CheckpointError, load_checkpoint, load_objects
from mckd.fileio import atomic_path, write_text_atomic

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
#: The model zoo's code-format settings (facts from its ``setup.cfg``, ``pyproject.toml`` and ``runtests.sh
#: --codeformat``), which its CI checks on every Python file of the repository: line length 120 everywhere; black for
#: Python 3.7-3.9 with ``--skip-magic-trailing-comma``; isort with the black profile and only ``models`` first party
#: (so a bundle's ``scripts`` package sorts with the third-party imports); flake8 with the plugins below.
ZOO_LINE_LENGTH = 120
ZOO_BLACK_TARGETS: tuple[str, ...] = ("PY37", "PY38", "PY39")
ZOO_ISORT: dict[str, Any] = {"profile": "black", "line_length": ZOO_LINE_LENGTH, "known_first_party": ("models",)}
ZOO_FLAKE8: dict[str, Any] = {
    "select": ("B", "C", "E", "F", "N", "P", "T4", "W", "B9"),
    "ignore": ("E203", "E501", "E741", "W503", "W504", "C408", "N812", "B023", "B905", "B028", "B907", "C419"),
    "per_file_ignores": "__init__.py:F401,__main__.py:F401",
}
#: The flake8 plugins of the zoo's development requirements (import names of flake8-bugbear, flake8-comprehensions,
#: flake8-executable and pep8-naming; pinned in this package's ``zoo`` extra).
_ZOO_FLAKE8_PLUGINS = ("bugbear", "flake8_comprehensions", "flake8_executable", "pep8ext_naming")
#: Folders and files of a working bundle that never go into an export.
_SKIPPED_NAMES = frozenset({"models", "eval", "runs", "__pycache__", ".gitignore", SCRIPTS})
#: Third-party distributions every zoo environment has (MONAI and its core requirements).
_BASE_DISTRIBUTIONS = frozenset({"monai", "torch", "numpy"})
_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
_REFERENCE = re.compile(r"(?<![\w.])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(VENDORED_PACKAGES))
_PREFIX = re.compile(r"(?<![\w.])(%s)(?=[.\s]|$)" % "|".join(VENDORED_PACKAGES))
#: Where the shipped weights go in the export (the model zoo's ``models/model.pt``).
WEIGHTS_PATH = f"models/{MODEL_FILENAME}"
#: Where the learned importance goes in the export, beside the weights.
IMPORTANCE_PATH = f"models/{IMPORTANCE_FILENAME}"


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
        unit_tests: every written model-zoo style unit test (the single-process one first, then ``_dist``).
        waived: the zoo's flake8 findings waived in the vendored code with ``# noqa`` (``file:line codes``).
    """

    out: Path
    modules: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)
    optional: list[str] = field(default_factory=list)
    unit_test: Path | None = None
    unit_tests: list[Path] = field(default_factory=list)
    waived: list[str] = field(default_factory=list)


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


def _require(module: str) -> Any:
    """Import a code-format tool the export needs, or fail with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ExportError(f"the model-zoo export needs {module}, a dependency of mckd: pip install -e .") from err


def format_python(source: str) -> str:
    """``source`` formatted as the model zoo's code-format check expects: isort, then black (see :data:`ZOO_ISORT`,
    :data:`ZOO_BLACK_TARGETS`; magic trailing commas skipped, as its ``runtests.sh`` does).

    Raises:
        ExportError: when isort or black is not installed.
    """
    isort, black = _require("isort"), _require("black")
    # no source paths: only ``models`` is first party, whatever the current folder holds (as at the zoo's root)
    sorted_source = isort.code(source, config=isort.Config(**ZOO_ISORT, src_paths=()))
    targets = {getattr(black.TargetVersion, name) for name in ZOO_BLACK_TARGETS}
    mode = black.Mode(line_length=ZOO_LINE_LENGTH, target_versions=targets, magic_trailing_comma=False)
    return black.format_str(sorted_source, mode=mode)


def zoo_flake8_arguments() -> list[str]:
    """Options that run flake8 with the model zoo's settings (:data:`ZOO_FLAKE8`), ignoring any config file."""
    return [
        "--isolated",
        f"--select={','.join(ZOO_FLAKE8['select'])}",
        f"--ignore={','.join(ZOO_FLAKE8['ignore'])}",
        f"--max-line-length={ZOO_LINE_LENGTH}",
        f"--per-file-ignores={ZOO_FLAKE8['per_file_ignores']}",
    ]


def _flake8_findings(root: Path) -> dict[Path, dict[int, set[str]]]:
    """flake8 findings (zoo settings and plugins) of the Python files under ``root``: file -> line -> codes.

    Raises:
        ExportError: when flake8 or one of the zoo's plugins is missing, or flake8 itself fails.
    """
    for module in _ZOO_FLAKE8_PLUGINS:
        _require(module)
    command = [sys.executable, "-m", "flake8", *zoo_flake8_arguments(), "--format=%(path)s\t%(row)d\t%(code)s", "."]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if result.returncode not in (0, 1) or result.stderr.strip():
        raise ExportError(f"flake8 failed on the export: {result.stderr.strip()[-2000:]}")
    findings: dict[Path, dict[int, set[str]]] = {}
    for line in result.stdout.splitlines():
        path, row, code = line.split("\t")
        findings.setdefault((root / path).resolve(), {}).setdefault(int(row), set()).add(code)
    return findings


def _line_ends(source: str) -> set[int]:
    """Lines of ``source`` that end outside a string literal, where a ``# noqa`` comment can be appended."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {tok.start[0] for tok in tokens if tok.type in (tokenize.NEWLINE, tokenize.NL)}


def waive_lint(source: str, findings: Mapping[int, set[str]]) -> str:
    """``source`` with ``# noqa: <codes>`` appended to the lines of ``findings`` (line -> flake8 codes).

    A line inside a multi-line string takes its comment at the end of the line where the string ends: flake8 applies a
    ``# noqa`` there to every line of the string.

    Raises:
        ExportError: when no line at or after a finding ends outside a string.
    """
    lines = source.splitlines(keepends=True)
    ends = sorted(_line_ends(source))
    targets: dict[int, set[str]] = {}
    for row, codes in findings.items():
        target = next((end for end in ends if end >= row), None)
        if target is None:
            raise ExportError(f"line {row} ({', '.join(sorted(codes))}) ends inside a string; cannot waive it.")
        targets.setdefault(target, set()).update(codes)
    for row, codes in sorted(targets.items()):
        text = lines[row - 1].rstrip("\n")
        match = re.search(r"#\s*noqa:\s*([\w, ]+)$", text)
        if match:
            codes = codes | {c.strip() for c in match.group(1).split(",") if c.strip()}
            text = text[: match.start()].rstrip()
        lines[row - 1] = f"{text}  # noqa: {', '.join(sorted(codes))}\n"
    return "".join(lines)


def _lint_vendored(out: Path, rounds: int = 3) -> list[str]:
    """Waive the zoo's flake8 findings in the vendored code (line by line, ``# noqa``); return them as text.

    The vendored modules are this package's code, checked by its own settings; the zoo's plugins (bugbear's opinionated
    B0xx/B9xx checks, naming) flag style choices there. Findings outside ``scripts/`` (the unit tests) are not waived.
    A waived line that black then splits moves its finding, hence a few rounds.

    Raises:
        ExportError: for a finding outside ``scripts/``, or one still there after ``rounds`` rounds.
    """
    waived: list[str] = []
    scripts, root = (out / SCRIPTS).resolve(), out.resolve()
    for _ in range(rounds):
        findings = _flake8_findings(out)
        if not findings:
            return waived
        for path, lines in sorted(findings.items()):
            where = ", ".join(f"{path.relative_to(root)}:{row} {','.join(sorted(c))}" for row, c in lines.items())
            if scripts not in path.parents:
                raise ExportError(f"the export fails the model zoo's flake8 check: {where}")
            try:
                waived_source = waive_lint(path.read_text(encoding="utf-8"), lines)
            except ExportError as err:
                raise ExportError(f"{path.relative_to(root)}: {err}") from err
            write_text_atomic(path, format_python(waived_source))
            waived.append(where)
    left = _flake8_findings(out)
    if left:
        raise ExportError(f"the export still fails the model zoo's flake8 check after waiving: {left}")
    return waived


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


#: The sections of the model zoo's README template (``docs/readme_template.md``), in its order, each with the
#: model-card sections (``##`` titles, lower case) that fill it; the first fills its body, the others follow as
#: ``#### **Title**`` subsections, as the template asks for additional sections. A model-card section named nowhere
#: here stops the export, so that nothing is dropped unnoticed.
README_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Model Description", ("model overview", "what the model does", "training configuration")),
    ("Data", ("data",)),
    ("Performance", ("performance",)),
    ("Additional Usage Steps", ("commands",)),
    ("System Configuration", ("hardware and training time",)),
    ("Limitations", ("license", "licence")),
    ("References", ("references",)),
)
#: Template sections without "(Optional)": always written.
_README_REQUIRED = frozenset({"Model Description", "Data", "Performance", "System Configuration"})
_FENCE = re.compile(r"^\s*(```|~~~)")
_COMMENT = re.compile(r"^\s*<!--.*-->\s*$")
_LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)(\s+\"[^\"]*\")?\)")
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#)", re.I)


def _card_sections(text: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """A model card's preamble (before the first ``##``) and its ``##`` sections: lower-case title -> (title, body).

    Headings inside code blocks are text; ``###`` headings become ``#### **...**`` (the template's subsection style);
    one-line HTML comments are left out.
    """
    preamble: list[str] = []
    sections: dict[str, tuple[str, list[str]]] = {}
    current, fenced = preamble, False
    for line in text.splitlines():
        fenced ^= bool(_FENCE.match(line))
        if not fenced and line.startswith("## "):
            title = line[3:].strip()
            current = []
            sections[title.lower()] = (title, current)
        elif not fenced and re.match(r"^#{3,} ", line):
            current.append(f"#### **{line.lstrip('#').strip()}**")
        elif not fenced and (line.startswith("# ") or _COMMENT.match(line)):
            continue  # the title comes from the metadata; comments are markup of this repository's docs test
        else:
            current.append(line)
    return "\n".join(preamble).strip(), {k: (t, "\n".join(b).strip()) for k, (t, b) in sections.items()}


def unlink_outside(text: str, readme: Path, root: Path) -> str:
    """``text`` (Markdown at ``readme``) with every relative link whose target is not a file or folder inside ``root``
    replaced by its text; web links and in-page anchors are kept."""

    def replace(match: re.Match) -> str:
        target = match.group(3).split("#")[0]
        if _EXTERNAL.match(match.group(3)):
            return match.group(0)
        resolved = (readme.parent / target).resolve()
        inside = resolved == root or root in resolved.parents
        return match.group(0) if inside and resolved.exists() else match.group(2)

    return _LINK.sub(replace, text)


def _weights_note(shipped: Sequence[str]) -> str:
    """README text on the shipped weight files (paths in the bundle)."""
    text = (
        f"#### **Trained weights**\nThis copy ships `{WEIGHTS_PATH}`, the network's state dict, listed with its "
        "SHA-256 in `large_files.yml`; fetch it from the bundle folder with\n```bash\n"
        "python -m monai.bundle download_large_files --bundle_path .\n```"
    )
    if IMPORTANCE_PATH in shipped:
        text += f"\n`{IMPORTANCE_PATH}` beside it holds the learned modality importance (`w`, `p = softmax(w)`)."
    return text


def _readme_tags(meta: Mapping[str, Any]) -> list[str]:
    """Tags of the README from the metadata: the input modalities, the task kind and the method."""
    formats = meta.get("network_data_format", {})
    modalities = [v.get("modality") for v in formats.get("inputs", {}).values() if v.get("modality")]
    kinds = {"segmentation": "Segmentation", "classes": "Classification", "labels": "Segmentation"}
    outputs = [kinds.get(v.get("format", "")) for v in formats.get("outputs", {}).values()]
    tags = list(dict.fromkeys([*modalities, *(o for o in outputs if o)]))
    return tags + ["Multi-modal", "Missing modalities", "Knowledge distillation", "MCKD"]


def render_readme(
    card: str, meta: Mapping[str, Any], bundle_name: str, unit_tests: Sequence[str], shipped: Sequence[str] = ()
) -> str:
    """The model card ``card`` in the shape of the model zoo's README template (:data:`README_SECTIONS`).

    Title, authors and tags come from the metadata, the limitations open with its ``intended_use``; the usage steps
    end with the shipped weight files ``shipped`` (paths in the bundle) and the zoo's unit-test commands for
    ``unit_tests`` (file names). Dotted paths of the vendored packages are
    pointed at ``scripts.``; links are left for :func:`unlink_outside`.

    Raises:
        ExportError: when the card has a ``##`` section that no template section takes.
    """
    preamble, sections = _card_sections(card)
    taken = {name for _, names in README_SECTIONS for name in names}
    unknown = [title for key, (title, _) in sections.items() if key not in taken]
    if unknown:
        raise ExportError(
            f"the model card's sections {unknown} have no place in the zoo README; add them to README_SECTIONS."
        )
    lines = [f"# {meta.get('name', bundle_name)}", "", "### **Authors**", str(meta.get("authors", "")), ""]
    lines += ["### **Tags**", ", ".join(_readme_tags(meta)), ""]
    for heading, names in README_SECTIONS:
        parts = [preamble] if heading == "Model Description" and preamble else []
        if heading == "Limitations" and meta.get("intended_use"):
            parts.append(str(meta["intended_use"]))
        for name in names:
            if name in sections:
                title, body = sections[name]
                parts.append(body if not parts and heading != "Limitations" else f"#### **{title}**\n{body}")
        if heading == "Additional Usage Steps" and shipped:
            parts.append(_weights_note(shipped))
        if heading == "Additional Usage Steps" and unit_tests:
            commands = [f"python ci/unit_tests/runner.py --b {bundle_name}"]
            if any(name.endswith("_dist.py") for name in unit_tests):
                commands.append(f"torchrun ci/unit_tests/runner.py --b {bundle_name} --dist True")
            parts.append(
                "#### **Unit tests**\nIn the model zoo (this bundle's `ci/unit_tests/` files copied to the zoo's "
                "`ci/unit_tests/`), from the zoo's root:\n```bash\n" + "\n".join(commands) + "\n```"
            )
        if parts or heading in _README_REQUIRED:
            lines += [f"## **{heading}**", "\n\n".join(parts) or "Not stated in the model card.", ""]
    text = rewrite_config_text("\n".join(lines).rstrip() + "\n")
    # the bundle's own scripts import the vendored code as ``scripts.mckd``: run them as modules of the bundle root
    return re.sub(
        rf"python {SCRIPTS}/([\w/]+)\.py\b", lambda m: f"python -m {SCRIPTS}.{m.group(1).replace('/', '.')}", text
    )


def _copy_bundle(bundle: Path, out: Path) -> None:
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == bundle
        return {n for n in names if n in ("__pycache__", ".gitignore") or (top and n in _SKIPPED_NAMES)}

    shutil.copytree(bundle, out, ignore=ignore)


def _check_out(bundle: Path, out: Path, weights: str | Path | None, weights_url: str | None) -> None:
    """Refuse an export folder inside the bundle or one that holds files; remove an empty one (the export is renamed
    into place) and create its parent folders.

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
    out.parent.mkdir(parents=True, exist_ok=True)


def _own_scripts(bundle: Path) -> dict[Path, str]:
    """The bundle's own Python files under ``scripts/`` (relative path -> source), which the export keeps.

    Raises:
        ExportError: for a file where the vendored packages go (``scripts/mckd``, ``scripts/data_prep``).
    """
    folder = bundle / SCRIPTS
    files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts) if folder.is_dir() else []
    own = {p.relative_to(folder): p.read_text(encoding="utf-8") for p in files}
    clash = [str(path) for path in own if path.parts[0] in VENDORED_PACKAGES]
    if clash:
        raise ExportError(f"the bundle's {SCRIPTS}/ holds {clash}, where the export vendors {VENDORED_PACKAGES}.")
    return own


def _vendored_imports(sources: Iterable[str]) -> set[str]:
    """Modules of the vendored packages that ``sources`` import absolutely (importable names)."""
    found = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n.split(".")[0] in VENDORED_PACKAGES and _module_file(n) is not None}
    return found


def _vendor(closure: Mapping[str, Path], own: Mapping[Path, str], out: Path) -> list[str]:
    """Write the rewritten, formatted modules of ``closure`` and the bundle's own scripts ``own`` under
    ``out/scripts``; return the sources of both."""
    sources = []
    for name, path in closure.items():
        parts = name.split(".")
        relative = Path(*parts, "__init__.py") if path.name == "__init__.py" else Path(*parts).with_suffix(".py")
        source = path.read_text(encoding="utf-8")
        sources.append(source)
        write_text_atomic(out / SCRIPTS / relative, format_python(rewrite_imports(source)))
    for relative, source in own.items():
        sources.append(source)
        write_text_atomic(out / SCRIPTS / relative, format_python(rewrite_imports(source)))
    if Path("__init__.py") not in own:
        docstring = (
            f'"""Custom code of this bundle: {", ".join(VENDORED_PACKAGES)} modules vendored by mckd.bundle_export."""'
        )
        write_text_atomic(out / SCRIPTS / "__init__.py", format_python(docstring + "\n"))
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


def deployable_weights(weights: Path, inference_text: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The network state dict and learned importance to ship, from a weights file, checked against the exported
    inference config.

    ``weights`` is either the network's plain state dict (``models/model.pt`` as training writes it) or a checkpoint
    with a ``model`` entry (``model_final.pt``, or ``model.pt`` of earlier releases). The importance (state dict of
    ``ModalityImportance``) is the checkpoint's ``modality_weights`` entry, else :data:`IMPORTANCE_FILENAME` beside
    ``weights`` when it exists, else None.

    Raises:
        ExportError: when a file cannot be read, the network does not load strictly into the config's ``network_def``,
            or the importance is not a ``ModalityImportance`` of the config's number of modalities.
    """
    from monai.bundle import ConfigParser  # noqa: PLC0415 - needed only when weights are shipped

    from mckd.distillation import ModalityImportance  # noqa: PLC0415

    parser = ConfigParser(json.loads(inference_text))
    try:
        checkpoint = load_objects({"model": parser.get_parsed_content("network_def")}, weights, map_location="cpu")
    except CheckpointError as err:
        raise ExportError(f"the weights do not fit the exported inference config's network_def: {err}") from err
    beside = weights.parent / IMPORTANCE_FILENAME
    try:
        importance = checkpoint.get("modality_weights")
        if importance is None and beside.is_file():
            importance = load_checkpoint(beside, map_location="cpu")
        if importance is None:
            return checkpoint["model"], None
        source = weights if "modality_weights" in checkpoint else beside
        size = parser.get_parsed_content("num_modalities") if "num_modalities" in parser else None
        w = importance.get("w") if isinstance(importance, Mapping) else None
        if not isinstance(w, torch.Tensor) or (size is not None and w.numel() != size):
            raise ExportError(f"'{source}' is not the importance of a {size or 'any'}-modality model (no fitting 'w').")
        load_objects({"modality_weights": ModalityImportance(w.numel())}, source, map_location="cpu")
    except CheckpointError as err:
        raise ExportError(f"the learned importance cannot be shipped: {err}") from err
    return checkpoint["model"], dict(importance)


def _ship_weights(state: Mapping[str, Any], importance: Mapping[str, Any] | None, url: str, out: Path) -> None:
    """Write the network's plain state dict to ``out/models/model.pt`` (listed in ``out/large_files.yml`` with its
    SHA-256) and the learned importance, when there is one, to ``out/models/modality_weights.pt``.

    The importance (one float per modality, under 1 KB) ships inside the bundle rather than as a large file: it needs no
    download address of its own and always arrives with the bundle's configs that read it.
    """
    target = out / WEIGHTS_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as partial:
        torch.save(dict(state), partial)
    if importance is not None:
        with atomic_path(out / IMPORTANCE_PATH) as partial:
            torch.save(dict(importance), partial)
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


def _write_unit_tests(bundle_name: str, out: Path) -> list[Path]:
    """Write this package's model-zoo style unit tests for ``bundle_name`` (``test_<bundle>.py`` and the multi-GPU
    ``test_<bundle>_dist.py``, those it has) into ``out/ci/unit_tests``; return the written files."""
    written = []
    for name in (f"test_{bundle_name}.py", f"test_{bundle_name}_dist.py"):
        template = importlib.resources.files("mckd") / "templates" / name
        if template.is_file():
            target = out / "ci" / "unit_tests" / name
            write_text_atomic(target, format_python(template.read_text(encoding="utf-8")))
            written.append(target)
    return written


def _write_readme(
    bundle: Path, out: Path, meta: Mapping[str, Any], unit_tests: Sequence[str], shipped: Sequence[str]
) -> None:
    """Write ``out/docs/README.md``: the bundle's model card in the zoo template's shape, no link leaving the bundle.

    Raises:
        ExportError: when the bundle has no ``docs/README.md`` or the card does not fit the template.
    """
    card = bundle / "docs" / "README.md"
    if not card.is_file():
        raise ExportError(f"the bundle has no model card {card}; the model zoo needs docs/README.md.")
    readme = out / "docs" / "README.md"
    text = render_readme(card.read_text(encoding="utf-8"), meta, bundle.name, unit_tests, shipped)
    write_text_atomic(readme, unlink_outside(text, readme, out.resolve()))


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
    own = _own_scripts(bundle)
    closure = import_closure(
        config_module_references(texts.values()) | set(extra_modules) | _vendored_imports(own.values())
    )
    shipped = deployable_weights(Path(weights), inference or texts["inference.json"]) if weights is not None else None

    # built in a hidden sibling folder and renamed at the end: a failed export leaves no half-written bundle
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent)) / out.name
    try:
        _copy_bundle(bundle, staging)
        sources = _vendor(closure, own, staging)
        configs = _write_configs(texts, staging, inference)
        # free-text fields name commands too (``python -m data_prep.brats``)
        metadata = rewrite_config_text(json.dumps(meta, indent=4)) + "\n"
        write_text_atomic(staging / "configs" / "metadata.json", metadata)
        if shipped is not None:
            _ship_weights(*shipped, str(weights_url), staging)
        unit_tests = _write_unit_tests(bundle.name, staging)
        shipped_files = [p for p in (WEIGHTS_PATH, IMPORTANCE_PATH) if (staging / p).is_file()]
        _write_readme(bundle, staging, meta, [p.name for p in unit_tests], shipped_files)
        waived = _lint_vendored(staging)
        staging.rename(out)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)
    result = ExportResult(out=out, modules=list(closure), configs=configs, waived=waived)
    result.unit_tests = [out / p.relative_to(staging) for p in unit_tests]
    result.unit_test = result.unit_tests[0] if result.unit_tests else None
    for where in waived:
        logger.warning("vendored code waived from the zoo's flake8 plugins (# noqa): %s", where)
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
