"""A clinician's path end to end: a PACS study in, a DICOM SEG out, seen in OHIF in a real browser.

- PACS: a real Orthanc with its DICOMweb plugin (Debian packages ``orthanc``, ``orthanc-dicomweb``) on a free port of
  127.0.0.1, temporary storage (:mod:`tests.monailabel.pacs`). Three synthetic studies of one patient each, uploaded
  through Orthanc's REST API: one MR series per sequence with scanner names ("AX FLAIR", "t1_mprage_sag_p2_iso",
  "T1 POST GAD", "T2W_TSE") on four different grids (``tests.dicom_builders.SCANNER_SEQUENCES``), plus a localiser;
  the same without T1; and one with two FLAIR series.
- MONAI Label (the repository's app; the CPU configuration's network fitted for about 15 s to the case the studies
  are made from, :mod:`tests.monailabel.tiny_model`, so that the segmentation is tumour-shaped) with
  ``--studies <orthanc>/dicom-web``: a request on any series segments the study and stores a DICOM SEG (highdicom)
  in Orthanc.
- OHIF, served by MONAI Label, in headless Chromium (``/usr/bin/chromium``, ``chromium-driver``) driven by selenium
  from MONAI Label's environment: the study's SEG is listed and drawn; the screenshots land in the artifacts folder
  (``$MCKD_TEST_ARTIFACTS``, default ``<tmp>/mckd-test-artifacts``) under ``pacs_ohif/``.

Skipped, with the reason, only when the Debian packages are absent and not under CI (``CI=true``): there ``.ci/run``
installs them, and their absence is a failure.
"""

from __future__ import annotations

import email.parser
import email.policy
import gzip
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from data_prep.synthetic_brats import SyntheticCase, case_rng, generate_case
from tests.dicom_builders import SCANNER_SEQUENCES, SeriesGrid, SequenceSpec, WrittenStudy, write_mr_study
from tests.monailabel.pacs import (
    Pacs,
    missing_packages,
    retrieve_instance,
    running_orthanc,
    series_instances,
    study_series,
    upload,
)
from tests.monailabel.servers import APP, BUNDLE, Server, bundle_copy, metadata_labels, running_server, tail
from tests.monailabel.tiny_model import briefly_trained_weights

pytestmark = pytest.mark.slow

MODEL = BUNDLE.name
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: SNOMED CT segmented property types of the SEG's segments, per sub-region name.
SUBREGION_CODES = {
    "necrotic and non-enhancing tumour core": "6574001",
    "peritumoral oedema": "79654002",
    "enhancing tumour": "108369006",
}
LOCALISER = SequenceSpec("AAHead_Scout_64ch-head-coil", "AAHead_Scout", SeriesGrid((32, 32, 3), (1.5, 1.5, 10.0)))
REPEATED_FLAIR = SequenceSpec("FLAIR_repeat", "t2_tirm_tra_dark-fluid", SeriesGrid((48, 48, 16), (1.0, 1.0, 2.0)))
#: Seconds of each step, printed at the end of the module (the issue's closing note reports them).
TIMES: dict[str, float] = {}


def _require(paths: dict[str, bool], what: str) -> None:
    """Skip with the reason when something the test needs is absent, unless under CI, where it is a failure."""
    missing = [name for name, present in paths.items() if not present]
    if not missing:
        return
    reason = f"{what}: Debian packages {missing} are not installed (`apt-get install {' '.join(missing)}`)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; .ci/run installs them under CI.")
    pytest.skip(reason)


