"""Bundle inference over a user's cases: one case that fails never stops the others, and the run ends with a summary.

The inference config wires these pieces around MONAI's dataset, loader and evaluator:

- :func:`find_cases`: the cases under the input path (:func:`mckd.brats.cases.discover_cases`), with the output
  folder checked against every input before anything is written;
- :class:`CaseDataset`: a MONAI ``Dataset`` whose preprocessing failure for one case (a truncated file, NaN voxels, a
  DICOM series with a missing slice, ...) becomes a record of that failure instead of an exception;
- :class:`CaseInferenceEvaluator`: MONAI's ``SupervisedEvaluator`` that passes such records by, and records a case
  whose inference or writing fails, then goes on with the next case;
- :class:`RequireFinited`: a case whose network output is not finite is refused (a case error), never written as
  an all-background map;
- :class:`InferenceSummary`: an ignite handler that logs the summary (written, skipped with the reason), writes it to
  ``<output_dir>/inference_summary.json`` and gives the exit status.

Exit status of ``python -m monai.bundle run --config_file configs/inference.json ...``: :data:`EXIT_OK` (0) every
case written; :data:`EXIT_USAGE` (2) nothing done: the input path does not exist or holds no case, or the output
folder is, or lies inside, an input folder, or is not a writable folder (a file, a read-only folder);
:data:`EXIT_CASES_SKIPPED` (3) at least one case skipped, every other case written (or the summary itself could not be
written). The summary lists the cases whose prediction is on disk as written, whatever failed after it was written.
A crash of the run itself (e.g. a configuration error) is MONAI's status 1.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from monai.config import KeysCollection, PathLike
from monai.data import Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import MapTransform
from monai.utils import IgniteInfo, min_version, optional_import

from mckd.brats.cases import CaseError, Discovery, DiscoveryError, discover_cases
from mckd.brats.conventions import MODALITIES
from mckd.brats.writing import check_output_dir, prediction_path
from mckd.bundle_checks import error_in_chain
from mckd.fileio import check_writable_folder, write_json_atomic

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_CASES_SKIPPED",
    "FAILURE_KEY",
    "find_cases",
    "CaseDataset",
    "CaseInferenceEvaluator",
    "RequireFinited",
    "InferenceSummary",
]

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE, EXIT_CASES_SKIPPED = 0, 2, 3
#: Key of the failure record that :class:`CaseDataset` returns for a case it could not prepare.
FAILURE_KEY = "case_failure"
_SUMMARY_FILE = "inference_summary.json"


def _usage_error(message: str) -> SystemExit:
    """Log ``message`` as the run's one error line; the caller raises the returned ``SystemExit(EXIT_USAGE)``."""
    logger.error("error: %s", message)
    return SystemExit(EXIT_USAGE)


def find_cases(root: PathLike, output_dir: PathLike, num_modalities: int = len(MODALITIES)) -> Discovery:
    """The cases under ``root``, after checking that no output can land over or inside an input.

    Args:
        root: the input path (a folder of cases, one case folder, or one image file).
        output_dir: the folder the predictions go to.
        num_modalities: the channels of a 4D image. Default 4.

    Raises:
        SystemExit: with :data:`EXIT_USAGE` after one logged error line, when ``root`` does not exist or holds no
            case, ``output_dir`` is or lies inside ``root`` or a case's folder, or it cannot be written
            (:func:`mckd.fileio.check_writable_folder`: a file, below a file, read-only, ...).
    """
    try:
        found = discover_cases(root, num_modalities=num_modalities)
    except DiscoveryError as err:
        raise _usage_error(str(err)) from None
    if not found.cases and not found.problems:
        raise _usage_error(f"no case found under '{root}' (see the model card for the supported layouts).")
    folders = {Path(root)} | {path.resolve().parent for case in found.cases for path in case.inputs}
    try:
        check_output_dir(output_dir, sorted(folders))
        check_writable_folder(output_dir)
    except (ValueError, PermissionError) as err:
        raise _usage_error(str(err)) from None
    found.log_problems(logger)
    return found


def _first_input(item: Mapping[str, Any]) -> str | None:
    image = item.get("image")
    if isinstance(image, (list, tuple)):
        return next((str(p) for p in image if p is not None), None)
    return None if image is None else str(image)


