"""BraTS-specific parts: conventions, transforms, case discovery and prediction output, the evaluation report."""

from __future__ import annotations

from mckd.brats.conventions import (
    LABEL_CONVENTIONS,
    LAYOUTS,
    MODALITIES,
    MODALITY_DISPLAY_NAMES,
    NUM_MODALITIES,
    NUM_REGIONS,
    REGION_DISPLAY_NAMES,
    REGIONS,
    LabelConvention,
)
from mckd.brats.io import (
    CaseProblem,
    DiscoveredCases,
    SaveCasePrediction,
    SaveCasePredictiond,
    check_output_dir,
    discover_cases,
    prediction_path,
)
from mckd.brats.report import evaluate_and_report, markdown_report, markdown_table, write_report
from mckd.brats.transforms import (
    CaseError,
    ConvertLabelToRegions,
    ConvertLabelToRegionsd,
    LoadModalities,
    LoadModalitiesd,
    PackAvailability,
    PackAvailabilityd,
    RegionsToLabel,
    RegionsToLabeld,
    RemoveSmallEnhancingTumour,
    RemoveSmallEnhancingTumourd,
)

__all__ = [
    "LABEL_CONVENTIONS",
    "LAYOUTS",
    "MODALITIES",
    "MODALITY_DISPLAY_NAMES",
    "NUM_MODALITIES",
    "NUM_REGIONS",
    "REGION_DISPLAY_NAMES",
    "REGIONS",
    "LabelConvention",
    "CaseProblem",
    "DiscoveredCases",
    "SaveCasePrediction",
    "SaveCasePredictiond",
    "check_output_dir",
    "discover_cases",
    "prediction_path",
    "evaluate_and_report",
    "markdown_report",
    "markdown_table",
    "write_report",
    "CaseError",
    "ConvertLabelToRegions",
    "ConvertLabelToRegionsd",
    "LoadModalities",
    "LoadModalitiesd",
    "PackAvailability",
    "PackAvailabilityd",
    "RegionsToLabel",
    "RegionsToLabeld",
    "RemoveSmallEnhancingTumour",
    "RemoveSmallEnhancingTumourd",
]
