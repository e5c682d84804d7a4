"""A full disk: objects that do not fit are refused with Out of Resources, and nothing half-stored remains.

The data folder (blobs, incoming temporary files, the audit spool) is a 4 MiB tmpfs mounted for
the test (root only; CI runs as root), so the disk really fills: C-STORE from dcmtk `storescu`
and STOW-RS send 0.5 MB CT slices until it is full. Whatever was acknowledged must be whole in
the blob store and the index, everything else is gone, and once space is freed the archive
stores again without a restart.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import samples
from conftest import dcmtk_env, require_tool
from store_checks import index_instances, wait_for

from pergamon.runtime import Pergamon

SIZE = "4m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """`tmp_path / "data"` on a fresh 4 MiB tmpfs."""
    mount = tmp_path / "data"
    mount.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("PERGAMON_TEST_REQUIRE_PEERS") == "1":
            pytest.fail("mounting a small tmpfs needs root")
        pytest.skip("mounting a small tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def whole_blobs(app: Pergamon) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of its blob, checked against the digest the index recorded."""
    out = {}
    for uid, row in index_instances(app.settings).items():
        data = (app.settings.blob_path / row.blob_key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256, f"{uid}: blob differs from what was indexed"
        out[uid] = row.sha256
    return out


def leftovers(app: Pergamon) -> list[Path]:
    """Files in the blob store no index row points at, and incoming temporary files."""
    indexed = {row.blob_key for row in index_instances(app.settings).values()}
    blobs = [p for p in app.settings.blob_path.rglob("*") if p.is_file()]
    orphans = [p for p in blobs if str(p.relative_to(app.settings.blob_path)) not in indexed]
    return orphans + list(app.archive.temp_dir.iterdir())


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "store-worker"])
def test_c_store_on_a_full_disk_refuses_with_out_of_resources(
    small_disk: Path, start_server: Callable[..., Pergamon], tmp_path: Path, workers: int
) -> None:
    app = start_server(store_workers=workers)
    audited: list[bytes] = []
    forward = app.audit_trail.sink
    app.audit_trail.sink = lambda message: (audited.append(message), forward(message))  # type: ignore[method-assign]
    series = samples.ct_series(tmp_path / "ct", 12, size=512)  # ~6 MB: more than the disk holds
    sent = subprocess.run(
        [require_tool("storescu"), "-d", "--no-halt", "-aec", app.settings.dicom.ae_title, "127.0.0.1",
         str(app.settings.dicom.port), *[str(s.path) for s in series]],
        env=dcmtk_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    statuses = [s.upper() for s in re.findall(r"DIMSE Status\s*:\s*0x([0-9A-Fa-f]{4})", sent.stdout + sent.stderr)]
    ok = statuses.count("0000")
    assert 0 < ok < len(series), sent.stdout[-3000:]
    # Every C-STORE is answered on the same association: Out of Resources for what did not fit.
    assert statuses == ["0000"] * ok + ["A700"] * (len(series) - ok), statuses
    stored = whole_blobs(app)
    assert len(stored) == ok
    assert leftovers(app) == []

    def refusals() -> list[bytes]:  # 110104 DICOM Instances Transferred, outcome 8 (serious failure)
        return [m for m in audited if b'csd-code="110104"' in m and b'EventOutcomeIndicator="8"' in m]

    wait_for(lambda: len(refusals()) == len(series) - ok, 10, "an audit message for each refused C-STORE")

    for path in app.settings.blob_path.iterdir():  # the operator frees space
        shutil.rmtree(path)
    echo = subprocess.run(
        [require_tool("storescu"), "-aec", app.settings.dicom.ae_title, "127.0.0.1",
         str(app.settings.dicom.port), str(series[-1].path)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    assert (app.settings.blob_path / index_instances(app.settings)[series[-1].sop_instance_uid].blob_key).is_file()


def test_stow_on_a_full_disk_fails_the_parts_that_do_not_fit(
    small_disk: Path, start_server: Callable[..., Pergamon], tmp_path: Path
) -> None:
    app = start_server(store_workers=1)
    batches = [samples.ct_series(tmp_path / f"ct{n}", 4, size=512, seed=n) for n in range(3)]  # ~6 MB in all
    boundary = uuid.uuid4().hex
    url = f"http://127.0.0.1:{app.settings.http.port}{app.settings.http.base_path}/studies"
    headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}

    def body(samples_: list[samples.Sample]) -> bytes:
        parts = [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + s.path.read_bytes() + b"\r\n"
                 for s in samples_]  # fmt: skip
        return b"".join(parts) + f"--{boundary}--\r\n".encode()

    answers = [httpx.post(url, content=body(batch), headers=headers, timeout=60) for batch in batches]
    # The body is spooled before anything is stored: a body that does not fit at all is refused
    # whole (507 or 413), one that fits stores what it can, failing the rest with A700.
    codes = [a.status_code for a in answers]
    assert codes[0] == 200, answers[0].text
    assert all(code in (200, 202, 409, 413, 507) for code in codes), codes
    assert any(code != 200 for code in codes), codes
    for answer in answers:
        if answer.status_code in (202, 409):
            reasons = {item["00081197"]["Value"][0] for item in answer.json()["00081198"]["Value"]}
            assert reasons == {0xA700}, answer.text
    stored = whole_blobs(app)
    assert len(stored) >= len(batches[0])
    acknowledged = {
        item["00081155"]["Value"][0]
        for answer in answers
        if answer.status_code in (200, 202)
        for item in answer.json()["00081199"]["Value"]
    }
    assert set(stored) == acknowledged
    assert leftovers(app) == []
    assert httpx.get(f"{url}", headers={"Accept": "application/dicom+json"}, timeout=30).status_code == 200