def artifacts_dir() -> Path:
    root = Path(os.environ.get("MCKD_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "mckd-test-artifacts"))
    folder = root / "pacs_ohif"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pacs]:
    missing = set(missing_packages())
    _require({name: name not in missing for name in ("orthanc", "orthanc-dicomweb")}, "the PACS test")
    start = time.monotonic()
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as running:
        TIMES["orthanc_start"] = time.monotonic() - start
        yield running


@pytest.fixture(scope="module")
def case() -> SyntheticCase:
    """The synthetic case every study is made from (48 x 48 x 32 voxels of 1 mm)."""
    return generate_case((48, 48, 32), case_rng(0, 0), enhancing=True)


@pytest.fixture(scope="module")
def pacs_studies(pacs: Pacs, case: SyntheticCase, tmp_path_factory: pytest.TempPathFactory) -> dict[str, WrittenStudy]:
    """Three studies of three patients, written and uploaded: full (+ localiser), without T1, two FLAIRs."""
    root = tmp_path_factory.mktemp("pacs_studies")
    seq = dict(SCANNER_SEQUENCES)
    layouts = {
        "full": {"localiser": LOCALISER, **seq},
        "no_t1": {k: v for k, v in seq.items() if k != "t1"},
        "two_flair": {"flair": seq["flair"], "flair_repeat": REPEATED_FLAIR, "t2": seq["t2"]},
    }
    start = time.monotonic()
    written = {
        name: write_mr_study(root / name, case.images, layout, patient_id=f"MCKD-{name.upper()}")
        for name, layout in layouts.items()
    }
    TIMES["studies_written"] = time.monotonic() - start
    start = time.monotonic()
    for study in written.values():
        upload(pacs, study.files())
    TIMES["studies_uploaded"] = time.monotonic() - start
    return written


@pytest.fixture(scope="module")
def server(
    monailabel_python: Path, pacs: Pacs, case: SyntheticCase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("monailabel_pacs")
    start = time.monotonic()
    weights = briefly_trained_weights(root / "model.pt", case)
    TIMES["tiny_model_fitted"] = time.monotonic() - start
    app = Path(shutil.copytree(APP, root / "bundle" / APP.name, ignore=shutil.ignore_patterns("logs", "__pycache__")))
    bundle = bundle_copy(root / "bundle" / BUNDLE.name, weights)
    conf = {"bundle": str(bundle), "bundle_configs": "inference.json,cpu_small.json"}
    env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "dicomweb_cache"), "TMPDIR": str(root / "tmp")}
    (root / "tmp").mkdir()
    start = time.monotonic()
    with running_server(monailabel_python, app, pacs.dicomweb, conf, root / "server.log", env=env) as running:
        TIMES["monailabel_start"] = time.monotonic() - start
        yield running


def _infer(server: Server, series_uid: str, output: str, params: dict | None = None) -> tuple[int, bytes, str]:
    """POST /infer on a series of the PACS: ``(status, body, content type)``."""
    query = urllib.parse.urlencode({"image": series_uid, "output": output})
    body = urllib.parse.urlencode({"params": json.dumps(params or {})}).encode()
    req = urllib.request.Request(f"{server.url}/infer/{MODEL}?{query}", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=300) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("Content-Type", "")


def _infer_all(server: Server, series_uid: str, params: dict | None = None) -> tuple[dict, nib.Nifti1Image]:
    """A successful ``output=all`` request: the result JSON and the label map."""
    status, body, content_type = _infer(server, series_uid, "all", params)
    assert status == 200, f"/infer failed with {status}: {body[:800]!r}; log:\n{tail(server.log)}"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
        for part in message.iter_parts()
    }
    label = nib.Nifti1Image.from_bytes(gzip.decompress(parts["image"]))
    return json.loads(parts["params"]), label


def _seg_of(pacs: Pacs, study_uid: str, seg_uid: str) -> pydicom.Dataset:
    """The stored SEG instance, read back from Orthanc over DICOMweb."""
    series = {s["0020000E"]["Value"][0]: s for s in study_series(pacs, study_uid)}
    assert seg_uid in series, f"the SEG series {seg_uid} is not in the study"
    assert series[seg_uid]["00080060"]["Value"] == ["SEG"]
    instances = series_instances(pacs, study_uid, seg_uid)
    assert len(instances) == 1
    sop = instances[0]["00080018"]["Value"][0]
    return pydicom.dcmread(io.BytesIO(retrieve_instance(pacs, study_uid, seg_uid, sop)))


def _reference_slices(study: WrittenStudy, name: str) -> list[pydicom.Dataset]:
    slices = [pydicom.dcmread(p) for p in sorted(study.series[name].folder.glob("*.dcm"))]
    return sorted(slices, key=lambda d: float(d.ImagePositionPatient[2]))


