"""A real PACS for the tests: Orthanc with its DICOMweb plugin (Debian packages ``orthanc``, ``orthanc-dicomweb``).

Each :func:`running_orthanc` starts its own Orthanc on a free port with a temporary storage folder and configuration,
waits until its REST API answers, and stops it on exit. Orthanc 1.10 (Debian 12) has no option to bind the HTTP
server to one address: it listens on every interface, and ``RemoteAccessAllowed: false`` makes it refuse every
connection that does not come from this machine. The DICOM (DIMSE) server is off; everything goes over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.monailabel.servers import free_port, stop_process, tail

#: The Orthanc executable and the DICOMweb plugin the Debian packages install.
ORTHANC = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
#: The Debian packages that provide them (``.ci/run`` installs them).
PACKAGES = ("orthanc", "orthanc-dicomweb")
START_TIMEOUT_S = 60
REQUEST_TIMEOUT_S = 60


@dataclass(frozen=True)
class Pacs:
    """A running Orthanc: its REST root, its DICOMweb root and its log."""

    url: str
    log: Path

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"


def missing_packages() -> list[str]:
    """The Debian packages of :data:`PACKAGES` whose files are absent (empty when Orthanc can be started)."""
    missing = []
    if shutil.which(ORTHANC) is None:
        missing.append("orthanc")
    if not DICOMWEB_PLUGIN.exists():
        missing.append("orthanc-dicomweb")
    return missing


def _config(storage: Path, port: int) -> dict[str, Any]:
    return {
        "Name": "MCKD-TEST-PACS",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False},
        "StableAge": 1,
        "HttpTimeout": REQUEST_TIMEOUT_S,
    }


def request(
    url: str, data: bytes | None = None, method: str | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One HTTP request; returns ``(status, body)`` for any HTTP status."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    """The JSON body of a successful GET (an AssertionError with the body otherwise)."""
    status, body = request(url, headers=headers)
    assert status == 200, f"GET {url} answered {status}: {body[:500]!r}"
    return json.loads(body) if body else None


@contextlib.contextmanager
def running_orthanc(root: Path) -> Iterator[Pacs]:
    """Orthanc with DICOMweb on a free port, storage and configuration under ``root``; stopped on exit.

    Raises:
        AssertionError: with the log, when Orthanc exits or does not answer within :data:`START_TIMEOUT_S`.
    """
    storage, config_dir = root / "storage", root / "config"
    storage.mkdir(parents=True, exist_ok=True)
    config_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (config_dir / "orthanc.json").write_text(json.dumps(_config(storage, port), indent=2))
    log = root / "orthanc.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [ORTHANC, str(config_dir)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=root
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(f"Orthanc exited with {process.returncode}; log:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"Orthanc did not answer in {START_TIMEOUT_S} s; log:\n{tail(log)}")
            try:
                status, _ = request(f"{url}/system")
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        plugins = get_json(f"{url}/plugins")
        assert "dicom-web" in plugins, f"Orthanc runs without its DICOMweb plugin ({plugins}); log:\n{tail(log)}"
        yield Pacs(url=url, log=log)
    finally:
        stop_process(process)


def upload(pacs: Pacs, files: Iterable[Path]) -> list[str]:
    """Store DICOM ``files`` through Orthanc's REST API (``POST /instances``); returns Orthanc's instance ids."""
    ids = []
    for path in files:
        status, body = request(
            f"{pacs.url}/instances",
            data=path.read_bytes(),
            method="POST",
            headers={"Content-Type": "application/dicom"},
        )
        assert status == 200, f"Orthanc refused {path}: {status} {body[:300]!r}"
        ids.append(json.loads(body)["ID"])
    return ids


def study_series(pacs: Pacs, study_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS: the series of a study as DICOM JSON, with the attributes the series mapping reads."""
    fields = "&".join(f"includefield={tag}" for tag in ("0008103E", "00181030", "00180010", "00200011"))
    return get_json(f"{pacs.dicomweb}/studies/{study_uid}/series?{fields}", {"Accept": "application/dicom+json"})


def series_instances(pacs: Pacs, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
    """QIDO-RS: the instances of one series as DICOM JSON."""
    url = f"{pacs.dicomweb}/studies/{study_uid}/series/{series_uid}/instances"
    return get_json(url, {"Accept": "application/dicom+json"}) or []


def retrieve_instance(pacs: Pacs, study_uid: str, series_uid: str, instance_uid: str) -> bytes:
    """WADO-RS: one instance as a DICOM file (the multipart body's single part)."""
    url = f"{pacs.dicomweb}/studies/{study_uid}/series/{series_uid}/instances/{instance_uid}"
    status, body = request(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert status == 200, f"WADO-RS {url} answered {status}: {body[:300]!r}"
    return _single_part(body)


def _single_part(body: bytes) -> bytes:
    """The content of the only part of a ``multipart/related`` body."""
    boundary = body.split(b"\r\n", 1)[0]
    assert boundary.startswith(b"--"), f"not a multipart body: {body[:100]!r}"
    head, _, rest = body.partition(b"\r\n\r\n")
    content, _, _ = rest.rpartition(b"\r\n" + boundary)
    return content
