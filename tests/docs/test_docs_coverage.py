"""The docs name every setting a user can give: the bundles' top-level config keys and every command-line option.

And every fenced block of the docs is a command block the docs test runs (or skips with a reason) or a data block:
a fence without a language, or with another one, would escape the docs test.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import runpy
import sys

import pytest

from tests.docs.markdown_blocks import DATA_LANGUAGES, RUN_LANGUAGES, fence_languages
from tests.docs.workspace import AVMNIST, BRATS, REPO

GENERAL_DOCS = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md"))]
MODEL_CARDS = {name: f"bundle/{name}/docs/README.md" for name in (BRATS, AVMNIST)}
ALL_DOCS = GENERAL_DOCS + list(MODEL_CARDS.values())

#: Top-level entries that are not settings: derived from the package's conventions (changing them would contradict
#: the data), the built network, and MONAI's run-id alias.
NOT_SETTINGS = {
    "imports", "network", "training", "num_modalities", "num_regions", "num_classes", "modality_names",
    "region_names", "is_not_rank0",
}


def _text(paths: list[str]) -> str:
    return "\n".join((REPO / p).read_text(encoding="utf-8") for p in paths)


def _is_setting(key: str, value: object) -> bool:
    """A top-level key a user sets with ``--key value``: a scalar or a list of scalars, not a component or a list of
    expressions to run, not an overlay's path into another entry (``a#b``) or a merge (``+key``)."""
    if key.startswith(("_", "+")) or "#" in key or key in NOT_SETTINGS:
        return False
    scalar = (str, int, float, bool, type(None))
    if isinstance(value, str) and value.startswith("%"):
        return False
    if isinstance(value, list):  # an empty list is a workflow entry with nothing to run (e.g. "finalize": [])
        return bool(value) and all(isinstance(v, scalar) for v in value) and not any(
            str(v).startswith(("$", "@")) for v in value
        )
    return isinstance(value, scalar)


def config_settings() -> list[tuple[str, str, str]]:
    """(bundle, config file, key) of every setting of both bundles' configs (metadata.json is not a workflow config)."""
    found = []
    for bundle in (BRATS, AVMNIST):
        for path in sorted((REPO / "bundle" / bundle / "configs").glob("*.json")):
            if path.name == "metadata.json":
                continue
            for key, value in json.loads(path.read_text()).items():
                if _is_setting(key, value):
                    found.append((bundle, path.name, key))
    return found


@pytest.mark.parametrize(("bundle", "config", "key"), config_settings(), ids=lambda v: str(v))
def test_every_config_setting_is_documented(bundle, config, key):
    docs = _text(GENERAL_DOCS + [MODEL_CARDS[bundle]]) if bundle == BRATS else _text([MODEL_CARDS[bundle]])
    assert f"`{key}`" in docs or f"--{key}" in docs, (
        f"{bundle}/configs/{config}: the setting '{key}' is named nowhere in "
        f"{'the README, docs/ or ' if bundle == BRATS else ''}{MODEL_CARDS[bundle]}; document it (as `{key}` or --{key})."
    )


#: Command-line entry points: (how the docs name it, module or script path). An option counts as documented when it
#: appears within WINDOW characters of a mention of its command.
COMMANDS = [
    ("data_prep.brats", "data_prep.brats"),
    ("data_prep.synthetic_brats", "data_prep.synthetic_brats"),
    ("data_prep.avmnist", "data_prep.avmnist"),
    ("data_prep.demo", "data_prep.demo"),
    ("data_prep.synthetic_published", "data_prep.synthetic_published"),
    ("mckd.brats.protocol_report", "mckd.brats.protocol_report"),
    ("mckd.bundle_export", "mckd.bundle_export"),
    ("mckd.onnx_export", "mckd.onnx_export"),
    ("python -m benchmarks ", "benchmarks.__main__"),
    ("benchmarks.accuracy_study", "benchmarks.accuracy_study"),
    ("benchmarks.gpu_check", "benchmarks.gpu_check"),
    ("benchmarks.importance_probe", "benchmarks.importance_probe"),
    ("benchmarks.modality_scaling", "benchmarks.modality_scaling"),
    ("benchmarks.profile_forward", "benchmarks.profile_forward"),
    ("compare_kd.py", f"bundle/{AVMNIST}/scripts/compare_kd.py"),
]
WINDOW = 1500


class _Parsed(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def command_parser(target: str, monkeypatch: pytest.MonkeyPatch) -> argparse.ArgumentParser:
    """The argparse parser of a command, taken from the running command itself: ``parse_args`` is intercepted."""

    def intercept(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", intercept)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", intercept)
    monkeypatch.setattr(sys, "argv", [target, "--help"])
    try:
        if target.endswith(".py"):
            runpy.run_path(str(REPO / target), run_name="__main__")
        else:
            assert importlib.util.find_spec(target) is not None, target
            runpy.run_module(target, run_name="__main__", alter_sys=True)
    except _Parsed as parsed:
        return parsed.parser
    raise AssertionError(f"{target} did not parse its command line")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    """Every long option of the parser and of its sub-commands, except --help."""
    options = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options += _options(sub)
        else:
            options += [o for o in action.option_strings if o.startswith("--") and o != "--help"]
    return sorted(set(options))


def _near(docs: str, mention: str, option: str) -> bool:
    start = docs.find(mention)
    while start >= 0:
        if option in docs[max(0, start - WINDOW) : start + len(mention) + WINDOW]:
            return True
        start = docs.find(mention, start + 1)
    return False


@pytest.mark.parametrize(("mention", "target"), COMMANDS, ids=[t for _, t in COMMANDS])
def test_every_command_line_option_is_documented_next_to_its_command(mention, target, monkeypatch):
    docs = _text(ALL_DOCS)
    assert mention in docs, f"the command {mention!r} is named nowhere in {', '.join(ALL_DOCS)}"
    options = _options(command_parser(target, monkeypatch))
    assert options, f"{target}: no options found"
    missing = [o for o in options if not _near(docs, mention, o)]
    assert not missing, (
        f"{target}: the options {missing} are named nowhere within {WINDOW} characters of {mention!r} in "
        f"{', '.join(ALL_DOCS)}"
    )


@pytest.mark.parametrize("doc", ALL_DOCS)
def test_every_fenced_block_is_a_command_block_or_data(doc):
    bad = [(line, lang) for line, lang in fence_languages(REPO / doc) if lang not in RUN_LANGUAGES + DATA_LANGUAGES]
    assert not bad, (
        f"{doc}: fenced blocks at lines {[line for line, _ in bad]} have languages {[lang for _, lang in bad]}; use "
        f"{' / '.join(RUN_LANGUAGES)} (run by the docs test, or preceded by <!-- skip: next \"reason\" -->) or "
        f"{' / '.join(DATA_LANGUAGES)}"
    )
