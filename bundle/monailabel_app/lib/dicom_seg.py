"""A BraTS label map as a DICOM Segmentation (SEG) of its reference series, written with highdicom.

The label map (a file on the reference series' grid, as MONAI Label's writer leaves it) is sampled at
the centre of every pixel of every slice of the reference series, through world coordinates (nearest voxel), so the
SEG's frames lie exactly on the source slices whatever the series' orientation. One segment per tumour sub-region
of the bundle's labels, each with its name and a SNOMED CT coded type (:data:`SUBREGION_CODES`); a sub-region the
network did not find is still described, with empty frames, so every SEG of a bundle has the same segments.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom
from monai.transforms import LoadImage
from pydicom.sr.coding import Code

__all__ = [
    "SUBREGION_CODES",
    "CATEGORY",
    "ARTIFICIAL_INTELLIGENCE",
    "SegResult",
    "read_series",
    "label_to_frames",
    "write_seg",
]

#: Segmented property category of every segment: SNOMED CT "Morphologically abnormal structure".
CATEGORY = Code("49755003", "SCT", "Morphologically Abnormal Structure")
#: The algorithm family (DICOM CID 7162).
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
#: Segmented property type per sub-region label name (the names in the bundle's ``channel_def``). SNOMED CT has no
#: concept for "enhancing tumour" as such; it is coded as a neoplasm, and the segment label says which part.
SUBREGION_CODES: Mapping[str, Code] = {
    "necrotic and non-enhancing tumour core": Code("6574001", "SCT", "Necrosis"),
    "peritumoral oedema": Code("79654002", "SCT", "Edema"),
    "enhancing tumour": Code("108369006", "SCT", "Neoplasm"),
    # BraTS 2023 names of the same sub-regions
    "non-enhancing tumour core": Code("6574001", "SCT", "Necrosis"),
    "surrounding non-enhancing flair hyperintensity": Code("79654002", "SCT", "Edema"),
    "enhancing tissue": Code("108369006", "SCT", "Neoplasm"),
}
#: Display colours (CIELab as DICOM stores it) per segment number, the BraTS viewer colours: red, green, yellow.
_RGB = ((220, 40, 40), (40, 200, 60), (250, 220, 40))


@dataclass(frozen=True)
class SegResult:
    """The SEG written: its dataset and what it holds."""

    dataset: pydicom.Dataset
    segments: list[dict]
    frames: int


def read_series(folder: str) -> list[pydicom.Dataset]:
    """The slices of one series folder, sorted along the slice normal.

    Raises:
        ValueError: when the folder holds no DICOM image or slices of several series.
    """
    datasets = [pydicom.dcmread(p) for p in sorted(glob.glob(os.path.join(folder, "*")))]
    datasets = [d for d in datasets if "PixelData" in d]
    if not datasets:
        raise ValueError(f"no DICOM image in '{folder}'.")
    series = {str(d.SeriesInstanceUID) for d in datasets}
    if len(series) != 1:
        raise ValueError(f"'{folder}' holds slices of {len(series)} series; expected one.")
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    return sorted(datasets, key=lambda d: float(np.dot(normal, np.asarray(d.ImagePositionPatient, float))))


def _pixel_points_lps(ds: pydicom.Dataset) -> np.ndarray:
    """World (LPS, mm) coordinates of every pixel centre of a slice: ``[rows, columns, 3]``."""
    row_dir, col_dir = np.reshape(np.asarray(ds.ImageOrientationPatient, float), (2, 3))
    between_rows, between_columns = (float(v) for v in ds.PixelSpacing)
    r, c = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
    origin = np.asarray(ds.ImagePositionPatient, float)
    return origin + c[..., None] * between_columns * row_dir + r[..., None] * between_rows * col_dir


def label_to_frames(label: np.ndarray, affine_ras: np.ndarray, slices: Sequence[pydicom.Dataset]) -> np.ndarray:
    """The label map sampled on every slice: ``[slices, rows, columns]`` (nearest voxel, 0 outside the map)."""
    to_voxel = np.linalg.inv(np.asarray(affine_ras, float))
    frames = np.zeros((len(slices), int(slices[0].Rows), int(slices[0].Columns)), dtype=label.dtype)
    for k, ds in enumerate(slices):
        lps = _pixel_points_lps(ds)
        ras = lps * np.array([-1.0, -1.0, 1.0])
        index = np.rint(ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]).astype(int)
        inside = np.all((index >= 0) & (index < np.asarray(label.shape[:3])), axis=-1)
        frames[k][inside] = label[index[inside][:, 0], index[inside][:, 1], index[inside][:, 2]]
    return frames


def write_seg(
    label_file: str,
    series_folder: str,
    labels: Mapping[str, int],
    algorithm: str,
    version: str,
    series_description: str = "MCKD tumour sub-regions",
    series_number: int = 900,
) -> SegResult:
    """A DICOM SEG of ``label_file`` referencing the series in ``series_folder``.

    Args:
        label_file: a label map (NIfTI or NRRD, any file MONAI's ``LoadImage`` reads) that covers the series.
        series_folder: the reference series' DICOM files.
        labels: sub-region name -> label value (the bundle's labels, background left out).
        algorithm: the algorithm's name in the SEG (the model name).
        version: the algorithm's version (the bundle version).
        series_description: the SEG series' description.
        series_number: the SEG series' number.

    Raises:
        ValueError: for a sub-region name without a code in :data:`SUBREGION_CODES`, or a label map holding values
            that are not ``labels``.
    """
    unknown = sorted(set(labels) - set(SUBREGION_CODES))
    if unknown:
        raise ValueError(f"no SNOMED CT code for the sub-regions {unknown}; known: {sorted(SUBREGION_CODES)}.")
    slices = read_series(series_folder)
    image = LoadImage(image_only=True)(label_file)
    label = np.rint(image.numpy()).astype(np.int32).reshape(image.shape[:3])
    frames = label_to_frames(label, np.asarray(image.affine, float), slices)
    extra = sorted(set(np.unique(frames).tolist()) - {0, *labels.values()})
    if extra:
        raise ValueError(f"the label map holds values {extra} that are not the bundle's labels {dict(labels)}.")
    ordered = sorted(labels.items(), key=lambda item: item[1])
    mask = np.zeros_like(frames, dtype=np.uint8)
    descriptions, segments = [], []
    algorithm_id = hd.AlgorithmIdentificationSequence(name=algorithm, version=version, family=ARTIFICIAL_INTELLIGENCE)
    for number, (name, value) in enumerate(ordered, start=1):
        mask[frames == value] = number
        rgb = np.asarray(_RGB[(number - 1) % len(_RGB)], float) / 255.0
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name,
                segmented_property_category=CATEGORY,
                segmented_property_type=SUBREGION_CODES[name],
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm_id,
            )
        )
        descriptions[-1].RecommendedDisplayCIELabValue = _cielab(rgb)
        segments.append({"number": number, "label": name, "value": value, "voxels": int((frames == value).sum())})
    seg = hd.seg.Segmentation(
        source_images=slices,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MCKD",
        manufacturer_model_name=algorithm,
        software_versions=version,
        device_serial_number="0",
        series_description=series_description,
        omit_empty_frames=False,
    )
    return SegResult(dataset=seg, segments=segments, frames=int(seg.NumberOfFrames))


def _cielab(rgb: np.ndarray) -> list[int]:
    """sRGB in [0, 1] -> DICOM's scaled CIELab (``RecommendedDisplayCIELabValue``: L, a, b as 0..65535)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    lab = np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])
    scaled = (lab[0] * 65535 / 100, (lab[1] + 128) * 65535 / 255, (lab[2] + 128) * 65535 / 255)
    return [int(round(v)) for v in scaled]
