"""Transitional alias of the modules that replaced ``mckd.brats.io`` (removed once every caller imports them)."""

from mckd.brats.cases import CaseError, Discovery, discover_cases  # noqa: F401
from mckd.brats.datalist import DatalistError, load_datalist  # noqa: F401
from mckd.brats.writing import SaveCasePrediction, SaveCasePredictiond, check_output_dir, prediction_path  # noqa: F401
