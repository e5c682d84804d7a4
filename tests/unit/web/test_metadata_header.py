"""The WADO-RS metadata and frame reads get the same header from `archive.header` as from `dcmread`.

`frames.read_header` reads common files with ingest's own header reader (`read_header_deferring`)
and the rest with pydicom's. Over the sample corpus, each file's metadata JSON, pixel data location
and every deferred value must be what the `dcmread` path gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import dcmread
from pydicom.dataelem import RawDataElement

from pergamon.archive import frames, header
from pergamon.web.dicomweb.wado import instance_json


def _read_by_dcmread(path: Path, monkeypatch: pytest.MonkeyPatch) -> frames.InstanceHeader:
    """`frames.read_header` as it was: every file through `dcmread`."""
    with monkeypatch.context() as patch:
        patch.setattr(header, "read_header_deferring", lambda fp: None)
        return frames.read_header(path)


def _takes_fast_path(path: Path) -> bool:
    with open(path, "rb") as fp:
        return header.read_header_deferring(fp) is not None


def _deferred(found: frames.InstanceHeader) -> dict[int, Any]:
    """Every value the read left in the file, read now (by the header's own deferred read)."""
    ds = found.dataset
    return {
        int(tag): ds[tag].value
        for tag in ds.keys()  # noqa: SIM118 - iterating the Dataset would read deferred values
        if isinstance(raw := ds.get_item(tag, keep_deferred=True), RawDataElement) and raw.value is None
    }


def test_metadata_frames_and_deferred_values_equal_the_dcmread_path(
    index_corpus: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_path = 0
    for path in index_corpus:
        try:
            reference = _read_by_dcmread(path, monkeypatch)
        except Exception as exc:  # not readable DICOM: the new path must refuse it alike
            with pytest.raises(type(exc)):
                frames.read_header(path)
            continue
        fast = frames.read_header(path)
        fast_path += _takes_fast_path(path)
        assert fast.transfer_syntax == reference.transfer_syntax, path.name
        assert fast.pixel == reference.pixel, path.name
        assert fast.number_of_frames == reference.number_of_frames, path.name
        assert instance_json(fast, "bulk") == instance_json(reference, "bulk"), path.name
        assert _deferred(fast) == _deferred(reference), path.name
        if fast.pixel is not None and fast.number_of_frames and not fast.encapsulated:
            assert frames.read_frame(fast, 1) == frames.read_frame(reference, 1), path.name
    assert fast_path > len(index_corpus) / 2  # the common files do take the fast path


def test_a_long_text_value_stays_a_bulk_data_reference(tmp_path: Path) -> None:
    """As with `dcmread(defer_size=1024)`: a text over 1 KiB is left in the file, shown as a BulkDataURI."""
    path = samples.ct_series(tmp_path, 1)[0].path
    ds = dcmread(path)
    ds.ImageComments = "x" * 2000
    ds.save_as(path)
    found = frames.read_header(path)
    assert _takes_fast_path(path)
    rendered = instance_json(found, "bulk")
    assert rendered["00204000"] == {"vr": "LT", "BulkDataURI": "bulk/00204000"}
    assert found.dataset["ImageComments"].value == "x" * 2000
