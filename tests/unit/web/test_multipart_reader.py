"""The STOW-RS body reader writes Part-10 parts straight into blobs reserved for them (`Reserve`)."""

from __future__ import annotations

from pathlib import Path

from pergamon.web.dicomweb.multipart_reader import MultipartReader, parse_content_type

BOUNDARY = "b0undary"


def _body(*parts: tuple[str, bytes]) -> bytes:
    chunks = [f"--{BOUNDARY}\r\nContent-Type: {media}\r\n\r\n".encode() + data + b"\r\n" for media, data in parts]
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def _reader(tmp_path: Path) -> tuple[MultipartReader, list[str]]:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "blobs").mkdir()
    reserved: list[str] = []

    def reserve(headers: dict[str, str]) -> tuple[str, Path] | None:
        if parse_content_type(headers.get("content-type", ""))[0] != "application/dicom":
            return None
        key = f"blob{len(reserved)}.dcm"
        reserved.append(key)
        return key, tmp_path / "blobs" / key

    return MultipartReader(BOUNDARY, tmp_path / "tmp", reserve), reserved


def test_a_part_the_caller_reserves_a_blob_for_is_written_there(tmp_path: Path) -> None:
    reader, reserved = _reader(tmp_path)
    body = _body(("application/dicom", b"DICM" * 5000), ("application/json", b"[]"))

    for start in range(0, len(body), 4096):  # fed in pieces, as the network delivers it
        reader.feed(body[start : start + 4096])
    dicom, other = reader.finish()

    assert reserved == ["blob0.dcm"]
    assert (dicom.blob_key, dicom.path) == ("blob0.dcm", tmp_path / "blobs" / "blob0.dcm")
    assert dicom.path.read_bytes() == b"DICM" * 5000 and dicom.size == 20000
    assert other.blob_key is None and other.path.parent == tmp_path / "tmp"
    assert other.path.read_bytes() == b"[]"


def test_discard_removes_reserved_blobs_too(tmp_path: Path) -> None:
    reader, _ = _reader(tmp_path)
    body = _body(("application/dicom", b"x" * 100), ("application/json", b"{}"))

    reader.feed(body[: len(body) - 10])  # cut before the closing delimiter
    reader.discard()

    assert list((tmp_path / "blobs").iterdir()) == []
    assert list((tmp_path / "tmp").iterdir()) == []