class CaseDataset(Dataset):
    """A MONAI ``Dataset`` of cases whose preprocessing failure is returned as a record instead of raised.

    The record ``{"case_id": ..., FAILURE_KEY: message}`` goes through a ``DataLoader`` (and its worker processes)
    like any item; :class:`CaseInferenceEvaluator` passes it by and :class:`InferenceSummary` reports it. A
    :class:`~mckd.brats.cases.CaseError` keeps its message; any other exception is named with its type, the case and
    its first input file.

    Args:
        data: datalist entries with ``case_id`` (e.g. :attr:`mckd.brats.cases.Discovery.items`).
        transform: the preprocessing.
    """

    def _transform(self, index: int) -> Any:
        item = self.data[index]
        case_id = str(item.get("case_id", f"item {index}"))
        try:
            return super()._transform(index)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the others; it is reported
            return {"case_id": case_id, FAILURE_KEY: _message(err, case_id, "preprocessing", _first_input(item))}


def _message(err: Exception, case_id: str | None, stage: str, path: str | None = None) -> str:
    """The report of a failed case: the :class:`CaseError` behind ``err``, else the system error behind it (a full
    disk, naming the file), else ``err`` named with the case (never only a transform's repr)."""
    found = error_in_chain(err, (CaseError,))
    if found is not None:
        return str(found)
    system = error_in_chain(err, (OSError,))
    if system is not None:
        return str(CaseError(case_id, f"{stage} failed: {system}", getattr(system, "filename", None) or path))
    logger.debug("case '%s' failed in %s", case_id, stage, exc_info=True)
    cause = err.__cause__ or err
    return str(CaseError(case_id, f"{stage} failed: {type(cause).__name__}: {cause}", path))


def _first(value: Any) -> str | None:
    """The first entry of a collated value (a list of one per case), as a string."""
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    return None if value is None else str(value)


def _failure(batch: Any) -> dict[str, str] | None:
    """``{"case_id", FAILURE_KEY}`` of a collated failure record, or None for a real batch."""
    if isinstance(batch, Mapping) and FAILURE_KEY in batch:
        return {"case_id": _first(batch.get("case_id")) or "", FAILURE_KEY: _first(batch[FAILURE_KEY]) or ""}
    return None


class CaseInferenceEvaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` for per-case inference: a failed case is recorded and the run goes on.

    An iteration whose batch is a failure record of :class:`CaseDataset` runs nothing and outputs
    ``{FAILURE_KEY: message}``; an iteration whose inference or postprocessing (e.g. writing the prediction) raises
    outputs the same record. The loader must yield one case per batch (``batch_size`` 1), as whole-volume inference
    does. Arguments are those of ``SupervisedEvaluator``.
    """

    def _iteration(self, engine: Any, batchdata: dict[str, Any]) -> dict:
        failure = _failure(batchdata)
        if failure is not None:
            return failure
        case_id = _first(batchdata.get("case_id")) if isinstance(batchdata, Mapping) else None
        try:
            return super()._iteration(engine, batchdata)
        except Exception as err:  # noqa: BLE001 - one case's failure must not stop the others; it is reported
            return {"case_id": case_id or "", FAILURE_KEY: _message(err, case_id, "inference")}


class RequireFinited(MapTransform):
    """Refuse a case whose network output holds NaN or infinite values, naming the case.

    Thresholding turns NaN into background, so without this check a diverged network or an overflowed input gives
    an all-background map and exit status 0. For the start of the inference postprocessing (before the sigmoid).

    Args:
        keys: the network output's key (``"pred"``).
        case_key: the case identifier's key. Default ``"case_id"``.
    """

    def __init__(self, keys: KeysCollection, case_key: str = "case_id") -> None:
        super().__init__(keys)
        self.case_key = case_key

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """
        Raises:
            CaseError: when an output holds NaN or infinite values.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            values = torch.as_tensor(d[key])
            bad = int((~torch.isfinite(values)).sum())
            if bad:
                raise CaseError(
                    _first(d.get(self.case_key)),
                    f"the network's output holds {bad} of {values.numel()} values NaN or infinite: the weights or "
                    "this case's intensities are unusable; nothing was written for it.",
                )
        return d


class InferenceSummary:
    """Ignite handler that records each case's outcome and ends the run with a summary and an exit status.

    At each iteration it records the written case (``case_id`` and, when the writer stores it, the prediction path)
    or the failure record; at the end it logs one line per skipped case and a total, and writes the summary to
    ``<output_dir>/inference_summary.json`` atomically: ``{"written": [{"case_id", "modalities", "prediction"}],
    "skipped": [{"case_id", "reason"}]}`` (cases left out at discovery included; ``modalities``: those the network
    used).

    The summary matches the files on disk: a case that failed after its prediction was completely written (e.g. the
    disk filled up while its probabilities or alignment report were written) is listed as written, with the failure
    under ``"problem"``; a written entry whose prediction is no longer on disk is moved to ``skipped``. A summary
    that cannot be written is one error line (the exit status is then :data:`EXIT_CASES_SKIPPED`), never a traceback.

    Args:
        discovery: the run's :class:`~mckd.brats.cases.Discovery` (its problems count as skipped cases).
        output_dir: the predictions' folder.
        path_key: output key where the writer stores the prediction's path. Default ``"prediction_path"``.
        postfix: the postfix of the prediction files (see :func:`mckd.brats.writing.prediction_path`). Default
            ``"_seg"``.
    """

    def __init__(
        self, discovery: Discovery, output_dir: PathLike, path_key: str = "prediction_path", postfix: str = "_seg"
    ) -> None:
        self.output_dir = Path(output_dir)
        self.path_key = path_key
        self.postfix = postfix
        self.written: list[dict[str, Any]] = []
        self.skipped: list[dict[str, str]] = [{"case_id": p.case_id, "reason": str(p)} for p in discovery.problems]
        self.summary_error: str | None = None
        self._started = time.time()

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: the inference evaluator.
        """
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.COMPLETED, self.summarise)

    def _start(self, engine: Engine | None = None) -> None:
        self._started = time.time()

    def _written_before_failure(self, case_id: str) -> str | None:
        """The prediction of ``case_id`` when this run wrote it completely (renamed into place) before failing."""
        try:
            path = prediction_path(self.output_dir, case_id, postfix=self.postfix)
            written = path.stat().st_mtime >= self._started - 1.0
        except (OSError, ValueError):
            return None
        return str(path) if written else None

    def record(self, engine: Engine) -> None:
        """Record the outcome of the iteration's case."""
        output = engine.state.output
        if isinstance(output, Mapping) and FAILURE_KEY in output:
            prediction = self._written_before_failure(str(output["case_id"]))
            if prediction is not None:
                logger.error("case '%s': prediction written, then %s", output["case_id"], output[FAILURE_KEY])
                self.written.append(
                    {"case_id": output["case_id"], "modalities": [], "prediction": prediction,
                     "problem": output[FAILURE_KEY]}
                )  # fmt: skip
                return
            logger.error("skipping %s", output[FAILURE_KEY])
            self.skipped.append({"case_id": output["case_id"], "reason": output[FAILURE_KEY]})
            return
        batch = engine.state.batch
        for item, data in zip(output, batch) if isinstance(output, list) else [(output, batch)]:
            data = data if isinstance(data, Mapping) else {}
            available = data.get("available")
            used = [] if available is None else [m for m, a in zip(MODALITIES, list(available)) if bool(a)]
            self.written.append(
                {
                    "case_id": _first(data.get("case_id")) or "",
                    "modalities": used,
                    "prediction": str(item.get(self.path_key, "")),
                }
            )

    def _check_on_disk(self) -> None:
        """Move a written entry whose prediction file is not on disk to ``skipped``."""
        kept = []
        for entry in self.written:
            prediction = entry.get("prediction")
            if prediction and not os.path.isfile(prediction):
                reason = CaseError(entry["case_id"], "the prediction is not on disk after the run.", prediction)
                self.skipped.append({"case_id": entry["case_id"], "reason": str(reason)})
            else:
                kept.append(entry)
        self.written = kept

    def summarise(self, engine: Engine | None = None) -> dict[str, Any]:
        """Log the summary and write it to the output folder (a failure to write it is one logged line); return it."""
        self._check_on_disk()
        summary = {"written": self.written, "skipped": self.skipped}
        for skipped in self.skipped:
            logger.warning("skipped %s", skipped["reason"])
        target = self.output_dir / _SUMMARY_FILE
        try:
            write_json_atomic(target, summary)
        except OSError as err:
            self.summary_error = f"cannot write the inference summary '{target}': {err}"
            logger.error("error: %s", self.summary_error)
        incomplete = bool(self.skipped or self.summary_error)
        logger.info(
            "inference summary: %d case(s) written to %s, %d skipped%s",
            len(self.written),
            self.output_dir,
            len(self.skipped),
            f" (exit status {EXIT_CASES_SKIPPED})" if incomplete else "",
        )
        return summary

    @property
    def exit_status(self) -> int:
        """:data:`EXIT_CASES_SKIPPED` when any case was skipped or the summary was not written, else :data:`EXIT_OK`."""
        return EXIT_CASES_SKIPPED if self.skipped or self.summary_error else EXIT_OK

    def exit_if_skipped(self) -> None:
        """End the process with :data:`EXIT_CASES_SKIPPED` when a case was skipped or the summary was not written
        (for the bundle's ``run`` list).

        Raises:
            SystemExit: with :data:`EXIT_CASES_SKIPPED` then.
        """
        if self.exit_status != EXIT_OK:
            sys.exit(EXIT_CASES_SKIPPED)
