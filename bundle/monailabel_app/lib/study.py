"""A PACS study as one BraTS case: its series collected over DICOMweb and mapped to modalities.

A viewer asks MONAI Label to segment one series (the one on screen). :func:`collect_study` finds that series' study,
lists the study's series (QIDO-RS), reads each image series' attributes from the metadata of its first instance
(WADO-RS; a PACS's QIDO answer may leave out attributes such as ``ContrastBolusAgent``) and maps them to modalities
with the bundle's :mod:`mckd.brats.series_mapping` rules. The caller then downloads the mapped series through the
datastore and gives the bundle the four entries (a series folder, or None for a missing modality).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from dicomweb_client import DICOMwebClient
from monai.transforms import LoadImage
from monailabel.datastore.utils.dicom import dicom_web_download_series
from monailabel.transform.writer import write_itk, write_nifti

__all__ = ["StudyCase", "collect_study", "download_series", "native_grid_label", "infer_study"]

logger = logging.getLogger(__name__)

_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_MODALITY = "00080060"
_SOP_INSTANCE_UID = "00080018"


@dataclass(frozen=True)
class StudyCase:
    """One study mapped to modalities.

    Attributes:
        study_uid: StudyInstanceUID.
        requested: the series the request named.
        mapping: the :class:`~mckd.brats.series_mapping.SeriesMapping` (the bundle's copy of the class).
        patient_id: PatientID, for messages.
    """

    study_uid: str
    requested: str
    mapping: Any
    patient_id: str = ""


def _first(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    value = values[0]
    return str(value.get("Alphabetic", "") if isinstance(value, dict) else value)


def study_of(client: DICOMwebClient, series_uid: str) -> tuple[str, str]:
    """``(StudyInstanceUID, PatientID)`` of a series.

    Raises:
        LookupError: when the PACS has no such series.
    """
    found = [
        s
        for s in client.search_for_series(search_filters={"SeriesInstanceUID": series_uid}, fields=["PatientID"])
        if _first(s, _SERIES_UID) == series_uid
    ]
    if not found:
        raise LookupError(f"the PACS has no series {series_uid}.")
    return _first(found[0], _STUDY_UID), _first(found[0], "00100020")


def _series_metadata(client: DICOMwebClient, study_uid: str, item: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the series' first instance (all its attributes), or the QIDO item for a series without any."""
    series_uid = _first(item, _SERIES_UID)
    instances = client.search_for_instances(study_uid, series_uid, limit=1)
    if not instances:
        return item
    return client.retrieve_instance_metadata(study_uid, series_uid, _first(instances[0], _SOP_INSTANCE_UID))


def collect_study(
    client: DICOMwebClient,
    series_uid: str,
    series_info_cls: Any,
    map_series: Any,
    rules: Sequence[Any],
    image_modalities: Sequence[str] = ("MR",),
) -> StudyCase:
    """The study of ``series_uid`` with its series mapped to modalities.

    Args:
        client: the datastore's DICOMweb client.
        series_uid: the series the request named (any series of the study).
        series_info_cls: the bundle's ``SeriesInfo`` class.
        map_series: the bundle's ``map_series`` function.
        rules: the series rules.
        image_modalities: DICOM ``Modality`` values that can be BraTS inputs.

    Raises:
        LookupError: when the PACS has no such series.
        SeriesMappingError: (the bundle's) when the series cannot be mapped without a person's decision.
    """
    study_uid, patient_id = study_of(client, series_uid)
    infos = []
    wanted = {m.upper() for m in image_modalities}
    for item in client.search_for_series(study_uid):
        if _first(item, _MODALITY).upper() in wanted:
            item = _series_metadata(client, study_uid, item)
        infos.append(series_info_cls.from_dicom_json(item))
    mapping = map_series(infos, rules=rules, image_modalities=image_modalities)
    logger.info(
        "study %s (patient %s): %s; missing %s; unmatched %s; ignored %s",
        study_uid,
        patient_id,
        {m: str(s) for m, s in mapping.assigned.items()},
        list(mapping.missing),
        [str(s) for s in mapping.unmatched],
        [str(s) for s in mapping.ignored],
    )
    return StudyCase(study_uid=study_uid, requested=series_uid, mapping=mapping, patient_id=patient_id)


def download_series(client: DICOMwebClient, study_uid: str, series_uid: str, cache: str) -> str:
    """The folder of the series' DICOM files under ``cache`` (downloaded once: a stored series does not change)."""
    folder = os.path.join(cache, hashlib.md5(client.base_url.encode()).hexdigest(), series_uid)
    if os.path.isdir(folder) and os.listdir(folder):
        return folder
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f"{series_uid}.", dir=os.path.dirname(folder))
    try:
        dicom_web_download_series(study_uid, series_uid, partial, client)
        try:
            os.replace(partial, folder)
        except OSError:  # another request stored the same series meanwhile
            if not (os.path.isdir(folder) and os.listdir(folder)):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def native_grid_label(label_file: str, entry: Mapping[str, Any], to_native_grid: Callable) -> str:
    """The label map of ``label_file`` (NIfTI or NRRD, on the reference grid) resampled onto another series' grid
    (nearest neighbour, the bundle's ``alignment.to_native_grid``), written beside it in the same format (uint8, as
    MONAI Label writes label maps); returns the new file."""
    label = LoadImage(image_only=True, ensure_channel_first=True)(label_file)
    native = to_native_grid(label, entry)
    array = native.as_tensor()[0].numpy().astype(np.uint8)
    affine = np.asarray(native.affine, float)
    if label_file.endswith(".nrrd"):
        out = label_file[: -len(".nrrd")] + "_native.nrrd"
        write_itk(array, out, affine, np.uint8, compress=False)
    else:
        out = label_file.replace(".nii.gz", "").replace(".nii", "") + "_native.nii.gz"
        write_nifti(array, out, affine=affine, output_dtype=np.uint8)
    return out