def assert_seg_matches(seg: pydicom.Dataset, study: WrittenStudy, reference: str, label: np.ndarray) -> None:
    """The SEG references the reference series, has its geometry, one coded segment per sub-region, and frames equal
    to ``label`` (the label map on the reference grid, voxel ``(column, row, slice)``)."""
    slices = _reference_slices(study, reference)
    labels = metadata_labels()
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.StudyInstanceUID == study.uid and seg.PatientID == study.patient_id
    assert seg.FrameOfReferenceUID == slices[0].FrameOfReferenceUID
    referenced = seg.ReferencedSeriesSequence
    assert len(referenced) == 1 and referenced[0].SeriesInstanceUID == study.series[reference].uid
    assert {i.ReferencedSOPInstanceUID for i in referenced[0].ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in slices
    }
    segments = sorted(seg.SegmentSequence, key=lambda s: s.SegmentNumber)
    names = [name for name, _ in sorted(labels.items(), key=lambda item: item[1])]
    assert [s.SegmentLabel for s in segments] == names
    for segment in segments:
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == SUBREGION_CODES[segment.SegmentLabel]
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert int(seg.NumberOfFrames) == len(slices) * len(names)
    assert (seg.Rows, seg.Columns) == (slices[0].Rows, slices[0].Columns)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    np.testing.assert_allclose([float(v) for v in measures.PixelSpacing], [float(v) for v in slices[0].PixelSpacing])
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose([float(v) for v in orientation], [float(v) for v in slices[0].ImageOrientationPatient])
    z_of = {round(float(s.ImagePositionPatient[2]), 3): k for k, s in enumerate(slices)}
    pixels = seg.pixel_array
    values = dict(zip(range(1, len(names) + 1), sorted(labels.values())))
    for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        k = z_of[round(position[2], 3)]
        np.testing.assert_allclose(position, [float(v) for v in slices[k].ImagePositionPatient], atol=1e-3)
        expected = label[:, :, k].T == values[number]
        assert np.array_equal(pixels[f].astype(bool), expected), f"frame {f} (segment {number}, slice {k}) differs"


def test_a_study_is_segmented_from_its_series_and_stored_as_dicom_seg(
    pacs: Pacs, pacs_studies: dict[str, WrittenStudy], server: Server
) -> None:
    study = pacs_studies["full"]
    start = time.monotonic()
    result, label = _infer_all(server, study.series["flair"].uid)  # any series of the study: here FLAIR
    TIMES["infer_full_study_and_store_seg"] = time.monotonic() - start
    info = result["study"]
    assert info["study_uid"] == study.uid and info["requested_series"] == study.series["flair"].uid
    assert {m: s["series_uid"] for m, s in info["series"].items()} == {
        m: study.series[m].uid for m in ("flair", "t1", "t1ce", "t2")
    }
    assert info["series"]["t1"]["SeriesDescription"] == "t1_mprage_sag_p2_iso"
    assert info["missing"] == [] and result["modalities"] == ["flair", "t1", "t1ce", "t2"]
    assert [s["SeriesDescription"] for s in info["unmatched"]] == ["AAHead_Scout_64ch-head-coil"]
    # T1ce is the finest grid: the reference; the returned label map lies on the requested (FLAIR) series' grid
    assert info["reference"] == {"modality": "t1ce", "series_uid": study.series["t1ce"].uid}
    assert result["label_series_uid"] == study.series["flair"].uid
    assert label.shape == SCANNER_SEQUENCES["flair"].grid.shape
    np.testing.assert_allclose(label.affine, SCANNER_SEQUENCES["flair"].grid.affine_ras(), atol=1e-3)
    seg_info = result["dicom_seg"]
    assert seg_info["referenced_series_uid"] == study.series["t1ce"].uid
    assert [s["label"] for s in seg_info["segments"]] == list(SUBREGION_CODES)

    # the same network output on the reference grid (a request on the reference series, no second SEG)
    again, reference_label = _infer_all(server, study.series["t1ce"].uid, {"store_seg": False})
    assert "dicom_seg" not in again and again["label_series_uid"] == study.series["t1ce"].uid
    np.testing.assert_allclose(reference_label.affine, SCANNER_SEQUENCES["t1ce"].grid.affine_ras(), atol=1e-3)
    data = np.asarray(reference_label.dataobj).astype(int)
    assert set(np.unique(data).tolist()) <= {0, *metadata_labels().values()}
    assert [s["voxels"] for s in seg_info["segments"]] == [int((data == v).sum()) for v in (1, 2, 4)]
    # the fitted network finds each sub-region, and only around the tumour (under 3 % of the volume)
    assert all(s["voxels"] > 0 for s in seg_info["segments"]) and (data > 0).mean() < 0.03, seg_info["segments"]
    assert_seg_matches(_seg_of(pacs, study.uid, seg_info["series_uid"]), study, "t1ce", data)


