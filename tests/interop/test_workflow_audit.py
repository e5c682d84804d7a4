"""Audit messages of the workflow transactions, from a running Pergamon talking to real peers (ITI TF-2 3.20).

python-hl7's MLLP client sends the orders (RAD-4 / RAD-13: Procedure Record 110111, C / U / D);
the PIX Manager of `pix_manager` sends an ITI-10 A31 (Patient Record 110110, U, one patient object
per identifier, ITI TF-2 3.10.5.1.2) and answers the ITI-9 query triggered through the REST view
(Query 110112 whose Query Parameters object holds the QBP as sent, ITI TF-2 3.9.5.1.1). The
messages are captured at the audit trail's sink and each is validated against dicom2017c.xsd.
"""

from __future__ import annotations

import base64
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hl7
import hl7.client
import httpx
import pytest
from audit_schema import assert_valid
from conftest import make_settings
from lxml import etree
from order_messages import omi, orm
from pix_manager import Ident, PixManager

from pergamon.runtime import Pergamon

pytestmark = pytest.mark.interop

EB, CR = b"\x1c", b"\r"
LOCAL_OID = "1.2.826.0.1.3680043.10.1234.1"
LOCAL = Ident("AUD100", "PERGAMON", LOCAL_OID)
HOSP_A = Ident("AUDA100", "HOSP_A", "1.2.826.0.1.3680043.10.1234.2")


class Captured:
    """Audit messages handed to the sink, parsed."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []

    def __call__(self, message: bytes) -> None:
        self.raw.append(message)

    def take(self, event_id: str, count: int, timeout: float = 10.0) -> list[Any]:
        """Wait for `count` messages with this EventID; return them and forget every message so far."""
        deadline = time.monotonic() + timeout
        while True:
            found = [etree.fromstring(m) for m in self.raw if _event_id(etree.fromstring(m)) == event_id]
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for message in self.raw:
            assert_valid(message)
        assert len(found) == count, [_event_id(etree.fromstring(m)) for m in self.raw]
        self.raw.clear()
        return found


def _event_id(root: Any) -> str:
    return str(root.find("EventIdentification/EventID").get("csd-code"))


def action_and_outcome(root: Any) -> tuple[str, str]:
    event = root.find("EventIdentification")
    return event.get("EventActionCode"), event.get("EventOutcomeIndicator")


def event_type(root: Any) -> str:
    return str(root.find("EventIdentification/EventTypeCode").get("csd-code"))


def roles(root: Any) -> dict[str, str]:
    """UserID -> RoleIDCode of each active participant."""
    found = {}
    for p in root.findall("ActiveParticipant"):
        role = p.find("RoleIDCode")
        found[p.get("UserID")] = role.get("csd-code") if role is not None else ""
    return found


def patient_ids(root: Any) -> list[str]:
    return [
        o.get("ParticipantObjectID")
        for o in root.findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCode") == "1"
    ]


def detail(obj: Any, kind: str) -> str:
    element = obj.find(f"ParticipantObjectDetail[@type='{kind}']")
    return base64.b64decode(element.get("value")).decode() if element is not None else ""


@pytest.fixture
def manager() -> Iterator[PixManager]:
    pix_manager = PixManager(patients=[[LOCAL, HOSP_A]])
    pix_manager.start()
    yield pix_manager
    pix_manager.stop()


@pytest.fixture
def audited(tmp_path: Path, database_url: str, manager: PixManager) -> Iterator[tuple[Pergamon, Captured]]:
    base = make_settings(tmp_path / "data", database_url)
    pix = dataclasses.replace(
        base.pix, manager_host="127.0.0.1", manager_port=manager.port, assigning_authority_uid=LOCAL_OID
    )
    app = Pergamon(dataclasses.replace(base, pix=pix))
    captured = Captured()
    forward: Callable[[bytes], None] = app.audit_trail.sink
    app.audit_trail.sink = lambda message: (captured(message), forward(message))  # type: ignore[method-assign]
    app.start()
    try:
        yield app, captured
    finally:
        app.stop()


def send(app: Pergamon, text: str) -> str:
    """Send one message with python-hl7's MLLP client; its MSA-1."""
    with hl7.client.MLLPClient("127.0.0.1", app.hl7.port, encoding="ascii") as client:
        answer = client.send_message(text)
        while not answer.endswith(EB + CR):
            answer += client.socket.recv(65536)
    return str(hl7.parse(answer[1:-2].decode("ascii")).segment("MSA")[1])


