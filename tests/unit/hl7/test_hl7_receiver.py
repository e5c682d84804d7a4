"""From bytes to ACK and log row (hl7/receiver.py, hl7/message_log.py), with test handlers on a real index."""

from __future__ import annotations

from typing import Any

import hl7
import hl7_samples
import pytest

from pergamon.archive.errors import NotFound
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Rejected, Hl7Router
from pergamon.hl7.mllp import Block
from pergamon.hl7.receiver import Hl7Receiver


class Recorder:
    """Test handlers: record what they were given; `fail` makes the next call raise it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Hl7Context]] = []
        self.fail: Exception | None = None

    def __call__(self, message: hl7.Message, context: Hl7Context) -> None:
        if self.fail is not None:
            raise self.fail
        self.calls.append((str(message.segment("MSH")[10]), context))


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def receiver(archive: Any, recorder: Recorder) -> Hl7Receiver:
    router = Hl7Router()
    router.register("ADT", "A01", recorder)
    router.register("ADT", "A08", recorder)
    router.register("ORM", "*", recorder)
    return Hl7Receiver(archive, router)


def receive(receiver: Hl7Receiver, data: bytes, **block: Any) -> tuple[hl7.Message | None, dict[str, Any]]:
    receipt = receiver.receive(Block(data, len(data), **block), peer="127.0.0.1:5000", transport="mllp")
    assert receipt.pk is not None
    row = receiver.log.get(receipt.pk)
    assert row is not None
    ack = hl7.parse(receipt.ack.decode("iso8859-1")) if receipt.ack is not None else None
    return ack, row


def test_accepted_message_is_acknowledged_aa_and_logged(receiver: Hl7Receiver, recorder: Recorder) -> None:
    ack, row = receive(receiver, hl7_samples.ADT_A01_231.encode("ascii"))
    assert ack is not None and str(ack.segment("MSA")[1]) == "AA"
    assert [c[0] for c in recorder.calls] == ["ADT0001"]
    context = recorder.calls[0][1]
    assert context.message_pk == row["pk"]
    assert (context.control_id, context.version, context.origin.door) == ("ADT0001", "2.3.1", "hl7")
    assert context.origin.peer == "127.0.0.1:5000"
    assert row["status"] == "AA"
    assert (row["message_type"], row["trigger_event"], row["control_id"], row["version"]) == (
        "ADT",
        "A01",
        "ADT0001",
        "2.3.1",
    )
    assert bytes(row["raw"]) == hl7_samples.ADT_A01_231.encode("ascii")
    assert row["ack"] is not None and "MSA|AA|ADT0001" in row["ack"]


def test_wildcard_trigger_matches_any_event(receiver: Hl7Receiver, recorder: Recorder) -> None:
    ack, _ = receive(receiver, hl7_samples.ORM_O01_231.encode("ascii"))
    assert ack is not None and str(ack.segment("MSA")[1]) == "AA"


@pytest.mark.parametrize(
    ("text", "code", "location"),
    [
        (hl7_samples.OMI_O23_251, "200", "MSH^1^9"),
        (hl7_samples.ADT_A40_231, "201", "MSH^1^9"),
        (hl7_samples.ADT_A01_231.replace("|2.3.1", "|2.7"), "203", "MSH^1^12"),
        (hl7_samples.ADT_A01_231.replace("|ADT0001|", "||"), "101", "MSH^1^10"),
        (hl7_samples.ADT_A08_LATIN1.replace("8859/1", "EBCDIC"), "103", "MSH^1^18"),
        (hl7_samples.ADT_A01_231.replace("\rPV1|", "\rP-1|"), "100", "P-1^1"),
    ],
    ids=["type", "event", "version", "control-id", "charset", "segment-id"],
)
def test_rejections_name_the_code_and_place(
    receiver: Hl7Receiver, recorder: Recorder, text: str, code: str, location: str
) -> None:
    ack, row = receive(receiver, text.encode("iso8859-1"))
    assert ack is not None
    assert str(ack.segment("MSA")[1]) == "AR"
    err = ack.segment("ERR")
    if str(ack.segment("MSH")[12]) < "2.5":
        assert str(err[1]).startswith(f"{location}^{code}&") or str(err[1]).startswith(f"{location}^^{code}&")
    else:
        assert str(err[3]).split("^")[0] == code
        assert str(err[2]) == location
    assert (row["status"], row["error_code"]) == ("AR", code)
    assert recorder.calls == []


def test_missing_msh_is_rejected_with_what_can_be_read(receiver: Hl7Receiver) -> None:
    ack, row = receive(receiver, b"PID|||123||DOE^JOHN\r")
    assert ack is not None
    assert str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("MSA")[2]) == ""
    assert str(ack.segment("ERR")[3]).startswith("100^")
    assert row["status"] == "AR" and row["message_type"] is None


def test_wrong_field_separators_are_rejected(receiver: Hl7Receiver) -> None:
    bad = hl7_samples.ADT_A01_231.replace("MSH|^~\\&|", "MSH|^~|", 1).encode("ascii")
    ack, row = receive(receiver, bad)
    assert ack is not None and str(ack.segment("MSA")[1]) == "AR"
    assert str(ack.segment("MSA")[2]) == "ADT0001"
    assert row["error_code"] == "102"


def test_application_error_is_ae_with_the_handlers_error(receiver: Hl7Receiver, recorder: Recorder) -> None:
    recorder.fail = Hl7ApplicationError("unknown patient PAT-1001", "204", "PID", 1, 3)
    ack, row = receive(receiver, hl7_samples.ADT_A08_25.encode("ascii"))
    assert ack is not None
    assert str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("ERR")[2]) == "PID^1^3"
    assert str(ack.segment("ERR")[8]) == "unknown patient PAT-1001"
    assert (row["status"], row["error_code"], row["error_text"]) == ("AE", "204", "unknown patient PAT-1001")


def test_handler_rejection_is_ar(receiver: Hl7Receiver, recorder: Recorder) -> None:
    recorder.fail = Hl7Rejected("PID-3 missing", "101", "PID", 1, 3)
    ack, _ = receive(receiver, hl7_samples.ADT_A08_25.encode("ascii"))
    assert ack is not None and str(ack.segment("MSA")[1]) == "AR"


def test_unexpected_handler_failure_is_ae_207_with_traceback_kept(receiver: Hl7Receiver, recorder: Recorder) -> None:
    recorder.fail = ZeroDivisionError("boom")
    ack, row = receive(receiver, hl7_samples.ADT_A08_25.encode("ascii"))
    assert ack is not None and str(ack.segment("MSA")[1]) == "AE"
    assert str(ack.segment("ERR")[3]).startswith("207^")
    assert row["error_code"] == "207"
    assert "ZeroDivisionError: boom" in row["detail"] and "Traceback" in row["detail"]


def test_truncated_frame_is_logged_rejected_without_ack(receiver: Hl7Receiver, recorder: Recorder) -> None:
    ack, row = receive(receiver, hl7_samples.ADT_A01_231.encode("ascii")[:60], incomplete=True)
    assert ack is None
    assert row["status"] == "AR" and row["ack"] is None
    assert recorder.calls == []


def test_oversize_message_is_rejected(receiver: Hl7Receiver, recorder: Recorder) -> None:
    data = hl7_samples.ADT_A01_231.encode("ascii")
    receipt = receiver.receive(Block(data, 10**9, oversize=True), peer="p", transport="mllp")
    assert receipt.status == "AR"
    assert recorder.calls == []


def test_non_ascii_message_is_acknowledged_in_its_character_set(receiver: Hl7Receiver, recorder: Recorder) -> None:
    receipt = receiver.receive(Block(hl7_samples.encoded(hl7_samples.ADT_A08_UTF8), 0), peer="p", transport="mllp")
    assert receipt.status == "AA" and receipt.ack is not None
    ack = hl7.parse(receipt.ack.decode("utf-8"))
    assert str(ack.segment("MSH")[18]) == "UNICODE UTF-8"


def test_replay_runs_the_message_again_as_a_new_row(receiver: Hl7Receiver, recorder: Recorder) -> None:
    recorder.fail = Hl7ApplicationError("not yet", "204")
    _, first = receive(receiver, hl7_samples.ADT_A08_25.encode("ascii"))
    assert first["status"] == "AE"
    recorder.fail = None
    receipt = receiver.replay(first["pk"])
    assert receipt.status == "AA"
    assert receipt.pk is not None and receipt.pk != first["pk"]
    second = receiver.log.get(receipt.pk)
    assert second is not None
    assert (second["replay_of"], second["transport"], second["status"]) == (first["pk"], "replay", "AA")
    assert [c[0] for c in recorder.calls] == ["ADT0002"]
    total, rows = receiver.log.search(status="AE")
    assert (total, [r["pk"] for r in rows]) == (1, [first["pk"]])
    with pytest.raises(NotFound):
        receiver.replay(10**6)


def test_log_search_filters_and_pages(receiver: Hl7Receiver) -> None:
    for i in range(3):
        receive(receiver, hl7_samples.with_control_id(hl7_samples.ADT_A01_231, f"C{i}").encode("ascii"))
    receive(receiver, hl7_samples.OMI_O23_251.encode("ascii"))
    total, rows = receiver.log.search(message_type="adt", limit=2)
    assert total == 3 and [r["control_id"] for r in rows] == ["C2", "C1"]
    total, rows = receiver.log.search(message_type="ADT", limit=2, offset=2)
    assert [r["control_id"] for r in rows] == ["C0"]
    total, rows = receiver.log.search(status="AR")
    assert total == 1 and rows[0]["message_type"] == "OMI"
    assert "raw" not in rows[0]
