"""ORM^O01 / OMI^O23 handlers (hl7.orders): each ORC-1 order control, and the errors a bad message gets."""

from __future__ import annotations

from typing import Any

import hl7
import pytest
from order_messages import omi, orm

from pergamon.archive import orders
from pergamon.archive.events import OrderReceived
from pergamon.archive.origin import Origin
from pergamon.hl7 import orders as hl7_orders
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Router

CONTEXT = Hl7Context(origin=Origin("hl7", peer="127.0.0.1:1"), control_id="1", version="2.5.1")


def send(archive: Any, text: str) -> None:
    router = Hl7Router()
    hl7_orders.register(router, archive)
    message = hl7.parse(text)
    message_type, trigger = str(message.segment("MSH")[9][0][0]), str(message.segment("MSH")[9][0][1])
    handler = router.lookup(message_type, trigger)
    assert handler is not None
    handler(message, CONTEXT)


def all_orders(archive: Any) -> list[dict[str, Any]]:
    with archive.db.read() as conn:
        return [orders.get_order(conn, row["pk"]) for row in orders.list_orders(conn)]


def test_orm_new_order_is_stored_with_its_zds_study_uid(archive: Any) -> None:
    send(archive, orm("NW", "PL1", accession="ACC1", study_uid="1.2.826.0.1.1"))
    (order,) = all_orders(archive)
    assert order["placer_order_number"] == "PL1"
    assert (order["accession_number"], order["requested_procedure_id"], order["study_uid"]) == (
        "ACC1",
        "RP1",
        "1.2.826.0.1.1",
    )
    assert (order["patient_id"], order["patient_issuer"], order["patient_name"]) == ("PAT1", "HOSP", "DOE^JANE")
    assert order["procedure_code"] == {"value": "CTHEAD", "scheme": "99X", "meaning": "CT head"}
    assert order["status"] == "SC"
    assert order["message_type"] == "ORM^O01"
    (step,) = order["steps"]
    assert (step["sps_id"], step["modality"], step["start_datetime"]) == ("SPS1", "CT", "20261127090000")
    assert step["protocol_codes"] == [{"value": "P1", "scheme": "99X", "meaning": "Head protocol"}]


def test_omi_new_order_has_one_step_per_ipc(archive: Any) -> None:
    steps = (("SPS1", "CT", "CT_ROOM1"), ("SPS2", "MR", "MR_ROOM2"))
    send(archive, omi("NW", "PL2", accession="ACC2", accession_issuer="RIS", study_uid="1.2.826.0.1.2", steps=steps))
    (order,) = all_orders(archive)
    assert (order["accession_number"], order["accession_issuer"], order["study_uid"]) == (
        "ACC2",
        "RIS",
        "1.2.826.0.1.2",
    )
    assert order["message_type"] == "OMI^O23"
    assert [(s["sps_id"], s["modality"], s["station_ae"], s["start_datetime"]) for s in order["steps"]] == [
        ("SPS1", "CT", "CT_ROOM1", "20261127090000"),
        ("SPS2", "MR", "MR_ROOM2", "20261127090000"),
    ]


def test_change_and_cancel(archive: Any) -> None:
    send(archive, orm("NW", "PL1", accession="ACC1"))
    send(archive, orm("XO", "PL1", accession="ACC1-B", modality="MR"))
    (order,) = all_orders(archive)
    assert order["accession_number"] == "ACC1-B"
    assert [s["modality"] for s in order["steps"]] == ["MR"]
    send(archive, orm("CA", "PL1", status="CA"))
    (order,) = all_orders(archive)
    assert order["status"] == "CA"


def test_discontinue_and_status_change(archive: Any) -> None:
    send(archive, omi("NW", "PL1"))
    send(archive, omi("SC", "PL1", status="IP"))
    assert all_orders(archive)[0]["status"] == "IP"
    send(archive, omi("DC", "PL1", status="DC"))
    assert all_orders(archive)[0]["status"] == "DC"


