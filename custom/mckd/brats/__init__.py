"""BraTS-specific parts: conventions, the case model, loading, label transforms, datalists, outputs, the report."""

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
from mckd.brats.cases import Case, CaseError, Discovery, DiscoveryError, discover_cases
from mckd.brats.datalist import DatalistError, load_datalist
from mckd.brats.labels import (
    ConvertLabelToRegions,
    ConvertLabelToRegionsd,
    RegionsToLabel,
    RegionsToLabeld,
    RemoveSmallEnhancingTumour,
    RemoveSmallEnhancingTumourd,
)
from mckd.brats.loading import LoadModalities, LoadModalitiesd, PackAvailability, PackAvailabilityd, check_case
from mckd.brats.report import evaluate_and_report, markdown_report, markdown_table, write_report
from mckd.brats.writing import SaveCasePrediction, SaveCasePredictiond, check_output_dir, prediction_path

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
    "Case",
    "CaseError",
    "Discovery",
    "DiscoveryError",
    "DatalistError",
    "load_datalist",
    "check_case",
    "SaveCasePrediction",
    "SaveCasePredictiond",
    "check_output_dir",
    "discover_cases",
    "prediction_path",
    "evaluate_and_report",
    "markdown_report",
    "markdown_table",
    "write_report",
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
