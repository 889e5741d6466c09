"""Synthetic BraTS-format cases with known ground truth, written in the exact on-disk layout of a BraTS release.

Each case is a brain-shaped volume (an ellipsoid with smooth bumps) with white matter, a grey-matter cortex, a sulcal
CSF rim and two lateral ventricles, plus a glioma whose sub-regions are nested as in real tumours: a necrotic /
non-enhancing core inside an enhancing rim inside oedema. Some cases have no enhancing tumour (LGG-like). The four
modalities follow a simple MRI contrast model (see ``docs/data_prep.md``) so that they differ in what they reveal:
T1ce shows the enhancing rim, FLAIR and T2 the oedema and core, FLAIR suppresses CSF, T1 shows the tumour only faintly.
A smooth multiplicative bias field and Rician noise are applied per modality. In the ``brats2024`` layout
(post-treatment glioma) most cases also have a resection cavity (label 4): a fluid-filled sphere next to the residual
tumour core, dark on T1, T1ce and FLAIR and bright on T2.

Shapes are given in the voxel order of the stored file (nibabel's ``get_fdata().shape``), i.e. ``(x, y, z)``; real
BraTS volumes are ``(240, 240, 155)``. Output is deterministic per seed, byte for byte (gzip headers carry no time).

Usage::

    python -m data_prep.synthetic_brats --out DIR --cases N [--shape X Y Z] [--seed S]
        [--layout brats2018|brats2021|brats2023|brats2024|msd]
"""

from __future__ import annotations

import argparse
import gzip
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import nibabel as nib
import numpy as np

from mckd.brats.conventions import LAYOUTS, MODALITIES, REGION_DISPLAY_NAMES, DatasetLayout, LabelConvention
from mckd.fileio import atomic_path, write_json_atomic
from mckd.progress import progress_bar

__all__ = [
    "DEFAULT_SHAPE",
    "MIN_SIZE",
    "TISSUES",
    "TISSUE_INTENSITIES",
    "NO_ENHANCING_FRACTION",
    "NO_CAVITY_FRACTION",
    "SyntheticCase",
    "WrittenCase",
    "brats_affine",
    "generate_case",
    "enhancing_plan",
    "cavity_plan",
    "synthetic_case_id",
    "case_rng",
    "write_dataset",
    "main",
]

logger = logging.getLogger(__name__)

#: Shape of a real BraTS volume in stored voxel order (x, y, z).
DEFAULT_SHAPE: tuple[int, int, int] = (240, 240, 155)
#: Smallest size per axis that still leaves room for the brain's structures.
MIN_SIZE = 16
#: Fraction of cases generated without enhancing tumour (at least one case when two or more are generated).
NO_ENHANCING_FRACTION = 0.2
#: Fraction of ``brats2024`` cases generated without a resection cavity (at least one when two or more are generated).
NO_CAVITY_FRACTION = 0.2

#: Tissue classes of the generator's tissue map, by value (0 = background).
TISSUES: tuple[str, ...] = (
    "background", "csf", "grey_matter", "white_matter", "oedema", "core", "enhancing", "cavity"
)
_CSF, _GM, _WM, _ED, _CORE, _ET, _RC = range(1, 8)

#: Mean intensity of each tissue per modality (FLAIR, T1, T1ce, T2) before gain, bias field and noise.
TISSUE_INTENSITIES: Mapping[str, tuple[float, float, float, float]] = {
    "csf": (110.0, 300.0, 320.0, 1500.0),
    "grey_matter": (480.0, 680.0, 700.0, 480.0),
    "white_matter": (380.0, 900.0, 900.0, 350.0),
    "oedema": (880.0, 800.0, 820.0, 1050.0),
    "core": (760.0, 620.0, 640.0, 1250.0),
    "enhancing": (800.0, 780.0, 1650.0, 900.0),
    "cavity": (160.0, 260.0, 270.0, 1600.0),  # fluid: dark on FLAIR, T1 and T1ce, bright on T2
}

