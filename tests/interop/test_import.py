"""`pergamon import PATH`, run as the command users run, on a messy folder tree.

The tree holds several studies in nested folders, a media folder with its DICOMDIR (made by
dcmtk's dcmmkdir), a text file, an empty file and a DICOM file cut short inside its pixel data.
The good files must be indexed and stored byte for byte, the bad ones listed with a reason, the
exit status must say that something failed, and the source tree must stay exactly as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import samples
from conftest import dcmtk_env, require_tool
from pydicom.uid import CTImageStorage, MRImageStorage, SecondaryCaptureImageStorage, generate_uid
from store_checks import (
    assert_blobs_match_index,
    assert_counts_consistent,
    blob_files,
    index_instances,
    sha256_file,
    temp_leftovers,
)

from pergamon.config import Settings

pytestmark = pytest.mark.interop


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """(SHA-256, size, mtime_ns) of every file under `root`."""
    result = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            stat = path.stat()
            result[str(path.relative_to(root))] = (sha256_file(path), stat.st_size, stat.st_mtime_ns)
    return result


def build_tree(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """The messy tree; returns ({SOP Instance UID: source file} of good files, {name: bad file})."""
    good: dict[str, Path] = {}
    study1 = generate_uid()
    for s in samples.ct_series(root / "ward-a" / "study1" / "series1", 3, study_uid=study1, size=64):
        good[s.sop_instance_uid] = s.path
    mr = samples.make_instance(MRImageStorage, study_uid=study1, patient_id=samples.DEFAULT_PATIENT_ID, seed=4)
    s = samples.write(mr, root / "ward-a" / "study1" / "series2" / "mr.dcm")
    good[s.sop_instance_uid] = s.path
    sc = samples.make_instance(SecondaryCaptureImageStorage, patient_id="PGM-IMPORT-2", seed=5)
    s = samples.write(sc, root / "ward-b" / "deep" / "er" / "and" / "deeper" / "sc.dcm")
    good[s.sop_instance_uid] = s.path

    # A CD-like folder: files named as ISO 9660 wants them, and a DICOMDIR made by dcmtk's dcmmkdir.
    cd = root / "CD"
    for n, seed in enumerate((6, 7), 1):
        ds = samples.make_instance(CTImageStorage, patient_id="PGM-IMPORT-CD", seed=seed)
        s = samples.write(ds, cd / "DIR00001" / f"IMG{n:05d}")
        good[s.sop_instance_uid] = s.path
    made = subprocess.run(
        [require_tool("dcmmkdir"), "+r", "+I", "DIR00001"], cwd=cd, env=dcmtk_env(), capture_output=True, text=True
    )
    assert made.returncode == 0 and (cd / "DICOMDIR").is_file(), made.stderr

    bad = {"text": root / "notes.txt", "empty": root / "ward-b" / "empty.dcm", "truncated": root / "ward-b" / "cut.dcm"}
    bad["text"].write_text("Not an image. Scanned on Tuesday.\n")
    bad["empty"].write_bytes(b"")
    whole = samples.write(samples.make_instance(CTImageStorage, seed=8), root / "whole.dcm")
    bad["truncated"].write_bytes(whole.path.read_bytes()[:-700])  # cut inside the Pixel Data
    whole.path.unlink()
    return good, bad


def write_config(tmp_path: Path, database_url: str) -> tuple[Path, Settings]:
    from pergamon.config import load_settings

    config = tmp_path / "pergamon.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n[database]\nurl = "{database_url}"\n')
    return config, load_settings(config, environ={})


def run_import(config: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PERGAMON_")}
    return subprocess.run(
        [sys.executable, "-m", "pergamon.cli", "--config", str(config), "import", *args],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def failure_lines(stderr: str) -> dict[str, str]:
    """{file: reason} from the summary's `failed: FILE: REASON` lines."""
    result = {}
    for line in stderr.splitlines():
        line = line.strip()
        if line.startswith("failed: "):
            path, _, reason = line[len("failed: ") :].partition(": ")
            result[path] = reason
    return result


def test_import_messy_tree(tmp_path: Path, database_url: str) -> None:
    root = tmp_path / "media"
    good, bad = build_tree(root)
    before = snapshot(root)
    config, settings = write_config(tmp_path, database_url)
    total_files = len(before)
    assert total_files == len(good) + len(bad) + 1  # + the DICOMDIR

    first = run_import(config, str(root))
    assert first.returncode == 1, first.stderr
    summary = f"imported {len(good)} new, 0 replaced, 0 duplicates ignored, 1 skipped, {len(bad)} failed"
    assert summary in first.stderr
    failures = failure_lines(first.stderr)
    assert set(failures) == {str(p) for p in bad.values()}, first.stderr
    assert "not a readable DICOM object" in failures[str(bad["text"])]
    assert "not a readable DICOM object" in failures[str(bad["empty"])]
    assert "truncated" in failures[str(bad["truncated"])]
    assert f"{total_files}/{total_files}" in first.stderr and "100%" in first.stderr, "no progress bar"

    rows = assert_blobs_match_index(settings)
    assert set(rows) == set(good)
    for uid, source in good.items():  # imported files are kept exactly as they are, File Meta included
        assert sha256_file(settings.blob_path / rows[uid].blob_key) == sha256_file(source), source
    counts = assert_counts_consistent(settings)
    assert (counts["patients"], counts["studies"], counts["instances"]) == (3, 4, len(good))
    assert snapshot(root) == before, "the import changed the source tree"
    assert temp_leftovers(settings) == []

    # Again, default policy (replace): same failures, everything replaced, counts unchanged.
    second = run_import(config, "--no-progress", str(root))
    assert second.returncode == 1, second.stderr
    assert f"imported 0 new, {len(good)} replaced, 0 duplicates ignored, 1 skipped, {len(bad)} failed" in second.stderr
    assert set(failure_lines(second.stderr)) == set(failures)
    assert "%|" not in second.stderr and f"{total_files}/{total_files}" not in second.stderr, "progress bar shown"
    rows_again = assert_blobs_match_index(settings)
    assert set(rows_again) == set(good)
    assert len(blob_files(settings)) == len(good), "replaced blobs were not removed"
    assert assert_counts_consistent(settings) == counts
    assert snapshot(root) == before

    # Only good files (the media folder): exit 0; with the ignore policy from the environment.
    third = run_import(config, "--no-progress", str(root / "CD"), env={"PERGAMON_DICOM_DUPLICATE_POLICY": "ignore"})
    assert third.returncode == 0, third.stderr
    assert "imported 0 new, 0 replaced, 2 duplicates ignored, 1 skipped, 0 failed" in third.stderr
    assert index_instances(settings) == rows_again


def test_import_of_a_missing_path_fails_clearly(tmp_path: Path, database_url: str) -> None:
    config, settings = write_config(tmp_path, database_url)
    missing = tmp_path / "no-such-folder"
    result = run_import(config, str(missing))
    assert result.returncode == 2
    assert f"no such file or folder: {missing}" in result.stderr
    assert not (settings.server.data_dir / "index.sqlite").exists()
