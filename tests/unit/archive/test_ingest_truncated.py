"""A file cut short anywhere is refused by ingest, and nothing of it is kept (`ingest._check_complete`).

pydicom reads a cut file without complaint, so ingest checks it: the header's elements from the
lengths the header read recorded, the rest (pixel data and after) by walking it. Cuts are made in
each place that check covers: a small header value, an element's own tag and length, a header
value too long to be read with the header (deferred), the pixel data, and stray bytes after the
last element. The same again with an undefined-length sequence (no recorded extent) inside the
header, and as the header's last element, where the check walks the whole data set instead.
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


def _source(tmp_path: Path, *, undefined_sequence: str) -> Path:
    """A small CT slice with a long ImageComments, and an undefined-length sequence as `undefined_sequence` says."""
    path = samples.ct_series(tmp_path / "source", 1, size=32)[0].path
    ds = dcmread(path)
    ds.ImageComments = LONG_COMMENT
    if undefined_sequence:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = "1.2.3.4.5"
        keyword = "ReferencedImageSequence" if undefined_sequence == "inside" else "RequestAttributesSequence"
        setattr(ds, keyword, Sequence([item]))
        ds[keyword].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    header = list(dcmread(path, stop_before_pixels=True).values())
    if undefined_sequence:
        [sequence] = [elem for elem in header if elem.VR == "SQ"]
        assert sequence.is_undefined_length
        assert (sequence is header[-1]) == (undefined_sequence == "last")
    return path


def _value_offset(path: Path, keyword: str) -> int:
    header = dcmread(path, stop_before_pixels=True, defer_size=1024)
    return int(header.get_item(keyword, keep_deferred=True).value_tell)


def _cuts(path: Path, *, undefined_sequence: str) -> dict[str, bytes]:
    whole = path.read_bytes()
    pixels = dcmread(path, defer_size=16).get_item("PixelData", keep_deferred=True).value_tell
    name = _value_offset(path, "PatientName")
    cuts = {}
    if undefined_sequence:  # pydicom's own header read fails here ("No tag to read"): refused as unreadable
        cuts["inside the undefined-length sequence"] = whole[: whole.index(b"1.2.3.4.5") + 4]
    return cuts | {
        "inside a small header value": whole[: _value_offset(path, "SOPInstanceUID") + 5],
        "inside an element's tag and length": whole[: name - 8 + 3],
        "inside a deferred header value": whole[: _value_offset(path, "ImageComments") + 1500],
        "inside the pixel data": whole[: pixels + 100],
        "stray bytes after the last element": whole + b"\x00\x01\x02",
    }


@pytest.mark.parametrize("undefined_sequence", ["", "inside", "last"])
def test_a_cut_file_is_refused_wherever_it_is_cut(archive: Any, tmp_path: Path, undefined_sequence: str) -> None:
    source = _source(tmp_path, undefined_sequence=undefined_sequence)
    for where, data in _cuts(source, undefined_sequence=undefined_sequence).items():
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(data)
        with pytest.raises(errors.InvalidDataset, match=r"truncated|not a readable DICOM object") as refused:
            archive.store_file(cut, Origin.from_import("test"), move=True)
        assert cut.exists(), where  # a refused file is not taken over
        assert archive.counts()["instances"] == 0, where
        if "truncated" in str(refused.value):  # the header was read: the refusal names the object (audit)
            assert refused.value.sop_instance_uid, where
    assert [p for p in archive.settings.blob_path.rglob("*") if p.is_file()] == []

    archive.store_file(source, Origin.from_import("test"))
    assert archive.counts()["instances"] == 1
    stored = dcmread(next(p for p in archive.settings.blob_path.rglob("*") if p.is_file()))
    assert stored.ImageComments == LONG_COMMENT
