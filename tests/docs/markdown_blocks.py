"""Sybil set-up of the docs test: which parsers read the Markdown, how a ``bash`` block runs, and the pytest items.

See ``tests/docs/workspace.py`` for the rules (workspace, moved paths, the ``docs-test`` directive).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import pytest
from sybil import Document, Example, Region, Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser
from sybil.parsers.markdown.codeblock import CodeBlockParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

from tests.docs.workspace import MOVED_PREFIXES, NAMESPACE, REPO, make_workspace, shell_env

#: Languages a fenced block may have: run (bash, python) or data/synopsis (json, text). A fence without a language
#: is refused, so that no command block escapes the test by its spelling.
RUN_LANGUAGES = ("bash", "python")
DATA_LANGUAGES = ("json", "text")

_PREFIX = re.compile(r"(?<![\w./~$-])(" + "|".join(re.escape(p) for p in MOVED_PREFIXES) + ")")
_COMMENT = re.compile(r"\s#.*$")


class DocsTestDirectiveParser:
    """``<!-- docs-test: key=value, ... -->``: settings of the next command block, kept in the document's namespace."""

    def __init__(self) -> None:
        self.lexer = DirectiveInHTMLCommentLexer(directive="docs-test")

    def __call__(self, document: Document) -> Iterable[Region]:
        for lexed in self.lexer(document):
            yield Region(lexed.start, lexed.end, lexed.lexemes["arguments"], self.evaluate)

    @staticmethod
    def evaluate(example: Example) -> None:
        settings = eval(f"dict({example.parsed})", {"__builtins__": {"dict": dict}}, dict(NAMESPACE))  # noqa: S307 (our docs)
        unknown = set(settings) - {"cwd", "append", "replace", "model", "requires", "timeout", "prepare"}
        assert not unknown, f"unknown docs-test settings {sorted(unknown)}"
        example.namespace["_next"] = settings


def _workspace(example: Example) -> Path:
    return example.namespace["_workspace"]


def _prepare(example: Example, settings: dict[str, Any], cwd: Path) -> None:
    if settings.get("model"):
        models = cwd / "models"
        models.mkdir(exist_ok=True)
        for source in example.namespace["_tiny_model"]().iterdir():
            if not (models / source.name).exists():
                shutil.copy2(source, models / source.name)
    for program in settings.get("requires", ()):
        if shutil.which(program) is None:
            pytest.skip(f"{example.path}:{example.line}: needs {program} (apt-get install -y espeak-ng sox)")
    prepare = settings.get("prepare")
    if prepare:
        PREPARE[prepare](cwd)


def expand(script: str, settings: dict[str, Any], workspace: Path) -> str:
    """The block as it runs: continuation lines joined, ``replace``, moved paths, ``append`` per command line."""
    script = re.sub(r"[ \t]*\\\n[ \t]*", " ", script)
    for old, new in settings.get("replace", {}).items():
        assert old in script, f"docs-test replace: {old!r} is not in the block"
        script = script.replace(old, new)
    script = _PREFIX.sub(lambda m: str(workspace) + m.group(1), script)
    lines = []
    for line in script.splitlines():
        for needle, extra in settings.get("append", {}).items():
            command = _COMMENT.sub("", line)
            if needle in command:
                line = f"{command.rstrip()} {extra}"
                break
        lines.append(line)
    return "\n".join(lines) + "\n"


def run_shell_block(example: Example) -> None:
    """Run a ``bash`` block with ``bash -e -o pipefail`` in the document's workspace; fail on a non-zero status."""
    settings = example.namespace.pop("_next", {})
    workspace = _workspace(example)
    cwd = workspace / settings.get("cwd", ".")
    _prepare(example, settings, cwd)
    script = expand(str(example.parsed), settings, workspace)
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script], cwd=cwd, env=shell_env(), capture_output=True, text=True,
        timeout=settings.get("timeout", 900),
    )
    assert result.returncode == 0, (
        f"{example.path}:{example.line}: exit status {result.returncode}\n--- ran in {cwd}:\n{script}\n--- stdout:\n"
        f"{result.stdout[-4000:]}\n--- stderr:\n{result.stderr[-6000:]}"
    )


class _PythonInWorkspace(PythonCodeBlockParser):
    """Sybil's Python code blocks, evaluated with the workspace (or the directive's ``cwd``) as working folder."""

    def __call__(self, document: Document) -> Iterable[Region]:
        for region in super().__call__(document):
            inner = region.evaluator

            def evaluate(example: Example, inner=inner) -> Any:
                settings = example.namespace.pop("_next", {})
                cwd = _workspace(example) / settings.get("cwd", ".")
                _prepare(example, settings, cwd)
                previous = Path.cwd()
                os.chdir(cwd)
                try:
                    return inner(example)
                finally:
                    os.chdir(previous)

            region.evaluator = evaluate
            yield region


SYBIL = Sybil(
    parsers=[
        DocsTestDirectiveParser(),
        SkipParser(),
        CodeBlockParser(language="bash", evaluator=run_shell_block),
        _PythonInWorkspace(),
    ],
    path=str(REPO),
)


def fence_languages(path: Path) -> list[tuple[int, str]]:
    """(line, language) of every fenced block of a Markdown file, read by Sybil's fenced-block lexer."""
    document = Document(path.read_text(encoding="utf-8"), str(path))
    lexer = FencedCodeBlockLexer(language=r".*")
    return [(document.text.count("\n", 0, r.start) + 1, r.lexemes["language"]) for r in lexer(document)]


def examples(*relative_paths: str) -> list[Any]:
    """pytest parameters, one per Sybil example of the documents (in document order), with readable ids."""
    params = []
    for relative in relative_paths:
        document = SYBIL.parse(REPO / relative)
        for example in document.examples():
            params.append(pytest.param(example, id=f"{relative}:{example.line}"))
    return params


def evaluate(example: Example, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> None:
    """Evaluate one example; the first example of a document creates its workspace."""
    namespace = example.namespace
    if "_workspace" not in namespace:
        name = re.sub(r"\W+", "_", str(Path(example.path).relative_to(REPO)))
        namespace["_workspace"] = make_workspace(tmp_path_factory.mktemp(f"docs_{name}"))
    namespace["_tiny_model"] = lambda: request.getfixturevalue("tiny_brats_model")
    example.evaluate()


def _brats19_case(cwd: Path) -> None:
    """The per-modality files of one BraTS 2019 case without T1 (docs/monailabel.md), and its ``studies/`` folder."""
    from data_prep.synthetic_brats import write_dataset

    written = cwd / ".brats19"
    write_dataset(written, 1, "brats2018", (32, 32, 32), seed=7)
    for path in written.rglob("*.nii.gz"):
        modality = path.name.rsplit("_", 1)[1]
        if modality != "t1.nii.gz":
            shutil.copy2(path, cwd / f"BraTS19_2013_2_1_{modality}")
    (cwd / "studies").mkdir(exist_ok=True)


PREPARE = {"brats19_case": _brats19_case}
