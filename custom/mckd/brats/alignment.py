"""Clinical inputs on different grids: one reference modality, the others resampled (and optionally co-registered) onto it.

Clinical modalities of one session rarely share a voxel grid: FLAIR may be 3 mm axial while T1ce is 1 mm isotropic, T1
may cover another field of view. BraTS-trained networks expect co-registered volumes on one grid, so
:class:`~mckd.brats.loading.LoadModalities` (``grid="resample"`` or ``"register"``) brings every modality onto the grid of
a reference modality before any network sees it:

- the reference is the highest-resolution available modality (smallest voxel volume; ties: the larger field of
  view, then modality order), or a named one when the case has it;
- ``resample``: every other modality is resampled through the world coordinates of the headers (MONAI's
  ``ResampleToMatch``, trilinear, zero outside its field of view);
- ``register``: first a rigid (6 degrees of freedom) registration to the reference by Mattes mutual information
  (SimpleITK, the ITK registration framework; multi-resolution, a few seconds per pair on a CPU), started from the
  scanner's own alignment; a registration that fails or ends beyond :class:`RigidLimits` is a
  :class:`~mckd.brats.cases.CaseError`.

The report of each case (:class:`AlignmentReport`: reference, each modality's native grid, the rigid transform and the
final metric) goes to the log and, through the inference config, to ``<case>_alignment.json`` beside the prediction;
:func:`to_native_grid` brings a label map from the reference grid back onto any modality's own grid (nearest neighbour).
What is not done: skull stripping, bias-field correction, non-rigid registration (see ``docs/clinical_inputs.md``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from scipy.spatial.transform import Rotation
from monai.transforms import ResampleToMatch, SpatialResample
from monai.utils import optional_import

from mckd.brats.cases import GEOMETRY_ATOL_MM, CaseError
from mckd.brats.conventions import MODALITIES

sitk, has_sitk = optional_import("SimpleITK")

__all__ = [
    "GRID_MODES",
    "RigidLimits",
    "ModalityGrid",
    "AlignmentReport",
    "choose_reference",
    "register_rigid",
    "align_modalities",
    "to_native_grid",
]

logger = logging.getLogger(__name__)

#: ``same``: the modalities must share one grid (a mismatch is a case error); ``resample``: through world
#: coordinates; ``register``: rigid registration, then resampling.
GRID_MODES: tuple[str, ...] = ("same", "resample", "register")
#: RAS <-> LPS (ITK's physical space).
_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Shrink factors of the registration's resolution levels, and the metric samples drawn per level.
_SHRINK = (4, 2, 1)
_SAMPLES = 30_000


@dataclass(frozen=True)
class RigidLimits:
    """The largest rigid correction accepted between two scans of one session; beyond it the case is an error.

    Attributes:
        max_rotation_deg: largest rotation about any axis, in degrees. Default 15.
        max_translation_mm: largest translation length, in mm. Default 30.
    """

    max_rotation_deg: float = 15.0
    max_translation_mm: float = 30.0


@dataclass
class ModalityGrid:
    """One modality's native grid and how it was brought onto the reference grid.

    Attributes:
        shape: the native spatial shape.
        affine: the native 4x4 affine (RAS, mm).
        resampled: whether it was resampled (False: it already lay on the reference grid, or it is the reference).
        transform: the rigid map from reference to native world coordinates (4x4, RAS); the identity unless
            registered.
        rotation_deg: the registration's rotation as a rotation vector in degrees (RAS x, y, z components; its length
            is the rotation angle), None unless registered.
        translation_mm: how far the registration moves the reference's centre (RAS, mm), None unless registered.
        metric: the final Mattes mutual information (lower is better), None unless registered.
    """

    shape: list[int]
    affine: list[list[float]]
    resampled: bool = False
    transform: list[list[float]] = field(default_factory=lambda: np.eye(4).tolist())
    rotation_deg: list[float] | None = None
    translation_mm: list[float] | None = None
    metric: float | None = None


@dataclass
class AlignmentReport:
    """How one case's modalities were brought onto one grid.

    Attributes:
        grid: the mode (:data:`GRID_MODES`).
        reference: the reference modality's key.
        modalities: per present modality key, its :class:`ModalityGrid`.
    """

    grid: str
    reference: str
    modalities: dict[str, ModalityGrid] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> AlignmentReport:
        raw = json.loads(text)
        return cls(raw["grid"], raw["reference"], {k: ModalityGrid(**v) for k, v in raw["modalities"].items()})


def _spacing(affine: Any) -> np.ndarray:
    return np.linalg.norm(np.asarray(affine, float)[:3, :3], axis=0)


def choose_reference(images: Sequence[MetaTensor | None], reference: str = "auto", case_id: str | None = None) -> int:
    """The index of the reference modality among the present ``images`` (channel-first MetaTensors).

    Args:
        images: one entry per modality, None where missing.
        reference: ``"auto"`` (the highest-resolution modality) or a modality key; a named modality the case lacks
            falls back to ``"auto"`` with a log line.
        case_id: the case, for the log.

    Raises:
        ValueError: for a name that is neither ``"auto"`` nor a modality key.
    """
    if reference != "auto" and reference not in MODALITIES:
        raise ValueError(f"reference modality must be 'auto' or one of {list(MODALITIES)}, got '{reference}'.")
    present = [m for m, image in enumerate(images) if image is not None]
    if reference != "auto":
        wanted = MODALITIES.index(reference)
        if wanted in present:
            return wanted
        logger.info(
            "case '%s': no %s to use as the reference; using the highest-resolution modality.", case_id, reference
        )

    def key(m: int) -> tuple[float, int, int]:
        image = images[m]
        return float(np.prod(_spacing(image.affine))), -int(np.prod(image.shape[1:])), m

    return min(present, key=key)


def _to_sitk(image: MetaTensor) -> Any:
    """A SimpleITK image (LPS) of a channel-first single-channel MetaTensor (RAS affine)."""
    array = image[0].detach().cpu().numpy().astype(np.float32)
    out = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    affine = _FLIP @ np.asarray(image.affine, float)
    spacing = _spacing(affine)
    out.SetSpacing(spacing.tolist())
    out.SetOrigin(affine[:3, 3].tolist())
    out.SetDirection((affine[:3, :3] / spacing).flatten().tolist())
    return out


def _euler_matrix_ras(transform: Any) -> np.ndarray:
    """The 4x4 RAS matrix of a SimpleITK rigid transform (which maps LPS points of the fixed to the moving image)."""
    matrix = np.eye(4)
    rotation = np.asarray(transform.GetMatrix(), float).reshape(3, 3)
    center = np.asarray(transform.GetCenter(), float)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = np.asarray(transform.GetTranslation(), float) + center - rotation @ center
    return _FLIP @ matrix @ _FLIP


def _registration_method(fixed_image: Any) -> Any:
    """SimpleITK's rigid registration set up as :func:`register_rigid` describes (Mattes MI, three levels)."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    voxels = float(np.prod(fixed_image.GetSize()))
    # about _SAMPLES metric samples per level, whatever the image size: seconds per pair on a CPU
    method.SetMetricSamplingPercentagePerLevel([min(1.0, _SAMPLES * s**3 / voxels) for s in _SHRINK], 1234)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=0.1, minStep=1e-5, numberOfIterations=300, relaxationFactor=0.7, gradientMagnitudeTolerance=1e-8
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_SHRINK))
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def register_rigid(
    moving: MetaTensor,
    fixed: MetaTensor,
    case_id: str | None = None,
    name: str = "",
    limits: RigidLimits = RigidLimits(),
) -> ModalityGrid:
    """Rigidly register ``moving`` to ``fixed`` by Mattes mutual information (SimpleITK).

    Starts from the scanner's alignment (identity in world coordinates, rotation about the fixed image's centre);
    three resolution levels (shrink 4, 2, 1; smoothing 2, 1, 0 mm); regular-step gradient descent with scales from
    physical shifts. Deterministic (fixed sampling seed).

    Returns:
        the moving image's :class:`ModalityGrid` with its transform (reference -> moving world, RAS), rotation,
        translation and final metric.

    Raises:
        CaseError: when SimpleITK is not installed, the registration fails, or it ends beyond ``limits``.
    """
    if not has_sitk:
        raise CaseError(case_id, "registration needs SimpleITK: pip install 'mckd[registration]' (or simpleitk).")
    fixed_image, moving_image = _to_sitk(fixed), _to_sitk(moving)
    initial = sitk.Euler3DTransform()
    initial.SetCenter(fixed_image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in fixed_image.GetSize()]))
    method = _registration_method(fixed_image)
    method.SetInitialTransform(initial, inPlace=True)
    try:
        method.Execute(fixed_image, moving_image)
    except RuntimeError as err:
        raise CaseError(case_id, f"the rigid registration of {name} to the reference failed: {err}") from err
    transform = _euler_matrix_ras(initial)
    angles = _rotation_deg(transform)
    translation = _world_shift(transform, fixed)
    shift = float(np.linalg.norm(translation))
    if np.abs(angles).max() > limits.max_rotation_deg or shift > limits.max_translation_mm:
        raise CaseError(
            case_id,
            f"the rigid registration of {name} to the reference ends with an implausible transform (rotation "
            f"{np.round(angles, 2).tolist()} degrees, shift {shift:.1f} mm; limits {limits.max_rotation_deg} degrees, "
            f"{limits.max_translation_mm} mm): are they scans of one session?",
        )
    grid = _grid_of(moving, resampled=True)
    grid.transform = transform.tolist()
    grid.rotation_deg = [float(a) for a in angles]
    grid.translation_mm = [float(t) for t in translation]
    grid.metric = float(method.GetMetricValue())
    return grid


