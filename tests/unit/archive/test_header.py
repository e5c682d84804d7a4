"""Ingest's own header reader (`archive.header`) gives what pydicom's `dcmread` gives, for every file.

Compared over the sample corpus (every storage kind, the character sets, pydicom's test files) and
over one CT slice cut at every few bytes of its header and damaged in ways pydicom's reader
tolerates: the same header elements, the same index record, the same refusal.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import samples
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.uid import ImplicitVRLittleEndian

from pergamon.archive import errors, header, ingest

NO_EXPECTATION = ingest._Expected(None, None, None)


def _pydicom_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `read_header` take its `dcmread` path for every file: the reference."""

    def not_simple(self: Any) -> Any:
        raise header._NotSimple

    monkeypatch.setattr(header._Reader, "header", not_simple)


def _outcome(data: bytes, monkeypatch: pytest.MonkeyPatch | None = None) -> Any:
    """What ingest's header read and check make of `data`: the record's levels, or the refusal."""
    path = Path(f"/dev/shm/pergamon-header-{id(data)}.dcm")
    path.write_bytes(data)
    try:
        with open(path, "rb") as fp:
            checked = ingest._read_and_check(fp, NO_EXPECTATION)
    except errors.PergamonError as exc:
        return type(exc).__name__, str(exc), exc.sop_instance_uid
    finally:
        path.unlink()
    record = checked.record
    levels = (record.patient, record.study, record.series, record.instance)
    return checked.transfer_syntax, [(level.columns, level.attrs) for level in levels]


def _same_element(fast: Dataset, reference: Dataset, tag: Any) -> bool:
    """Same VR, place and value; a bulk value pydicom left in the file must be left there by ours too."""
    ours = fast.get_item(tag, keep_deferred=True)  # as read: nothing converted or read later
    theirs = reference.get_item(tag, keep_deferred=True)
    if isinstance(ours, RawDataElement) and isinstance(theirs, RawDataElement):
        if (ours.VR, ours.length, ours.value_tell) != (theirs.VR, theirs.length, theirs.value_tell):
            return False
        if ours.value is None:  # deferred
            return theirs.value is None
    return _json(fast, tag) == _json(reference, tag)


def _json(ds: Dataset, tag: Any) -> Any:
    """The element converted (pydicom reads a value it deferred now), as DICOM JSON, or the error converting it."""
    try:
        elem = ds[tag]
        return elem.VR, elem.to_json_dict(None, 1024)
    except Exception as exc:
        return repr(exc)


def test_the_header_equals_pydicoms_over_the_corpus(index_corpus: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    fallbacks = []
    for path in index_corpus:
        try:
            reference = dcmread(path, stop_before_pixels=True, defer_size=1024)
        except Exception:
            continue  # not a Part-10 file: both refuse it (see the cut-file test)
        with open(path, "rb") as fp:
            fast, transfer_syntax = header.read_header(fp)
        if isinstance(fast, FileDataset):  # what `dcmread` returns: the file took pydicom's path
            fallbacks.append(path.name)
        assert transfer_syntax == str(reference.file_meta.TransferSyntaxUID), path.name
        assert fast.original_encoding == reference.original_encoding, path.name
        assert list(fast.keys()) == list(reference.keys()), path.name
        for tag in reference.keys():  # noqa: SIM118 - iterating a Dataset yields (converted) elements
            assert _same_element(fast, reference, tag), (path.name, tag)
        assert _outcome(path.read_bytes()) == _outcome_of_reference(path, monkeypatch), path.name
    # The corpus holds big endian, deflated and odd files on purpose; the common ones take the fast path.
    print("read by dcmread:", fallbacks)
    assert len(fallbacks) < len(index_corpus) / 3, fallbacks


def _outcome_of_reference(path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        _pydicom_only(patch)
        return _outcome(path.read_bytes())


def _ct_slice(tmp_path: Path, *, implicit: bool) -> bytes:
    """A small CT slice with a long comment, an undefined-length sequence and a defined-length one."""
    path = samples.ct_series(
        tmp_path / ("implicit" if implicit else "explicit"),
        1,
        size=16,
        transfer_syntax=ImplicitVRLittleEndian if implicit else "1.2.840.10008.1.2.1",
    )[0].path
    ds = dcmread(path)
    ds.ImageComments = "c" * 1500
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4.5"
    ds.ReferencedImageSequence = Sequence([item])
    ds["ReferencedImageSequence"].is_undefined_length = True
    ds.SourceImageSequence = Sequence([item])
    ds.save_as(path, enforce_file_format=True)
    return path.read_bytes()


@pytest.mark.parametrize("implicit", [False, True])
def test_a_cut_or_damaged_header_gets_the_same_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, implicit: bool
) -> None:
    whole = _ct_slice(tmp_path, implicit=implicit)
    pixels = whole.index(b"\xe0\x7f\x10\x00")
    variants = {f"cut at {n}": whole[:n] for n in range(0, pixels + 40, 7)}
    variants["whole"] = whole
    variants["stray bytes after the end"] = whole + b"\x00\x01\x02"
    name_at = whole.index(b"\x10\x00\x10\x00")  # (0010,0010) Patient's Name
    variants["a VR that is not one"] = whole[: name_at + 4] + b"zz" + whole[name_at + 6 :]
    variants["a length past the end"] = whole[: name_at + 6] + b"\xff\x7f" + whole[name_at + 8 :]
    variants["no preamble"] = whole[128:]
    for what, data in variants.items():
        fast = _outcome(data)
        with monkeypatch.context() as patch:
            _pydicom_only(patch)
            reference = _outcome(data)
        assert fast == reference, what
    assert _outcome(whole)[0] == ("1.2.840.10008.1.2" if implicit else "1.2.840.10008.1.2.1")


def test_a_long_bulk_value_stays_in_the_file(tmp_path: Path) -> None:
    """A bulk value over 1 KiB before the pixel data is not read (memory stays flat for any size), as with dcmread."""
    path = samples.ct_series(tmp_path, 1, size=16)[0].path
    ds = dcmread(path)
    ds.add_new(0x00091010, "OB", b"\x01" * 300_000)  # a private blob, as some modalities write
    ds.add_new(0x00091002, "LO", "PRIVATE CREATOR")
    ds.save_as(path, enforce_file_format=True)
    reads: list[int] = []
    with open(path, "rb") as fp:
        tracked = io.BufferedReader(fp.raw)  # type: ignore[arg-type]
        real_read = tracked.read
        tracked.read = lambda n=-1: reads.append(n) or real_read(n)  # type: ignore[method-assign]
        fast, _ = header.read_header(tracked)
    blob = fast.get_item(0x00091010, keep_deferred=True)
    assert isinstance(blob, RawDataElement) and blob.value is None and blob.length == 300_000
    assert max(reads) <= 1 << 16
    assert fast.SOPInstanceUID == ds.SOPInstanceUID  # the elements after it were read