@pytest.mark.parametrize(
    ("text", "code", "segment", "position"),
    [
        (orm("ZZ", "PL1"), "103", "ORC", 1),  # not an order control of table 0119
        (orm("NW", "PL1", status="XX"), "103", "ORC", 5),  # not an order status of table 0038
        (orm("XO", "UNKNOWN"), "204", "ORC", 2),  # no such order
        (orm("CA", "UNKNOWN"), "204", "ORC", 2),
        (orm("NW", ""), "101", "ORC", 2),  # no placer or filler order number
        (orm("SC", "PL1", status=""), "101", "ORC", 5),  # SC without the new status
    ],
)
def test_bad_orders_are_application_errors_naming_the_field(
    archive: Any, text: str, code: str, segment: str, position: int
) -> None:
    send(archive, orm("NW", "PL1", accession="ACC1"))
    with pytest.raises(Hl7ApplicationError) as raised:
        send(archive, text)
    assert (raised.value.code, raised.value.segment, raised.value.position) == (code, segment, position)
    (order,) = all_orders(archive)
    assert (order["placer_order_number"], order["status"], order["accession_number"]) == ("PL1", "SC", "ACC1")


def test_changing_a_cancelled_order_is_refused(archive: Any) -> None:
    send(archive, orm("NW", "PL1"))
    send(archive, orm("CA", "PL1"))
    with pytest.raises(Hl7ApplicationError) as raised:
        send(archive, orm("XO", "PL1"))
    assert raised.value.code == "207"


def test_a_message_is_applied_whole_or_not_at_all(archive: Any) -> None:
    good = orm("NW", "PL1").rstrip("\r").split("\r")
    bad_group = ["ORC|XO|UNKNOWN^RIS||||SC", "OBR|1|UNKNOWN^RIS||CTHEAD^CT head^99X"]
    with pytest.raises(Hl7ApplicationError) as raised:
        send(archive, "\r".join(good + bad_group) + "\r")
    assert (raised.value.code, raised.value.sequence) == ("204", 2)
    assert all_orders(archive) == []


def test_a_message_without_orc_is_refused(archive: Any) -> None:
    text = "\r".join(orm("NW", "PL1").split("\r")[:3]) + "\r"
    with pytest.raises(Hl7ApplicationError) as raised:
        send(archive, text)
    assert (raised.value.code, raised.value.segment) == ("100", "ORC")


def test_xpn_prefix_and_suffix_become_the_dicom_pn_prefix_and_suffix(archive: Any) -> None:
    """XPN is family^given^middle^suffix^prefix^degree; DICOM PN is family^given^middle^prefix^suffix."""
    send(archive, orm("NW", "PL1", name="DOE^JANE^Q^JR^DR^PHD"))
    send(archive, orm("NW", "PL2", name="ROE^RICHARD^^^MR"))
    names = {o["placer_order_number"]: o["patient_name"] for o in all_orders(archive)}
    assert names == {"PL1": "DOE^JANE^Q^DR^JR PHD", "PL2": "ROE^RICHARD^^MR"}


def test_each_applied_order_emits_one_event_after_the_commit(archive: Any) -> None:
    events: list[Any] = []
    archive.bus.subscribe(events.append)
    send(archive, orm("NW", "PL1", patient_id="P9", issuer="HOSP", name="DOE^JANE"))
    send(archive, orm("NW", "PL1", patient_id="P9", issuer="HOSP"))  # a resent new order replaces it
    send(archive, orm("XO", "PL1"))
    send(archive, orm("CA", "PL1"))
    with pytest.raises(Hl7ApplicationError):
        send(archive, orm("XO", "PL1"))  # refused: nothing applied, nothing emitted
    got = [(e.action, e.transaction, e.placer_order_number) for e in events if isinstance(e, OrderReceived)]
    assert got == [("C", "RAD-4", "PL1"), ("U", "RAD-13", "PL1"), ("U", "RAD-13", "PL1"), ("D", "RAD-13", "PL1")]
    first = next(e for e in events if isinstance(e, OrderReceived))
    assert (first.patient_id, first.issuer, first.patient_name, first.message_id) == ("P9", "HOSP", "DOE^JANE", "1")