def test_a_study_without_t1_is_segmented_from_the_three_series_it_has(
    pacs: Pacs, pacs_studies: dict[str, WrittenStudy], server: Server
) -> None:
    study = pacs_studies["no_t1"]
    result, label = _infer_all(server, study.series["t2"].uid)
    assert result["modalities"] == ["flair", "t1ce", "t2"] and result["study"]["missing"] == ["t1"]
    assert result["study"]["reference"]["modality"] == "t1ce"
    assert label.shape == SCANNER_SEQUENCES["t2"].grid.shape
    seg = _seg_of(pacs, study.uid, result["dicom_seg"]["series_uid"])
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series["t1ce"].uid


def test_two_candidates_for_one_modality_are_refused_with_the_reason(
    pacs_studies: dict[str, WrittenStudy], server: Server
) -> None:
    study = pacs_studies["two_flair"]
    status, body, _ = _infer(server, study.series["t2"].uid, "json")
    assert status == 422, body[:500]
    detail = json.loads(body)["detail"]
    assert "2 series of the study are candidates for flair" in detail
    assert "'AX FLAIR'" in detail and "'FLAIR_repeat'" in detail


def _hue_counts(png: Path, box: tuple[int, int, int, int]) -> dict[str, int]:
    """Pixels inside ``box`` (left, top, right, bottom) that are coloured (HSV saturation over 0.3, value over 0.25),
    by hue family: red, yellow, green (the SEG's segment colours; OHIF's own interface is blue)."""
    from PIL import Image

    hsv = np.asarray(Image.open(png).convert("RGB").crop(box).convert("HSV")).astype(float)
    hue, coloured = hsv[..., 0] * 360 / 255, (hsv[..., 1] > 0.3 * 255) & (hsv[..., 2] > 0.25 * 255)
    return {
        "red": int((coloured & ((hue < 20) | (hue >= 340))).sum()),
        "yellow": int((coloured & (hue >= 40) & (hue < 70)).sum()),
        "green": int((coloured & (hue >= 90) & (hue < 160)).sum()),
    }


def test_ohif_lists_and_draws_the_seg(pacs: Pacs, pacs_studies: dict[str, WrittenStudy], server: Server) -> None:
    _require({"chromium": CHROMIUM.exists(), "chromium-driver": CHROMEDRIVER.exists()}, "the OHIF test")
    study = pacs_studies["full"]
    segs = [s["0020000E"]["Value"][0] for s in study_series(pacs, study.uid) if s["00080060"]["Value"] == ["SEG"]]
    if not segs:  # the SEG test did not run first (this test was selected alone)
        segs = [_infer_all(server, study.series["flair"].uid)[0]["dicom_seg"]["series_uid"]]
    seg = _seg_of(pacs, study.uid, segs[0])
    # the image to look at: the reference slice with the most segmented pixels (OHIF counts from the lowest slice)
    slices = _reference_slices(study, "t1ce")
    z_of = {round(float(s.ImagePositionPatient[2]), 3): k for k, s in enumerate(slices)}
    per_slice = np.zeros(len(slices))
    for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        per_slice[z_of[round(float(frame.PlanePositionSequence[0].ImagePositionPatient[2]), 3)]] += seg.pixel_array[
            f
        ].sum()
    image = int(per_slice.argmax()) + 1
    out = artifacts_dir()
    for old in out.glob("ohif_*"):
        old.unlink()
    command = [str(server_python()), str(Path(__file__).with_name("ohif_browser.py")), "--server", server.url]
    command += ["--study", study.uid, "--reference", "T1 POST GAD", "--image", str(image), "--out", str(out)]
    command += ["--min-series", str(len(study.series) + 1)]
    for name in SUBREGION_CODES:
        command += ["--segment", name]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
    TIMES["ohif_open_and_draw"] = time.monotonic() - start
    report = json.loads((out / "ohif_report.json").read_text()) if (out / "ohif_report.json").exists() else {}
    assert done.returncode == 0, f"OHIF run failed: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert any(t.startswith("SEG | MCKD tumour sub-regions") for t in report["thumbnails"]), report["thumbnails"]
    assert report["segments_listed"] == list(SUBREGION_CODES), report["segments_listed"]
    before, after = out / "ohif_image.png", out / "ohif_seg.png"
    box = (290, 130, 1360, 720)  # inside the viewport: right of the study browser, between the overlay texts
    colours_before, colours_after = _hue_counts(before, box), _hue_counts(after, box)
    assert sum(colours_before.values()) < 200, colours_before  # a grey image in a blue interface
    gained = {k: colours_after[k] - colours_before[k] for k in colours_after}
    assert sum(gained.values()) > 1000 and sum(v > 100 for v in gained.values()) >= 2, (colours_before, colours_after)
    (out / "times.json").write_text(json.dumps({**TIMES, "browser_steps": report["steps"]}, indent=2))
    print(f"\nOHIF screenshots in {out}: image {image}, colours before {colours_before}, after {colours_after}")
    print("step times (s):", json.dumps({k: round(v, 1) for k, v in TIMES.items()}), report["steps"])


