"""Reading a media's DICOMDIR: referenced files, lower-case ISO 9660 mounts, missing files, no DICOMDIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet
from pydicom.uid import CTImageStorage
from samples import make_instance, write

from pergamon.media.fileset import MediaError, find_dicomdir, referenced_files


def burn(root: Path, count: int) -> None:
    """A File-set written by pydicom: DICOMDIR plus `count` CT images."""
    sources = root.parent / "sources"
    fs = FileSet()
    for i in range(count):
        sample = write(make_instance(CTImageStorage, instance_number=i + 1), sources / f"{i}.dcm")
        fs.add(dcmread(sample.path))
    fs.write(root)
    fs._stage["t"].cleanup()  # pydicom's staging folder, else cleaned up (with a warning) at garbage collection


def test_lower_case_mount_and_a_missing_file(tmp_path: Path) -> None:
    root = tmp_path / "cd"
    burn(root, 3)
    for folder, dirs, files in os.walk(root, topdown=False):  # as Linux mounts ISO 9660 without Rock Ridge
        for name in [*files, *dirs]:
            os.rename(Path(folder) / name, Path(folder) / name.lower())
    files = referenced_files(find_dicomdir(root))
    assert len(files) == 3 and all(f.record_type == "IMAGE" for f in files)
    assert all(f.path is not None and f.path.is_file() for f in files)
    assert files[0].path is not None
    files[0].path.unlink()
    again = referenced_files(find_dicomdir(root))
    assert [f.path is None for f in again] == [True, False, False]
    assert again[0].file_id == files[0].file_id and again[0].file_id.isupper()


def test_a_folder_without_dicomdir_is_not_media(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no DICOMDIR"):
        find_dicomdir(tmp_path)
    (tmp_path / "DICOMDIR").write_bytes(b"not dicom")
    with pytest.raises(MediaError, match="not a readable DICOMDIR"):
        referenced_files(find_dicomdir(tmp_path))
