"""`archive.commitment.check_commitment`: what Pergamon commits to (PS3.4 J.3.2.1.3, IHE RAD-10).

Runs on the backend of PERGAMON_TEST_DB (the `archive` fixture), with pydicom's test files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select

from pergamon.archive import commitment
from pergamon.archive.commitment import CommitFailure, Reference, check_commitment
from pergamon.archive.index.schema import instance
from pergamon.archive.origin import Origin

MR_CLASS = "1.2.840.10008.5.1.4.1.1.4"


def store(archive: Any, name: str) -> Reference:
    path = Path(get_testdata_file(name))  # type: ignore[arg-type]
    result = archive.store_file(path, Origin.from_import(str(path)))
    return Reference(result.sop_class_uid, result.sop_instance_uid)


def blob_path(archive: Any, ref: Reference) -> Path:
    with archive.db.read() as conn:
        key = conn.execute(select(instance.c.blob_key).where(instance.c.sop_uid == ref.sop_instance_uid)).scalar_one()
    return Path(archive.settings.blob_path) / key


@pytest.fixture
def stored(archive: Any) -> list[Reference]:
    return [store(archive, name) for name in ("CT_small.dcm", "MR_small.dcm")]


def test_all_stored_and_intact_are_committed(archive: Any, stored: list[Reference]) -> None:
    result = check_commitment(archive, stored)
    assert result.committed == stored
    assert result.failed == []
    assert result.all_committed


def test_unknown_instance_is_no_such_instance(archive: Any, stored: list[Reference]) -> None:
    unknown = Reference(stored[0].sop_class_uid, generate_uid())
    result = check_commitment(archive, [unknown, *stored])
    assert result.committed == stored
    assert result.failed == [(unknown, CommitFailure.NO_SUCH_INSTANCE)]
    assert not result.all_committed


def test_other_sop_class_is_class_instance_conflict(archive: Any, stored: list[Reference]) -> None:
    wrong = Reference(MR_CLASS, stored[0].sop_instance_uid)  # CT_small.dcm named as an MR image
    result = check_commitment(archive, [wrong, stored[1]])
    assert result.committed == [stored[1]]
    assert result.failed == [(wrong, CommitFailure.CLASS_INSTANCE_CONFLICT)]


def test_changed_byte_is_processing_failure(archive: Any, stored: list[Reference]) -> None:
    path = blob_path(archive, stored[0])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    result = check_commitment(archive, stored)
    assert result.committed == [stored[1]]
    assert result.failed == [(stored[0], CommitFailure.PROCESSING_FAILURE)]


def test_truncated_blob_is_processing_failure(archive: Any, stored: list[Reference]) -> None:
    path = blob_path(archive, stored[1])
    path.write_bytes(path.read_bytes()[:-10])
    result = check_commitment(archive, stored)
    assert result.failed == [(stored[1], CommitFailure.PROCESSING_FAILURE)]


def test_missing_blob_is_processing_failure(archive: Any, stored: list[Reference]) -> None:
    blob_path(archive, stored[0]).unlink()
    result = check_commitment(archive, stored)
    assert result.committed == [stored[1]]
    assert result.failed == [(stored[0], CommitFailure.PROCESSING_FAILURE)]


def test_repeated_reference_is_reported_each_time(archive: Any, stored: list[Reference]) -> None:
    result = check_commitment(archive, [stored[0], stored[0]])
    assert result.committed == [stored[0], stored[0]]


def test_many_references_span_several_queries(archive: Any, stored: list[Reference], monkeypatch: Any) -> None:
    monkeypatch.setattr(commitment, "_QUERY_CHUNK", 2)
    unknown = [Reference(MR_CLASS, generate_uid()) for _ in range(5)]
    result = check_commitment(archive, [*unknown, *stored])
    assert result.committed == stored
    assert [ref for ref, _ in result.failed] == unknown


def test_instance_replaced_during_check_is_verified_again(archive: Any, stored: list[Reference]) -> None:
    """The blob read first was deleted by a replacing store (duplicate policy `replace`): the new one counts."""
    sop_uid = stored[0].sop_instance_uid
    old = commitment._lookup(archive, [sop_uid])[sop_uid]
    store(archive, "CT_small.dcm")  # same SOP Instance UID: new blob, old one deleted
    assert not (Path(archive.settings.blob_path) / old.blob_key).exists()
    assert commitment._verify_blob(archive, sop_uid, old) is None