def server_python() -> Path:
    from tests.monailabel.conftest import monailabel_venv

    return monailabel_venv() / "bin" / "python"


def _coloured(png: Path, box: tuple[int, int, int, int]) -> int:
    """Pixels inside ``box`` with HSV saturation over 0.3 and value over 0.25 (any hue)."""
    from PIL import Image

    hsv = np.asarray(Image.open(png).convert("RGB").crop(box).convert("HSV")).astype(float)
    return int(((hsv[..., 1] > 0.3 * 255) & (hsv[..., 2] > 0.25 * 255)).sum())


def test_ohif_monai_label_panel_segments_the_study_on_screen(
    pacs: Pacs, pacs_studies: dict[str, WrittenStudy], server: Server
) -> None:
    """OHIF's MONAI Label mode: the panel connected to the server, Run on the series shown (the study without T1):
    the app segments the study, stores a SEG, and OHIF draws the returned label map (NRRD, as the panel asks)."""
    _require({"chromium": CHROMIUM.exists(), "chromium-driver": CHROMEDRIVER.exists()}, "the OHIF test")
    study = pacs_studies["no_t1"]

    def segs() -> list[str]:
        return [s["0020000E"]["Value"][0] for s in study_series(pacs, study.uid) if s["00080060"]["Value"] == ["SEG"]]

    before = set(segs())
    out = artifacts_dir()
    for old in out.glob("ohif_panel_*"):
        old.unlink()
    command = [str(server_python()), str(Path(__file__).with_name("ohif_browser.py")), "--panel"]
    command += ["--server", server.url, "--study", study.uid, "--out", str(out), "--min-series", "3"]
    start = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, check=False)
    TIMES["ohif_panel_segment"] = time.monotonic() - start
    assert done.returncode == 0, f"OHIF panel run failed: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    panel = [
        line
        for line in server.log.read_text(errors="replace").splitlines()
        if "Infer Request" in line and ".nrrd" in line
    ]
    assert any(f"'image': '{s.uid}'" in line for line in panel for s in study.series.values()), panel
    new = set(segs()) - before
    assert len(new) == 1, f"the panel's request stored {len(new)} SEGs"
    seg = _seg_of(pacs, study.uid, new.pop())
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == study.series["t1ce"].uid
    box = (290, 130, 1110, 720)  # the three viewports, between the study browser and the panel
    gained = _coloured(out / "ohif_panel_result.png", box) - _coloured(out / "ohif_panel_before.png", box)
    assert gained > 300, f"the panel's segmentation is not drawn ({gained} coloured pixels more)"
    print(f"\nOHIF panel screenshots in {out}; {gained} coloured pixels more; {TIMES['ohif_panel_segment']:.1f} s")


def test_a_bad_series_rules_file_stops_the_server_at_start(
    monailabel_python: Path, pacs: Pacs, untrained_checkpoint: Path, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"rules": {"pd": {"include": "pd"}}}))
    app = Path(shutil.copytree(APP, tmp_path / "app", ignore=shutil.ignore_patterns("logs", "__pycache__")))
    bundle = bundle_copy(tmp_path / BUNDLE.name, untrained_checkpoint)
    conf = {"bundle": str(bundle), "bundle_configs": "inference.json,cpu_small.json", "series_rules": str(rules)}
    env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}
    with pytest.raises(
        AssertionError, match=r"(?s)exited.*series rules '.*rules.json': rule for unknown modality 'pd'"
    ):
        with running_server(monailabel_python, app, pacs.dicomweb, conf, tmp_path / "server.log", env=env):
            pass
