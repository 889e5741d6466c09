"""Checks of what a user hands a bundle run on its command line: override keys and modality subsets.

MONAI's ``python -m monai.bundle run`` merges every ``--key value`` pair into the config: a misspelt key
(``--output_convension brats2023``) only adds an entry nobody reads, and the run goes on with the default. Its
command line is parsed by ``fire``, which turns the JSON words of ``--eval_subsets "[[true,false,true,false]]"`` into
the strings ``'true'`` / ``'false'`` (all truthy). Each check here turns such input into a message at start that
names the key or the value (datalist items are checked by :func:`mckd.brats.datalist.load_datalist`):

- :func:`check_command_line` (first entry of every bundle config's ``initialize``): every override key of the running
  ``python -m monai.bundle run`` command line (``--key``, ``--key=value``, and the keys of ``--args_file``) must name
  an entry of the merged ``--config_file`` list, or a new argument inside an existing component (e.g.
  ``--network_def#activation_checkpointing true``); otherwise the run stops (exit status 2) naming the key and the
  closest existing ones. MONAI keeps no record of the overrides it merged, so the check reads ``sys.argv`` and is
  active only in a ``monai.bundle run`` process (not when a ``ConfigWorkflow`` is built from Python). It also makes
  the foreseeable errors of :data:`BRIEF_ERRORS` (a bad checkpoint, datalist, setting or case) end the run with their
  message as the one last line on stderr, instead of MONAI's traceback that ends in ``Failed to evaluate
  ConfigExpression`` (exit status 1 either way; ``MCKD_TRACEBACK=1`` prints the traceback as well). Log records of
  such an error lose their traceback too (MONAI's ``StatsHandler`` logs every engine exception with
  ``logger.exception``), so the message stays the last line; any other error keeps its full traceback.
- :func:`parse_subsets`: the documented forms of ``eval_subsets``, anything else refused.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.bundle import ConfigParser
from monai.bundle.scripts import run as bundle_run
from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

from mckd.avmnist.data import AVMNISTDataError
from mckd.brats.cases import CaseError
from mckd.brats.datalist import DatalistError
from mckd.checkpoints import CheckpointError, FolderInUseError
from mckd.divergence import TrainingDivergedError
from mckd.fileio import DiskFullError, InputOverwriteError
from mckd.settings import SettingValueError, check_settings

__all__ = [
    "SettingError",
    "BRIEF_ERRORS",
    "RUN_ARGUMENTS",
    "parse_command_line",
    "unknown_overrides",
    "check_overrides",
    "check_command_line",
    "parse_subsets",
    "error_in_chain",
]

logger = logging.getLogger(__name__)

#: Arguments of ``monai.bundle run`` itself; every other ``--key`` is a config override.
RUN_ARGUMENTS: frozenset[str] = frozenset(inspect.signature(bundle_run).parameters) - {"override"}
#: What ``fire`` treats as a flag (``--key``, ``-k``), so that the next token is not a value.
_FLAG = re.compile(r"^(--|-[a-zA-Z])")
#: Booleans as fire passes JSON words on (strings) and as JSON / Python give them.
_BOOLEAN_WORDS = {"true": True, "false": False}
_NONE_WORDS = {"null", "none"}


class SettingError(ValueError):
    """A bundle setting (e.g. ``eval_subsets``) has a value the bundle cannot use; the message names it."""


#: Errors whose message says all a user needs: reported as one line by :func:`check_command_line`.
BRIEF_ERRORS: tuple[type[BaseException], ...] = (
    CheckpointError, DatalistError, SettingError, CaseError, TrainingDivergedError, AVMNISTDataError,
    FolderInUseError, DiskFullError, InputOverwriteError,
)


def _is_bundle_run(argv: Sequence[str]) -> bool:
    """Whether ``argv`` is that of ``python -m monai.bundle run ...`` (also under ``torchrun``)."""
    return len(argv) >= 2 and Path(argv[0]).parts[-3:] == ("monai", "bundle", "__main__.py") and argv[1] == "run"


def parse_command_line(tokens: Sequence[str]) -> tuple[list[Any], dict[str, Any]]:
    """Positional and named arguments of a ``fire`` command line, parsed with fire's rules.

    ``--key value``, ``--key=value`` and a bare ``--key`` (True) are named arguments (hyphens in a key become
    underscores); values are parsed with ``fire.parser.DefaultParseValue``; a bare ``--`` ends fire's arguments.
    """
    from fire.parser import DefaultParseValue

    positional: list[Any] = []
    named: dict[str, Any] = {}
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "--":
            break
        if _FLAG.match(token):
            key, has_value, value = token.lstrip("-").partition("=")
            if not has_value:
                bare = index + 1 == len(tokens) or bool(_FLAG.match(tokens[index + 1]))
                value = "True" if bare else tokens[index + 1]
                index += 0 if bare else 1
            named[key.replace("-", "_")] = DefaultParseValue(value)
        else:
            positional.append(DefaultParseValue(token))
        index += 1
    return positional, named


def _tracking_keys(tracking: Any) -> set[str]:
    """Override keys that a ``--tracking`` setting documents (e.g. ``tracking_uri`` for MLflow)."""
    if tracking is None:
        return set()
    settings = DEFAULT_EXP_MGMT_SETTINGS.get(tracking) if isinstance(tracking, str) else None
    if settings is None:
        settings = ConfigParser.load_config_files(tracking)
    return set(settings.get("configs", {}))


def _suggestion(config: ConfigParser, key: str) -> str:
    """``; did you mean '--a' or '--b'?``: ``key`` with its first unknown part replaced by the closest existing ones."""
    parts = key.split("#")
    node: Any = config.get()
    for depth, part in enumerate(parts):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            break
    names = [str(name) for name in node] if isinstance(node, Mapping) else []
    close = difflib.get_close_matches(part, names, n=3, cutoff=0.6)
    if not close:
        return ""
    options = " or ".join("'--" + "#".join([*parts[:depth], name, *parts[depth + 1:]]) + "'" for name in close)
    return f"; did you mean {options}?"


def unknown_overrides(config: ConfigParser, keys: Sequence[str], allowed: Sequence[str] = ()) -> dict[str, str]:
    """The keys of ``keys`` that no entry of ``config`` defines, each with a suggestion of close existing keys.

    A key is known when it is in ``allowed``, names an existing entry (``a#b#0#c`` paths included) or the metadata
    (``_meta_#...``), or adds a new argument to an existing dictionary (``network_def#activation_checkpointing``).
    """
    unknown = {}
    for key in keys:
        parent = key.rpartition("#")[0]
        if key in allowed or key.startswith("_meta_") or key in config:
            continue
        if parent and parent in config and isinstance(config[parent], Mapping):
            continue
        unknown[key] = _suggestion(config, key)
    return unknown


def check_overrides(argv: Sequence[str]) -> None:
    """Stop a ``python -m monai.bundle run`` whose command line overrides a key that no config defines, or whose
    settings (configs merged with the overrides) hold a value :func:`mckd.settings.check_settings` refuses.

    Does nothing for any other command line.

    Args:
        argv: the command line; None uses ``sys.argv``.

    Raises:
        SystemExit: with status 2 after logging, for each unknown key, ``unknown override '--key': no entry of the
            configs <files> is called 'key'; did you mean '--close_key'?``, or the one line of the refused setting.
    """
    if not _is_bundle_run(argv):
        return
    _, named = parse_command_line(argv[2:])
    from_file = ConfigParser.load_config_file(named["args_file"]) if named.get("args_file") else {}
    arguments = {**from_file, **named}
    config_files = arguments.get("config_file")
    if not config_files:
        return
    config = ConfigParser(ConfigParser.load_config_files(config_files))
    keys = [key for key in arguments if key not in RUN_ARGUMENTS]
    unknown = unknown_overrides(config, keys, sorted(_tracking_keys(arguments.get("tracking"))))
    if unknown:
        files = ", ".join(str(f) for f in ([config_files] if isinstance(config_files, str) else config_files))
        for key, suggestion in unknown.items():
            logger.error("unknown override '--%s': no entry of the configs %s is called '%s'%s", key, files, key,
                         suggestion or " (the model card lists the options)")
        raise SystemExit(2)
    try:
        check_settings({**config.get(), **{key: arguments[key] for key in keys}})
    except SettingValueError as err:
        logger.error("%s", err)
        raise SystemExit(2) from None


def error_in_chain(error: BaseException | None, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first error of ``types`` in the cause/context chain of ``error``.

    MONAI re-raises a transform's or a config component's error as the cause of a ``RuntimeError``; the user's
    error is found behind it.
    """
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, types):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _report_briefly(kind: type[BaseException], error: BaseException, trace: Any, previous: Any) -> None:
    """``sys.excepthook``: one line for a foreseeable error (after the traceback with ``MCKD_TRACEBACK=1``)."""
    brief = error_in_chain(error, BRIEF_ERRORS)
    if brief is None or os.environ.get("MCKD_TRACEBACK"):
        previous(kind, error, trace)
    if brief is not None:
        sys.stderr.write(f"{type(brief).__name__}: {brief}\n")


def _without_brief_tracebacks(factory: Any) -> Any:
    """A log record factory that drops the traceback of a record logging a foreseeable error (:data:`BRIEF_ERRORS`).

    MONAI's ``StatsHandler.exception_raised`` logs every engine exception with ``logger.exception`` (and ignite logs
    ``Engine run is terminating due to exception: <message>``, one line): for a refused checkpoint or a bad case the
    traceback would precede the one line of :func:`_report_briefly`. Records of other errors are left as they are.
    """

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and error_in_chain(error, BRIEF_ERRORS) and not os.environ.get("MCKD_TRACEBACK"):
            record.exc_info, record.exc_text = None, None
        return record

    make_record.brief = True  # type: ignore[attr-defined]
    return make_record


def check_command_line(argv: Sequence[str] | None = None) -> None:
    """In a ``python -m monai.bundle run`` process: check the override keys and report foreseeable errors briefly.

    The first entry of each bundle config's ``initialize`` list:
    ``{"_target_": "mckd.bundle_checks.check_command_line"}``.
    Does nothing in any other process (e.g. a ``ConfigWorkflow`` built from Python, whose overrides are not recorded
    and whose caller handles its own errors).

    Args:
        argv: the command line; None uses ``sys.argv``.

    Raises:
        SystemExit: see :func:`check_overrides`.
    """
    argv = sys.argv if argv is None else argv
    if not _is_bundle_run(argv):
        return
    check_overrides(argv)
    if getattr(sys.excepthook, "func", None) is not _report_briefly:
        sys.excepthook = functools.partial(_report_briefly, previous=sys.excepthook)
    if not getattr(logging.getLogRecordFactory(), "brief", False):
        logging.setLogRecordFactory(_without_brief_tracebacks(logging.getLogRecordFactory()))


def _subset_from_names(names: Sequence[str], modality_names: Sequence[str]) -> tuple[bool, ...]:
    lookup = {name.lower(): index for index, name in enumerate(modality_names)}
    unknown = [name for name in names if name.lower() not in lookup]
    if unknown:
        raise ValueError(f"unknown modality name(s) {', '.join(unknown)}")
    chosen = {lookup[name.lower()] for name in names}
    return tuple(index in chosen for index in range(len(modality_names)))


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _BOOLEAN_WORDS:
        return _BOOLEAN_WORDS[value.lower()]
    raise ValueError(f"{value!r} is neither true/false nor a modality name")


def _one_subset(subset: Any, modality_names: Sequence[str]) -> tuple[bool, ...]:
    """One subset from M booleans, a list of modality names or one ``+``-joined name string (``FLAIR+T1ce``)."""
    if isinstance(subset, str):
        return _subset_from_names(subset.split("+"), modality_names)
    if not isinstance(subset, (list, tuple)) or not subset:
        raise ValueError("it is not a list")
    if all(isinstance(x, str) and x.lower() not in _BOOLEAN_WORDS for x in subset):
        return _subset_from_names(subset, modality_names)
    if len(subset) != len(modality_names):
        raise ValueError(f"it has {len(subset)} entries, expected one per modality ({len(modality_names)})")
    return tuple(_flag(x) for x in subset)


def parse_subsets(value: Any, modality_names: Sequence[str]) -> list[tuple[bool, ...]] | None:
    """The modality subsets an ``eval_subsets`` setting names, in its order; None for all subsets.

    Accepted forms (from the command line, an ``--args_file`` or a config):

    - ``null`` / None: every non-empty subset;
    - a list of subsets, each one boolean per modality in the bundle's order (``[[true,false,true,false]]``; fire's
      strings ``'true'`` / ``'false'``, JSON booleans and 0 / 1 alike), a list of modality names
      (``[[FLAIR,T1ce],[T2]]``, any case) or a ``+``-joined name string as the reports write them (``["FLAIR+T1ce"]``);
    - a string holding one of these as JSON (``'[[true,false,true,false]]'``).

    Args:
        value: the setting.
        modality_names: the modalities in channel order (the bundle's ``modality_names``).

    Raises:
        SettingError: naming the offending subset and listing the accepted forms, for anything else, an empty subset
            or the same subset twice.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS):
        return None
    order = ", ".join(modality_names)
    forms = (
        f"accepted: null (all subsets), [[true,false,true,false]] (one boolean per modality in the order {order}), "
        f"[[{modality_names[0]},{modality_names[-1]}]] (modality names) or ['{modality_names[0]}+{modality_names[-1]}']"
    )
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise SettingError(f"eval_subsets {value!r} is not a list of modality subsets; {forms}.") from None
    if not isinstance(value, (list, tuple)) or not value:
        raise SettingError(f"eval_subsets {value!r} is not a non-empty list of modality subsets; {forms}.")
    subsets: list[tuple[bool, ...]] = []
    for index, subset in enumerate(value):
        try:
            parsed = _one_subset(subset, modality_names)
        except ValueError as err:
            raise SettingError(f"eval_subsets: subset {index} ({subset!r}) cannot be used: {err}; {forms}.") from None
        if not any(parsed):
            raise SettingError(f"eval_subsets: subset {index} ({subset!r}) selects no modality; {forms}.")
        if parsed in subsets:
            raise SettingError(f"eval_subsets: subset {index} ({subset!r}) is listed twice.")
        subsets.append(parsed)
    return subsets