_TEXTURE_AMPLITUDE = 0.04  # relative within-tissue texture
_BIAS_AMPLITUDE = 0.12  # log-amplitude of the multiplicative bias field
_NOISE_FRACTION = 0.025  # Rician noise sigma relative to the white-matter intensity of the modality
_GAIN_RANGE = (0.85, 1.15)  # per-case, per-modality scanner gain

_MSD_MODALITY_NAMES = {"flair": "FLAIR", "t1": "T1w", "t1ce": "t1gd", "t2": "T2w"}


@dataclass(frozen=True)
class SyntheticCase:
    """One generated case.

    Attributes:
        images: modality key (:data:`MODALITIES`) -> int16 volume of the requested shape, zero outside the brain.
        tissues: uint8 tissue map, values index :data:`TISSUES`; the ground truth every label map derives from.
    """

    images: Mapping[str, np.ndarray]
    tissues: np.ndarray

    @property
    def brain(self) -> np.ndarray:
        """Boolean brain mask."""
        return self.tissues > 0

    @property
    def regions(self) -> dict[str, np.ndarray]:
        """Boolean mask of each region: ET, TC = core + ET, WT = oedema + TC, RC = the resection cavity (empty
        unless the case was generated with one)."""
        masks = {"ET": self.tissues == _ET, "TC": np.isin(self.tissues, (_CORE, _ET))}
        masks["WT"] = np.isin(self.tissues, (_ED, _CORE, _ET))
        masks["RC"] = self.tissues == _RC
        return {name: masks[name] for name in REGION_DISPLAY_NAMES}

    def label(self, convention: LabelConvention) -> np.ndarray:
        """The uint8 label map of this case in ``convention``'s values (painted in its ``compose_order``).

        Raises:
            ValueError: when the case has a resection cavity and ``convention`` has no label value for it.
        """
        regions = self.regions
        if regions["RC"].any() and "RC" not in convention.regions:
            raise ValueError(f"the '{convention.name}' label convention has no value for the resection cavity.")
        label = np.zeros(self.tissues.shape, dtype=np.uint8)
        for region, value in convention.compose_order:
            label[regions[region]] = value
        return label


@dataclass(frozen=True)
class WrittenCase:
    """Where one generated case was written.

    Attributes:
        case_id: the case identifier in the layout's naming.
        index: 0-based position of the case in the dataset (its generator seed is ``case_rng(seed, index)``).
        enhancing: whether the case has an enhancing tumour.
        images: modality key -> file (one shared 4D file for MSD).
        label: label file.
        cavity: whether the case has a resection cavity (``brats2024`` layout only).
    """

    case_id: str
    index: int
    enhancing: bool
    images: Mapping[str, Path]
    label: Path
    cavity: bool = False


def brats_affine(shape: Sequence[int]) -> np.ndarray:
    """The 1 mm voxel-to-world affine of real BraTS files: x and y flipped (``diag(-1, -1, 1)``), y origin at the far end.

    Real BraTS headers map voxel (0, 0, 0) to (0, 239, 0) mm with this diagonal; the same rule is used for any shape.
    """
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = float(shape[1] - 1)
    return affine


def case_rng(seed: int, index: int) -> np.random.Generator:
    """Random generator of case ``index``: independent of how many cases are generated."""
    return np.random.default_rng([seed, index])


def enhancing_plan(n_cases: int, seed: int) -> list[bool]:
    """Which of ``n_cases`` have an enhancing tumour: all but :data:`NO_ENHANCING_FRACTION` of them, chosen by seed."""
    n_without = max(1, round(NO_ENHANCING_FRACTION * n_cases)) if n_cases >= 2 else 0
    without = set(np.random.default_rng([seed, n_cases, 1]).choice(n_cases, size=n_without, replace=False).tolist())
    return [index not in without for index in range(n_cases)]


def cavity_plan(n_cases: int, seed: int) -> list[bool]:
    """Which of ``n_cases`` post-treatment cases have a resection cavity: all but :data:`NO_CAVITY_FRACTION` of them,
    chosen by seed independently of :func:`enhancing_plan`."""
    n_without = max(1, round(NO_CAVITY_FRACTION * n_cases)) if n_cases >= 2 else 0
    without = set(np.random.default_rng([seed, n_cases, 2]).choice(n_cases, size=n_without, replace=False).tolist())
    return [index not in without for index in range(n_cases)]