def _rotation_deg(transform: np.ndarray) -> np.ndarray:
    """The rotation of a rigid RAS matrix as a rotation vector (axis times angle) in degrees, about x, y, z."""
    return np.degrees(Rotation.from_matrix(transform[:3, :3]).as_rotvec())


def _world_shift(transform: np.ndarray, image: MetaTensor) -> np.ndarray:
    """How far ``transform`` moves the centre of ``image`` (mm): the translation that a registration found."""
    centre_voxel = np.append((np.asarray(image.shape[1:], float) - 1) / 2, 1.0)
    centre = np.asarray(image.affine, float) @ centre_voxel
    return (transform @ centre - centre)[:3]


def _grid_of(image: MetaTensor, resampled: bool) -> ModalityGrid:
    return ModalityGrid(list(map(int, image.shape[1:])), np.asarray(image.affine, float).tolist(), resampled)


def _same_grid(a: MetaTensor, b: MetaTensor) -> bool:
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        return False
    return float(np.abs(np.asarray(a.affine, float) - np.asarray(b.affine, float)).max()) <= GEOMETRY_ATOL_MM


def _resample(image: MetaTensor, reference: MetaTensor, transform: np.ndarray) -> MetaTensor:
    """``image`` on the reference grid, sampled at ``transform(x)`` for each reference world point ``x``."""
    moved = MetaTensor(image.as_tensor().float(), meta=dict(image.meta))
    moved.affine = torch.as_tensor(np.linalg.inv(transform) @ np.asarray(image.affine, float), dtype=torch.float64)
    return ResampleToMatch(mode="bilinear", padding_mode="zeros")(moved, img_dst=reference)