def _truthy(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")


def infer_study(
    request: dict[str, Any],
    client: DICOMwebClient,
    cache: str,
    modules: Mapping[str, Any],
    rules: Sequence[Any],
    run_infer: Callable[[dict[str, Any]], dict[str, Any]],
    labels: Mapping[str, int],
    version: str,
) -> dict[str, Any]:
    """Segment the study of the series ``request["image"]`` and store the result in the PACS as a DICOM SEG.

    The study's series are mapped to modalities (:func:`collect_study`), downloaded, and given to the bundle as one
    case (``run_infer``: MONAI Label's own infer with the four series folders as the image); the bundle aligns them
    on the reference grid. The SEG (:func:`lib.dicom_seg.write_seg`) references the reference series and is stored
    with STOW-RS unless the request says ``"store_seg": false``. The label map returned is on the grid of the
    requested series (what a viewer showing that series needs), or on the reference grid when the requested series
    is not one of the mapped ones.

    Args:
        request: MONAI Label's infer request (``image``: a SeriesInstanceUID of the PACS).
        client: a DICOMweb client of the PACS.
        cache: folder for downloaded series.
        modules: the bundle's ``series_mapping`` and ``alignment`` modules.
        rules: the series rules.
        run_infer: MONAI Label's infer for a request whose image is the list of series folders.
        labels: sub-region name -> label value (the model's labels).
        version: the model's version for the SEG.

    Returns:
        MONAI Label's infer result; its ``params`` (the result JSON) gain ``study`` (which series served as which
        modality, the missing modalities, the unmatched and ignored series, the reference series) and ``dicom_seg``.
    """
    from lib.dicom_seg import write_seg

    mapping_module, alignment = modules["series_mapping"], modules["alignment"]
    case = collect_study(client, request["image"], mapping_module.SeriesInfo, mapping_module.map_series, rules)
    uids = case.mapping.series_uids()
    folders = [download_series(client, case.study_uid, uid, cache) if uid else None for uid in uids]
    # MONAI Label's writer takes the file type from the image path, which a list of folders does not have; OHIF's
    # MONAI Label panel asks for NRRD
    extension = request.get("result_extension") or ".nii.gz"
    study_request = dict(request, image=folders, case_id=f"study {case.study_uid}", result_extension=extension)
    result = run_infer(study_request)
    params = dict(result.get("params") or {})
    reference = params.get("reference_modality") or next(m for m, uid in zip(mapping_module.MODALITIES, uids) if uid)
    reference_series = case.mapping.assigned[reference]
    study = {"study_uid": case.study_uid, "requested_series": case.requested, **case.mapping.to_dict()}
    study["reference"] = {"modality": reference, "series_uid": reference_series.uid}
    params["study"] = study
    label_file = result.get("file")
    if _truthy(request.get("store_seg", True)):
        folder = folders[list(mapping_module.MODALITIES).index(reference)]
        seg = write_seg(label_file, folder, labels, algorithm=request["model"], version=version)
        client.store_instances([seg.dataset])
        params["dicom_seg"] = {
            "series_uid": str(seg.dataset.SeriesInstanceUID),
            "sop_instance_uid": str(seg.dataset.SOPInstanceUID),
            "referenced_series_uid": reference_series.uid,
            "frames": seg.frames,
            "segments": seg.segments,
        }
        logger.info("study %s: DICOM SEG %s stored", case.study_uid, seg.dataset.SeriesInstanceUID)
    requested = next((m for m, s in case.mapping.assigned.items() if s.uid == case.requested), None)
    returned = reference_series.uid
    if requested and requested != reference and requested in (params.get("alignment") or {}).get("modalities", {}):
        native = native_grid_label(label_file, params["alignment"]["modalities"][requested], alignment.to_native_grid)
        os.replace(native, label_file)
        returned = case.requested
    params["label_series_uid"] = returned
    return dict(result, params=params)