def synthetic_case_id(layout: str, index: int) -> str:
    """Case identifier of the ``index``-th (0-based) synthetic case in ``layout``'s naming."""
    number = index + 1
    ids = {
        "brats2018": f"Brats18_SYN_{number:04d}_1",
        "brats2021": f"BraTS2021_{number:05d}",
        "brats2023": f"BraTS-GLI-{number:05d}-000",
        "brats2024": f"BraTS-GLI-{number:05d}-000",
        "msd": f"BRATS_{number:03d}",
    }
    return ids[layout]


def _axes(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Broadcastable float32 voxel coordinates along x, y and z."""
    x, y, z = (np.arange(n, dtype=np.float32) for n in shape)
    return x[:, None, None], y[None, :, None], z[None, None, :]


def _smooth_field(shape: Sequence[int], rng: np.random.Generator, n_terms: int, max_cycles: float) -> np.ndarray:
    """A smooth random field in [-1, 1]: a sum of separable cosines of up to ``max_cycles`` cycles across the volume."""
    field = np.zeros(tuple(shape), dtype=np.float32)
    amplitudes = rng.uniform(0.5, 1.0, size=n_terms)
    for amplitude in amplitudes:
        term = np.float32(amplitude)
        for axis, n in enumerate(shape):
            cycles = rng.uniform(0.3, max_cycles)
            wave = np.cos(2 * np.pi * cycles * np.arange(n, dtype=np.float32) / n + rng.uniform(0, 2 * np.pi))
            term = term * wave.astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        field += term
    return field / np.float32(amplitudes.sum())


def _brain_radius(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Normalised ellipsoid radius of every voxel (brain where < its bumpy outline) and the semi-axes in voxels."""
    semi_axes = np.array(shape, dtype=np.float32) * np.array([0.30, 0.37, 0.40], dtype=np.float32)
    semi_axes *= rng.uniform(0.93, 1.0, size=3).astype(np.float32)
    centre = np.array(shape, dtype=np.float32) / 2 + rng.uniform(-0.02, 0.02, size=3).astype(np.float32) * shape
    x, y, z = _axes(shape)
    rho = np.sqrt(
        ((x - centre[0]) / semi_axes[0]) ** 2 + ((y - centre[1]) / semi_axes[1]) ** 2 + ((z - centre[2]) / semi_axes[2]) ** 2
    )
    outline = 1.0 + 0.06 * _smooth_field(shape, rng, n_terms=4, max_cycles=2.5)
    return rho / outline, semi_axes


def _ventricles(shape: Sequence[int], semi_axes: np.ndarray) -> np.ndarray:
    """Two lateral ventricles: elongated ellipsoids either side of the midline, above the brain's centre."""
    x, y, z = _axes(shape)
    centre = np.array(shape, dtype=np.float32) / 2
    u, v, w = (x - centre[0]) / semi_axes[0], (y - centre[1]) / semi_axes[1], (z - centre[2]) / semi_axes[2]
    shape_term = ((v - 0.05) / 0.40) ** 2 + ((w - 0.12) / 0.16) ** 2
    return (((u - 0.13) / 0.09) ** 2 + shape_term < 1) | (((u + 0.13) / 0.09) ** 2 + shape_term < 1)


def _anatomy(shape: Sequence[int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Tissue map of a healthy brain (CSF, GM, WM) and the brain's semi-axes in voxels."""
    radius, semi_axes = _brain_radius(shape, rng)
    cortex_depth = 0.80 + 0.05 * _smooth_field(shape, rng, n_terms=3, max_cycles=4.0)
    tissues = np.zeros(tuple(shape), dtype=np.uint8)
    tissues[radius < 1.0] = _CSF
    tissues[radius < 0.96] = _GM
    tissues[radius < cortex_depth] = _WM
    tissues[_ventricles(shape, semi_axes) & (radius < 0.9)] = _CSF
    return tissues, semi_axes


def _blob(shape: Sequence[int], rng: np.random.Generator, centre: np.ndarray, radius: float) -> np.ndarray:
    """An irregular blob: a sphere of ``radius`` voxels whose surface is displaced by a smooth random field."""
    x, y, z = _axes(shape)
    distance = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / radius
    cycles = 0.8 * float(np.mean(shape)) / radius  # about 1.5 bumps around the blob whatever the volume's size
    return distance < 1.0 + 0.25 * _smooth_field(shape, rng, n_terms=3, max_cycles=cycles)


def _tumour_centre(tissues: np.ndarray, semi_axes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random point well inside the brain (white matter not too close to the cortex)."""
    centre = np.array(tissues.shape, dtype=np.float32) / 2
    for _ in range(100):
        candidate = centre + rng.uniform(-0.5, 0.5, size=3).astype(np.float32) * semi_axes
        if tissues[tuple(np.round(candidate).astype(int))] == _WM:
            return candidate
    return centre


def _add_tumour(tissues: np.ndarray, semi_axes: np.ndarray, rng: np.random.Generator, enhancing: bool) -> None:
    """Paint a glioma into ``tissues``: oedema around a core, the core an enhancing rim around necrosis (or not)."""
    shape = tissues.shape
    scale = float(semi_axes.mean())
    centre = _tumour_centre(tissues, semi_axes, rng)
    oedema_radius = rng.uniform(0.3, 0.5) * scale
    core_radius = rng.uniform(0.5, 0.7) * oedema_radius
    core_centre = centre + rng.uniform(-0.15, 0.15, size=3).astype(np.float32) * oedema_radius
    inside = tissues > 0
    core = _blob(shape, rng, core_centre, core_radius) & inside
    whole = (_blob(shape, rng, centre, oedema_radius) & (tissues != _CSF) & inside) | core
    tissues[whole] = _ED
    if not enhancing:
        tissues[core] = _CORE
        return
    necrosis = _blob(shape, rng, core_centre, rng.uniform(0.45, 0.7) * core_radius) & core
    tissues[core] = _ET
    tissues[necrosis] = _CORE


def _add_cavity(tissues: np.ndarray, semi_axes: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a resection cavity into ``tissues``: a sphere beside the tumour core, inside the brain, sparing the core.

    Its centre lies one core radius plus most of its own radius away from the core's centre of mass, in a random
    direction, so it abuts the residual tumour and replaces oedema and healthy tissue there.
    """
    core = np.isin(tissues, (_CORE, _ET))
    core_centre = np.argwhere(core).mean(axis=0).astype(np.float32)
    core_radius = max(1.5, float((3 * core.sum() / (4 * np.pi)) ** (1 / 3)))
    radius = rng.uniform(0.8, 1.2) * core_radius
    direction = rng.standard_normal(3).astype(np.float32)
    direction /= np.linalg.norm(direction) + 1e-6
    centre = core_centre + direction * (core_radius + 0.7 * radius)
    x, y, z = _axes(tissues.shape)
    sphere = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 < radius**2
    tissues[sphere & (tissues > 0) & ~core] = _RC


def _render(tissues: np.ndarray, modality_index: int, rng: np.random.Generator) -> np.ndarray:
    """One modality: tissue intensities with texture, gain, bias field and Rician noise; int16, zero outside the brain."""
    lookup = np.zeros(len(TISSUES), dtype=np.float32)
    for value, name in enumerate(TISSUES[1:], start=1):
        lookup[value] = TISSUE_INTENSITIES[name][modality_index]
    shape = tissues.shape
    texture = 1.0 + _TEXTURE_AMPLITUDE * _smooth_field(shape, rng, n_terms=3, max_cycles=12.0)
    bias = np.exp(_BIAS_AMPLITUDE * _smooth_field(shape, rng, n_terms=3, max_cycles=1.0))
    signal = lookup[tissues] * texture * bias * np.float32(rng.uniform(*_GAIN_RANGE))
    sigma = np.float32(_NOISE_FRACTION * TISSUE_INTENSITIES["white_matter"][modality_index])
    real = signal + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    magnitude = np.sqrt(real * real + imaginary * imaginary)
    magnitude[tissues == 0] = 0
    return np.clip(np.rint(magnitude), 0, np.iinfo(np.int16).max).astype(np.int16)


def generate_case(
    shape: Sequence[int], rng: np.random.Generator, enhancing: bool = True, cavity: bool = False
) -> SyntheticCase:
    """Generate one case of ``shape`` (stored voxel order x, y, z).

    Args:
        shape: volume size per axis, each at least :data:`MIN_SIZE`.
        rng: source of all randomness; the same generator state gives the same case.
        enhancing: whether the tumour has an enhancing rim (False: an LGG-like non-enhancing core).
        cavity: whether a resection cavity (post-treatment, label 4 of ``brats2024``) lies beside the tumour.
            False (default) draws nothing more from ``rng``, so cases without a cavity are those of earlier releases.

    Raises:
        ValueError: when ``shape`` is not three sizes of at least :data:`MIN_SIZE`.
    """
    shape = _validated_shape(shape)
    tissues, semi_axes = _anatomy(shape, rng)
    _add_tumour(tissues, semi_axes, rng, enhancing)
    if cavity:
        _add_cavity(tissues, semi_axes, rng)
    images = {modality: _render(tissues, index, rng) for index, modality in enumerate(MODALITIES)}
    return SyntheticCase(images=images, tissues=tissues)


def _validated_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    """``shape`` as a tuple of three ints, each at least :data:`MIN_SIZE`."""
    sizes = tuple(int(n) for n in shape)
    if len(sizes) != 3 or min(sizes) < MIN_SIZE:
        raise ValueError(f"shape must be three sizes of at least {MIN_SIZE} voxels (x y z), got {tuple(shape)}.")
    return sizes  # type: ignore[return-value]


def _nifti_gz_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file of ``array``, byte-identical for identical input (no time stamp in the gzip header)."""
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``array`` as ``path`` (.nii.gz) atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(_nifti_gz_bytes(array, affine))
    return path


def _write_per_modality_case(
    folder: Path, case_id: str, case: SyntheticCase, layout: DatasetLayout
) -> tuple[dict[str, Path], Path]:
    """Write the four modality files and the label of one case into ``folder``."""
    affine = brats_affine(case.tissues.shape)
    images = {m: _write_nifti(folder / layout.modality_file(case_id, m), case.images[m], affine) for m in MODALITIES}
    label = _write_nifti(folder / layout.label_file(case_id), case.label(layout.label_convention), affine)
    return images, label


def _write_msd_case(out: Path, case_id: str, case: SyntheticCase, layout: DatasetLayout) -> tuple[dict[str, Path], Path]:
    """Write one case as MSD Task01 does: a 4D image (channels in :data:`MODALITIES` order) and a 3D label."""
    affine = brats_affine(case.tissues.shape)
    stacked = np.stack([case.images[m] for m in MODALITIES], axis=-1)
    image = _write_nifti(out / "imagesTr" / f"{case_id}.nii.gz", stacked, affine)
    label = _write_nifti(out / "labelsTr" / f"{case_id}.nii.gz", case.label(layout.label_convention), affine)
    return {m: image for m in MODALITIES}, label


def _case_folder(out: Path, layout: str, case_id: str, enhancing: bool) -> Path:
    """Folder of a per-modality case: BraTS 2018 sorts cases into HGG/ (enhancing) and LGG/ (non-enhancing)."""
    if layout == "brats2018":
        return out / ("HGG" if enhancing else "LGG") / case_id
    return out / case_id


def _msd_dataset_json(cases: Sequence[WrittenCase], layout: DatasetLayout) -> dict:
    """The ``dataset.json`` of an MSD Task01-like dataset holding ``cases``."""
    return {
        "name": "BRATS",
        "description": "Synthetic gliomas in the layout of MSD Task01_BrainTumour",
        "reference": "data_prep.synthetic_brats",
        "licence": "CC-BY-SA 4.0",
        "release": "synthetic",
        "tensorImageSize": "4D",
        "modality": {str(i): _MSD_MODALITY_NAMES[m] for i, m in enumerate(MODALITIES)},
        "labels": {"0": "background", **{str(v): name for v, name in layout.label_convention.labels.items()}},
        "numTraining": len(cases),
        "numTest": 0,
        "training": [
            {"image": f"./imagesTr/{c.case_id}.nii.gz", "label": f"./labelsTr/{c.case_id}.nii.gz"} for c in cases
        ],
        "test": [],
    }


def write_dataset(
    out: str | Path,
    n_cases: int,
    layout: str = "brats2018",
    shape: Sequence[int] = DEFAULT_SHAPE,
    seed: int = 0,
) -> list[WrittenCase]:
    """Generate ``n_cases`` cases and write them under ``out`` in the on-disk layout of ``layout``.

    Case ``i`` is ``generate_case(shape, case_rng(seed, i), enhancing_plan(n_cases, seed)[i], cavity)`` with
    ``cavity = cavity_plan(n_cases, seed)[i]`` for ``brats2024`` (False otherwise), so tests can regenerate the
    ground truth of any written case.

    Args:
        out: dataset root (created when missing; existing files of the same names are replaced atomically).
        n_cases: number of cases, at least 1.
        layout: a key of ``mckd.brats.conventions.LAYOUTS`` (``brats2018``, ``brats2021``, ``brats2023``,
            ``brats2024``, ``msd``); the layouts whose label convention defines RC get resection cavities.
        shape: volume size in stored voxel order (x, y, z); default the real BraTS size 240 x 240 x 155.
        seed: seed of the whole dataset.

    Raises:
        ValueError: for an unknown layout, a bad shape or ``n_cases < 1``.
        PermissionError: when ``out`` cannot be written.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout '{layout}', expected one of {', '.join(LAYOUTS)}.")
    if n_cases < 1:
        raise ValueError(f"the number of cases must be at least 1, got {n_cases}.")
    shape = _validated_shape(shape)
    out, spec = Path(out), LAYOUTS[layout]
    written = []
    with_cavity = "RC" in spec.label_convention.regions
    cavities = cavity_plan(n_cases, seed) if with_cavity else [False] * n_cases
    with progress_bar(n_cases, "synthetic cases", unit="case") as bar:
        for index, (enhancing, cavity) in enumerate(zip(enhancing_plan(n_cases, seed), cavities)):
            case_id = synthetic_case_id(layout, index)
            case = generate_case(shape, case_rng(seed, index), enhancing, cavity)
            if spec.four_d:
                images, label = _write_msd_case(out, case_id, case, spec)
            else:
                folder = _case_folder(out, layout, case_id, enhancing)
                images, label = _write_per_modality_case(folder, case_id, case, spec)
            written.append(WrittenCase(case_id, index, enhancing, images, label, cavity))
            logger.debug("wrote %s", case_id)
            bar.update(1)
    if spec.four_d:
        write_json_atomic(out / "dataset.json", _msd_dataset_json(written, spec))
    return written


def _parser() -> argparse.ArgumentParser:
    """Command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.synthetic_brats",
        description="Write synthetic BraTS-format cases (known ground truth) in the on-disk layout of a BraTS release.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset root to write")
    parser.add_argument("--cases", required=True, type=int, help="number of cases")
    parser.add_argument(
        "--shape",
        nargs=3,
        type=int,
        default=DEFAULT_SHAPE,
        metavar=("X", "Y", "Z"),
        help="volume size in stored voxel order (nibabel get_fdata().shape); default 240 240 155 like real BraTS",
    )
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    parser.add_argument("--layout", choices=tuple(LAYOUTS), default="brats2018", help="on-disk layout (default brats2018)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return 0 on success, 2 on a usage error or an unwritable output folder."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        written = write_dataset(args.out, args.cases, args.layout, args.shape, args.seed)
    except (ValueError, PermissionError) as err:
        logger.error("error: %s", err)
        return 2
    n_without = sum(not c.enhancing for c in written)
    with_cavity = "RC" in LAYOUTS[args.layout].label_convention.regions
    cavities = f", {sum(c.cavity for c in written)} with a resection cavity" if with_cavity else ""
    logger.info(
        "wrote %d %s cases (%d without enhancing tumour%s) of shape %s to %s",
        len(written), args.layout, n_without, cavities, tuple(args.shape), args.out,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
