"""Transitional alias of the modules that replaced ``mckd.brats.transforms`` (removed once every caller imports them)."""

from mckd.brats.cases import SLICE_SPACING_RTOL, CaseError, check_dicom_series  # noqa: F401
from mckd.brats.labels import (  # noqa: F401
    ConvertLabelToRegions,
    ConvertLabelToRegionsd,
    RegionsToLabel,
    RegionsToLabeld,
    RemoveSmallEnhancingTumour,
    RemoveSmallEnhancingTumourd,
    resolve_convention,
)
from mckd.brats.loading import LoadModalities, LoadModalitiesd, PackAvailability, PackAvailabilityd  # noqa: F401
