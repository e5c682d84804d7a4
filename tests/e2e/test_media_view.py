"""`pergamon view MEDIA`: a dcmmkdir-made media folder shown in the viewer, read-only, nothing imported (PDI)."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import dcmtk_env, free_port, require_tool
from e2e.browser import Browser, require_viewer
from pydicom.uid import RawDataStorage
from samples import ct_series, make_instance, write

from pergamon.media.fileset import find_dicomdir, referenced_files

SLICES = 4
IDENTITY = {
    "PatientName": "MEDIA^Patient^Anne",
    "PatientID": "PDI-4711",
    "IssuerOfPatientID": "HOSP-A",
    "PatientBirthDate": "19620314",
    "PatientSex": "F",
}


def make_media(root: Path) -> dict[str, str]:
    """A CD folder: DICOMDIR (dcmmkdir) over a CT series, an SR, a raw-data object, a file broken
    afterwards and one removed afterwards. Returns file ID -> what it is."""
    work = root.parent / "sources"
    ct = ct_series(work, SLICES, size=64, patient_id=IDENTITY["PatientID"], patient_name=IDENTITY["PatientName"])
    base = ct[0]
    extra = {k: v for k, v in IDENTITY.items() if k not in ("PatientName", "PatientID")}
    from pydicom import dcmread

    objects = []
    for i, sample in enumerate(ct):
        ds = dcmread(sample.path)
        for key, value in extra.items():
            setattr(ds, key, value)
        objects.append((f"CT{i + 1:06d}", ds))
    common = {"patient_id": IDENTITY["PatientID"], "patient_name": IDENTITY["PatientName"], "study_uid": base.study_uid}
    # Later series numbers: OHIF hangs the first series, which must be the CT.
    sr = make_instance("1.2.840.10008.5.1.4.1.1.88.33", extra=extra, series_number=90, **common)
    objects.append(("SR000001", sr))
    objects.append(("RAW00001", make_instance(RawDataStorage, extra=extra, series_number=99, **common)))
    folder = root / "DICOM"
    for name, ds in objects:
        write(ds, folder / name)
    subprocess.run(
        [require_tool("dcmmkdir"), "+r", "-Pgp", "+I", "+id", str(root), "+D", str(root / "DICOMDIR"), "DICOM"],
        cwd=root,
        env=dcmtk_env(),
        check=True,
        capture_output=True,
    )
    # After the DICOMDIR was made: one file broken (truncated into its header), one gone.
    broken = folder / f"CT{SLICES:06d}"
    broken.write_bytes(broken.read_bytes()[:200])
    (folder / f"CT{SLICES - 1:06d}").unlink()
    return {"DICOM/SR000001": "SR", "DICOM/RAW00001": "raw", f"DICOM/CT{SLICES:06d}": "broken"}


def checksums(root: Path) -> dict[str, str]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="session")
def viewer_site() -> Path:
    return require_viewer()


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "cdrom"
    root.mkdir()
    make_media(root)
    return root


@pytest.fixture
def view_process(media: Path, tmp_path: Path, viewer_site: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`pergamon view MEDIA` as a child process; yields its URL and the media's checksums from before it ran."""
    before = checksums(media)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pergamon.cli", "view", str(media), "--port", str(free_port())],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output = []
    for line in proc.stdout:
        output.append(line)
        found = re.search(r"Pergamon media viewer: (http://127\.0\.0\.1:\d+/)", line)
        if found:
            break
    else:
        proc.wait(30)
        pytest.fail(f"pergamon view exited with {proc.returncode}:\n{''.join(output)}")
    yield found.group(1), before
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    proc.stdout.close()
    assert not (cwd / "pergamon-data").exists()  # no archive was created (or imported into)


def test_dcmmkdir_media_is_read_as_a_file_set(media: Path) -> None:
    files = referenced_files(find_dicomdir(media))
    assert {f.file_id for f in files} >= {"DICOM/SR000001", "DICOM/RAW00001", f"DICOM/CT{SLICES:06d}"}
    missing = [f.file_id for f in files if f.path is None]
    assert missing == [f"DICOM/CT{SLICES - 1:06d}"]


def test_view_shows_the_patient_and_opens_the_study_without_importing(
    media: Path, view_process: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, before = view_process
    with Browser(url) as browser:
        browser.goto("/")
        banner = browser.text(".patient")
        assert "MEDIA, Patient Anne" in banner
        assert "PDI-4711" in banner and "HOSP-A" in banner and "1962-03-14" in banner and "Female" in banner
        problems = browser.text("#not-displayed")
        assert re.search(rf"DICOM/CT{SLICES:06d}\s+unreadable", problems)
        assert re.search(rf"DICOM/CT{SLICES - 1:06d}\s+missing", problems)
        assert re.search(r"DICOM/RAW00001\s+unknown SOP class for the viewer: Raw Data Storage", problems)
        assert "SR000001" not in problems  # the viewer shows SR documents
        browser.screenshot(tmp_path / "media-page.png", full_page=True)
        browser.click("a.open")
        browser.wait_for_text(rf"I:\d+ \(1/{SLICES - 2}\)", timeout=90)
        browser.screenshot(tmp_path / "media-viewer.png")
        log = browser.log()
    assert log["offOrigin"] == []
    assert log["httpErrors"] == []
    assert checksums(media) == before  # the media is untouched