def align_modalities(
    images: list[MetaTensor | None],
    grid: str,
    reference: str = "auto",
    case_id: str | None = None,
    limits: RigidLimits = RigidLimits(),
) -> tuple[list[MetaTensor | None], AlignmentReport]:
    """Bring the present ``images`` onto the grid of the reference modality (see the module docstring).

    Args:
        images: one channel-first MetaTensor per modality, None where missing.
        grid: ``"resample"`` or ``"register"``.
        reference: ``"auto"`` or a modality key (see :func:`choose_reference`).
        case_id: the case, for messages.
        limits: see :class:`RigidLimits`.

    Returns:
        the images on the reference grid (the reference itself unchanged) and the report.

    Raises:
        CaseError: when a registration fails or is implausible, or a modality does not overlap the reference's field
            of view.
    """
    ref_index = choose_reference(images, reference, case_id)
    ref = images[ref_index]
    report = AlignmentReport(grid, MODALITIES[ref_index], {MODALITIES[ref_index]: _grid_of(ref, resampled=False)})
    aligned: list[MetaTensor | None] = list(images)
    for m, image in enumerate(images):
        if image is None or m == ref_index:
            continue
        name = MODALITIES[m]
        if grid == "register":
            entry = register_rigid(image, ref, case_id, name, limits)
        else:
            entry = _grid_of(image, resampled=not _same_grid(image, ref))
        if entry.resampled:
            aligned[m] = _resample(image, ref, np.asarray(entry.transform))
            if not aligned[m].as_tensor().any() and image.as_tensor().any():
                raise CaseError(
                    case_id, f"{name} does not overlap the field of view of the reference {report.reference}."
                )
        report.modalities[name] = entry
        logger.info("case '%s': %s onto the %s grid: %s", case_id, name, report.reference, _describe(entry))
    return aligned, report


def _describe(entry: ModalityGrid) -> str:
    if entry.metric is not None:
        return (
            f"registered (rotation {np.round(entry.rotation_deg, 2).tolist()} degrees, translation "
            f"{np.round(entry.translation_mm, 2).tolist()} mm, metric {entry.metric:.4f}) and resampled"
        )
    return f"resampled from shape {entry.shape}" if entry.resampled else "already on it"


def to_native_grid(label: MetaTensor, entry: ModalityGrid | Mapping[str, Any]) -> MetaTensor:
    """A label map on the reference grid, resampled (nearest neighbour) onto one modality's native grid.

    Args:
        label: channel-first label map whose affine is the reference grid's.
        entry: the modality's :class:`ModalityGrid` (or its dictionary) from the case's report.
    """
    entry = entry if isinstance(entry, ModalityGrid) else ModalityGrid(**entry)
    native = np.asarray(entry.affine, float)
    destination = np.linalg.inv(np.asarray(entry.transform, float)) @ native
    source = MetaTensor(label.as_tensor(), meta=dict(label.meta))
    out = SpatialResample(mode="nearest", padding_mode="zeros", dtype=torch.float32)(
        source, dst_affine=torch.as_tensor(destination), spatial_size=entry.shape
    )
    out = MetaTensor(out.as_tensor().to(label.dtype), meta=dict(out.meta))
    out.affine = torch.as_tensor(native, dtype=torch.float64)
    return out
