"""A file cut short anywhere is refused by ingest, and nothing of it is kept (`ingest._check_complete`).

pydicom reads a cut file without complaint, so ingest checks it: the header's elements from the
lengths the header read recorded, the rest (pixel data and after) by walking it. Cuts are made in
each place that check covers: a small header value, an element's own tag and length, a header
value too long to be read with the header (deferred), the pixel data, and stray bytes after the
last element; the same with an undefined-length sequence in the header, where the check walks
the whole data set instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pergamon.archive import errors
from pergamon.archive.origin import Origin

LONG_COMMENT = "x" * 3000  # past the header read's 1 KiB: left in the file, read later if asked for


def _source(tmp_path: Path, *, undefined_sequence: bool) -> Path:
    """A small CT slice with a long ImageComments; with `undefined_sequence`, an undefined-length sequence too."""
    path = samples.ct_series(tmp_path / "source", 1, size=32)[0].path
    ds = dcmread(path)
    ds.ImageComments = LONG_COMMENT
    if undefined_sequence:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = "1.2.3.4.5"
        ds.ReferencedImageSequence = Sequence([item])
        ds["ReferencedImageSequence"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    if undefined_sequence:
        assert b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" in path.read_bytes()  # (0008,1140) undefined length
    return path


def _value_offset(path: Path, keyword: str) -> int:
    header = dcmread(path, stop_before_pixels=True, defer_size=1024)
    return int(header.get_item(keyword, keep_deferred=True).value_tell)


def _cuts(path: Path) -> dict[str, bytes]:
    whole = path.read_bytes()
    pixels = dcmread(path, defer_size=16).get_item("PixelData", keep_deferred=True).value_tell
    name = _value_offset(path, "PatientName")
    return {
        "inside a small header value": whole[: _value_offset(path, "SOPInstanceUID") + 5],
        "inside an element's tag and length": whole[: name - 8 + 3],
        "inside a deferred header value": whole[: _value_offset(path, "ImageComments") + 1500],
        "inside the pixel data": whole[: pixels + 100],
        "stray bytes after the last element": whole + b"\x00\x01\x02",
    }


@pytest.mark.parametrize("undefined_sequence", [False, True], ids=["defined-lengths", "undefined-length-sequence"])
def test_a_cut_file_is_refused_wherever_it_is_cut(archive: Any, tmp_path: Path, undefined_sequence: bool) -> None:
    source = _source(tmp_path, undefined_sequence=undefined_sequence)
    for where, data in _cuts(source).items():
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(data)
        with pytest.raises(errors.InvalidDataset, match="truncated") as refused:
            archive.store_file(cut, Origin.from_import("test"), move=True)
        assert cut.exists(), where  # a refused file is not taken over
        assert archive.counts()["instances"] == 0, where
        if where != "inside an element's tag and length":
            assert refused.value.sop_instance_uid, where  # the refusal still names the object (audit)
    assert [p for p in archive.settings.blob_path.rglob("*") if p.is_file()] == []

    archive.store_file(source, Origin.from_import("test"))
    assert archive.counts()["instances"] == 1
    stored = dcmread(next(p for p in archive.settings.blob_path.rglob("*") if p.is_file()))
    assert stored.ImageComments == LONG_COMMENT