def control_id(text: str) -> str:
    return text.split("\r", 1)[0].split("|")[9]


def test_orders_are_audited_as_procedure_records(audited: tuple[Pergamon, Captured]) -> None:
    app, captured = audited
    captured.take("110100", 1)  # application start
    new = orm("NW", "AUD-PL1", accession="AUD-ACC1", patient_id="AUD-P1", issuer="HOSP", name="DOE^JANE")
    assert send(app, new) == "AA"
    (created,) = captured.take("110111", 1)
    assert action_and_outcome(created) == ("C", "0")
    assert event_type(created) == "RAD-4"
    assert roles(created)["HOSP|RIS"] == "110153"  # the order filler: MSH-4|MSH-3
    assert "110152" in roles(created).values()
    (who,) = created.findall("ParticipantObjectIdentification")
    assert who.get("ParticipantObjectID") == "AUD-P1^^^HOSP"
    assert detail(who, "MSH-10") == control_id(new)

    assert send(app, omi("XO", "AUD-PL1", accession="AUD-ACC1", patient_id="AUD-P1", issuer="HOSP")) == "AA"
    (changed,) = captured.take("110111", 1)
    assert (action_and_outcome(changed), event_type(changed)) == (("U", "0"), "RAD-13")

    assert send(app, orm("CA", "AUD-PL1", patient_id="AUD-P1", issuer="HOSP")) == "AA"
    (cancelled,) = captured.take("110111", 1)
    assert (action_and_outcome(cancelled), event_type(cancelled)) == (("D", "0"), "RAD-13")


def test_a_refused_order_is_not_audited(audited: tuple[Pergamon, Captured]) -> None:
    app, captured = audited
    captured.take("110100", 1)
    assert send(app, orm("CA", "AUD-UNKNOWN")) == "AE"  # nothing was applied: nothing to audit
    assert not [m for m in captured.raw if _event_id(etree.fromstring(m)) == "110111"]


def test_pix_update_notification_is_audited(audited: tuple[Pergamon, Captured], manager: PixManager) -> None:
    app, captured = audited
    captured.take("110100", 1)
    ack = manager.notify("127.0.0.1", app.hl7.port, [LOCAL, HOSP_A])
    assert str(ack.segment("MSA")[1]) == "AA"
    (record,) = captured.take("110110", 1)
    assert action_and_outcome(record) == ("U", "0")
    assert event_type(record) == "ITI-10"
    assert roles(record)["PIX_FAC|PIX_MGR"] == "110153"  # the PIX Manager is the source
    assert sorted(patient_ids(record)) == ["AUD100^^^PERGAMON", "AUDA100^^^HOSP_A"]
    control = str(ack.segment("MSA")[2])
    assert all(detail(o, "MSH-10") == control for o in record.findall("ParticipantObjectIdentification"))


def test_pix_query_is_audited_with_the_qbp(audited: tuple[Pergamon, Captured]) -> None:
    app, captured = audited
    captured.take("110100", 1)
    url = f"http://127.0.0.1:{app.settings.http.port}/api/pix/query"
    assert httpx.post(url, json={"pid": "AUD100"}, timeout=30).status_code == 200
    (query,) = captured.take("110112", 1)
    assert action_and_outcome(query) == ("E", "0")
    assert event_type(query) == "ITI-9"
    assert roles(query) == {"PERGAMON|PERGAMON": "110153", "PIX_MANAGER": "110152"}
    assert patient_ids(query) == ["AUD100^^^PERGAMON"]
    (parameters,) = [
        o for o in query.findall("ParticipantObjectIdentification") if o.get("ParticipantObjectTypeCodeRole") == "24"
    ]
    assert parameters.find("ParticipantObjectIDTypeCode").get("csd-code") == "ITI-9"
    qbp = base64.b64decode(parameters.find("ParticipantObjectQuery").text).decode()
    assert qbp.startswith("MSH|") and "\rQPD|IHE PIX Query|" in qbp
    assert detail(parameters, "MSH-10") == control_id(qbp)

    assert httpx.post(url, json={"pid": "NOBODY"}, timeout=30).status_code == 404  # refused: still audited
    (refused,) = captured.take("110112", 1)
    assert action_and_outcome(refused) == ("E", "4")
