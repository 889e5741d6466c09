"""The one home of every BraTS fact: modality order, region order, label conventions and on-disk layouts.

Everything else (data preparation, transforms, networks' channel definitions, reports) imports from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "MODALITIES",
    "MODALITY_DISPLAY_NAMES",
    "MODALITY_NAMES",
    "NUM_MODALITIES",
    "REGIONS",
    "REGION_DISPLAY_NAMES",
    "NUM_REGIONS",
    "LabelConvention",
    "LABEL_CONVENTIONS",
    "BRATS2018_LABELS",
    "BRATS2023_LABELS",
    "BRATS2024_LABELS",
    "MSD_LABELS",
    "DatasetLayout",
    "LAYOUTS",
    "PAPER_META_VALIDATION_CASES",
]

#: Modality keys in the fixed channel order used everywhere (the published code's order: 0=FLAIR, 1=T1, 2=T1ce, 3=T2).
MODALITIES: tuple[str, ...] = ("flair", "t1", "t1ce", "t2")
MODALITY_DISPLAY_NAMES: Mapping[str, str] = MappingProxyType({"flair": "FLAIR", "t1": "T1", "t1ce": "T1ce", "t2": "T2"})
#: Display names in channel order, as reports and bundle configs name the modalities.
MODALITY_NAMES: tuple[str, ...] = tuple(MODALITY_DISPLAY_NAMES[m] for m in MODALITIES)
NUM_MODALITIES = len(MODALITIES)

#: Region channels in the order of the BraTS result tables (the network's output channels follow it). The default
#: region set of every configuration; a post-treatment run adds RC through its convention's
#: :attr:`LabelConvention.region_names` (``configs/brats2024.json``).
REGIONS: tuple[str, ...] = ("ET", "TC", "WT")
#: Every region a convention may define (RC: the resection cavity of BraTS 2024+ post-treatment glioma).
REGION_DISPLAY_NAMES: Mapping[str, str] = MappingProxyType(
    {"ET": "Enhancing tumour", "TC": "Tumour core", "WT": "Whole tumour", "RC": "Resection cavity"}
)
NUM_REGIONS = len(REGIONS)


@dataclass(frozen=True)
class LabelConvention:
    """How a BraTS release encodes tumour sub-regions as label values.

    Attributes:
        name: identifier written into datalists (``"brats2018"``, ``"brats2023"``, ``"msd"``).
        labels: label value -> sub-region name; 0 is always background.
        regions: region name (a key of :data:`REGION_DISPLAY_NAMES`) -> the label values that make it up, in the
            convention's channel order (:attr:`region_names`).
        compose_order: (region, value) pairs painted in this order to turn region channels back into a label map;
            a later region overwrites an earlier one, so nested regions come last.
    """

    name: str
    labels: Mapping[int, str]
    regions: Mapping[str, tuple[int, ...]]
    compose_order: tuple[tuple[str, int], ...] = field(default=())

    @property
    def valid_values(self) -> frozenset[int]:
        """Every value a label map of this convention may hold, background included."""
        return frozenset({0, *self.labels})

    @property
    def region_names(self) -> tuple[str, ...]:
        """Every region the convention defines, in channel order (:data:`REGIONS` first, then e.g. ``"RC"``)."""
        return tuple(self.regions)


# BraTS 2018-2021: 1 necrotic/non-enhancing core, 2 oedema, 4 enhancing tumour (3 unused).
BRATS2018_LABELS = LabelConvention(
    name="brats2018",
    labels=MappingProxyType({1: "NCR/NET", 2: "ED", 4: "ET"}),
    regions=MappingProxyType({"ET": (4,), "TC": (1, 4), "WT": (1, 2, 4)}),
    compose_order=(("WT", 2), ("TC", 1), ("ET", 4)),
)
# BraTS 2023+ glioma: 1 non-enhancing tumour core, 2 surrounding FLAIR hyperintensity, 3 enhancing tumour.
BRATS2023_LABELS = LabelConvention(
    name="brats2023",
    labels=MappingProxyType({1: "NETC", 2: "SNFH", 3: "ET"}),
    regions=MappingProxyType({"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3)}),
    compose_order=(("WT", 2), ("TC", 1), ("ET", 3)),
)
# BraTS 2024/2025 post-treatment glioma: the 2023 labels plus 4 resection cavity, a region of its own (in no
# tumour region). Painted after WT and before TC/ET: a voxel predicted as both cavity and oedema is written as cavity,
# one predicted as both cavity and core / enhancing tumour as tumour.
BRATS2024_LABELS = LabelConvention(
    name="brats2024",
    labels=MappingProxyType({1: "NETC", 2: "SNFH", 3: "ET", 4: "RC"}),
    regions=MappingProxyType({"ET": (3,), "TC": (1, 3), "WT": (1, 2, 3), "RC": (4,)}),
    compose_order=(("WT", 2), ("RC", 4), ("TC", 1), ("ET", 3)),
)
# Medical Segmentation Decathlon Task01 (dataset.json): 1 oedema, 2 non-enhancing tumour, 3 enhancing tumour.
MSD_LABELS = LabelConvention(
    name="msd",
    labels=MappingProxyType({1: "edema", 2: "non-enhancing tumor", 3: "enhancing tumour"}),
    regions=MappingProxyType({"ET": (3,), "TC": (2, 3), "WT": (1, 2, 3)}),
    compose_order=(("WT", 1), ("TC", 2), ("ET", 3)),
)
LABEL_CONVENTIONS: Mapping[str, LabelConvention] = MappingProxyType(
    {c.name: c for c in (BRATS2018_LABELS, BRATS2023_LABELS, BRATS2024_LABELS, MSD_LABELS)}
)


@dataclass(frozen=True)
class DatasetLayout:
    """File naming of one dataset release.

    Attributes:
        name: layout identifier used on the command line.
        label_convention: the :class:`LabelConvention` of its label maps.
        separator: character between case id and suffix (``_`` up to 2021, ``-`` from 2023).
        modality_suffixes: file-name suffix of each modality, keyed by :data:`MODALITIES`; empty for a 4D layout.
        label_suffix: file-name suffix of the label map.
        four_d: True when one 4D image per case holds the modalities in :data:`MODALITIES` order (MSD).
    """

    name: str
    label_convention: LabelConvention
    separator: str = "_"
    modality_suffixes: Mapping[str, str] = field(default_factory=dict)
    label_suffix: str = "seg"
    four_d: bool = False

    def modality_file(self, case_id: str, modality: str, ext: str = ".nii.gz") -> str:
        """File name of ``modality`` of ``case_id`` (per-modality layouts only)."""
        return f"{case_id}{self.separator}{self.modality_suffixes[modality]}{ext}"

    def label_file(self, case_id: str, ext: str = ".nii.gz") -> str:
        """File name of the label map of ``case_id`` (per-modality layouts only)."""
        return f"{case_id}{self.separator}{self.label_suffix}{ext}"


_CLASSIC_SUFFIXES = MappingProxyType({"flair": "flair", "t1": "t1", "t1ce": "t1ce", "t2": "t2"})
_GLI2023_SUFFIXES = MappingProxyType({"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"})
LAYOUTS: Mapping[str, DatasetLayout] = MappingProxyType(
    {
        # 2018-2020: <root>/{HGG,LGG}/<case>/<case>_<suffix>.nii.gz (2019/2020 without HGG/LGG in some copies).
        "brats2018": DatasetLayout("brats2018", BRATS2018_LABELS, "_", _CLASSIC_SUFFIXES),
        # 2021: <root>/BraTS2021_xxxxx/BraTS2021_xxxxx_<suffix>.nii.gz, same labels as 2018.
        "brats2021": DatasetLayout("brats2021", BRATS2018_LABELS, "_", _CLASSIC_SUFFIXES),
        # 2023+: <root>/BraTS-GLI-xxxxx-xxx/BraTS-GLI-xxxxx-xxx-<suffix>.nii.gz, ET = 3.
        "brats2023": DatasetLayout(
            "brats2023",
            BRATS2023_LABELS,
            "-",
            _GLI2023_SUFFIXES,
        ),
        # 2024/2025 post-treatment glioma: the 2023 file names, label 4 = resection cavity. Same names as brats2023,
        # so discovery alone cannot tell them apart (data_prep.brats --layout auto reads a label 4 as this layout).
        "brats2024": DatasetLayout("brats2024", BRATS2024_LABELS, "-", _GLI2023_SUFFIXES),
        # MSD Task01_BrainTumour: imagesTr/BRATS_xxx.nii.gz (4D, FLAIR/T1w/T1gd/T2w), labelsTr/BRATS_xxx.nii.gz.
        "msd": DatasetLayout("msd", MSD_LABELS, four_d=True),
    }
)

#: The published 5-case meta-validation split of BraTS2018 (MetaKD ``BraTS18_metaVal.csv``); the other 280 train.
PAPER_META_VALIDATION_CASES: tuple[str, ...] = (
    "Brats18_CBICA_AQQ_1",
    "Brats18_2013_10_1",
    "Brats18_2013_15_1",
    "Brats18_TCIA09_141_1",
    "Brats18_TCIA13_645_1",
)
