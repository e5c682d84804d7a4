"""PIX Consumer messages (hl7.pix): ITI-10 ADT^A31 handling, the ITI-9 QBP^Q23 built, the RSP^K23 cases read.

The RSP^K23 and ADT^A31 texts are the samples of shared/schemas/pix/samples (from the MESA PIX
tests and oehf/ipf), copied here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import hl7
import pytest

from pergamon.archive import errors, pix
from pergamon.archive.origin import Origin
from pergamon.archive.pix import Domain, PatientIdentifier
from pergamon.hl7 import pix as hl7_pix
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Router
from pergamon.hl7.fields import first

CONTEXT = Hl7Context(origin=Origin("hl7", peer="127.0.0.1:1"), control_id="207607", version="2.5")

A31_LINK = (
    "MSH|^~\\&|OTHER_ICW|ICW|EHR_TIANI-SPIRIT|TIANI-SPIRIT|20100113111756||ADT^A31^ADT_A05|207607|P^T|2.5\r"
    "EVN|A31|20100113111756\r"
    "PID|||01^^^IHENA&1.3.6.1.4.1.21367.2010.1.2.300&ISO^PI~"
    "LOCAL01^^^IHELOCAL&1.3.6.1.4.1.21367.2010.1.2.310&ISO^PI|| \r"
    "PV1||N\r"
)
A31_ALONE = (
    "MSH|^~\\&|OTHER_ICW|ICW|EHR_TIANI-SPIRIT|TIANI-SPIRIT|20100113105903||ADT^A31^ADT_A05|207597|P^T|2.5\r"
    "EVN|A31|20100113105903\r"
    "PID|||01^^^IHENA&1.3.6.1.4.1.21367.2010.1.2.300&ISO^PI|| \r"
    "PV1||N\r"
)
MSH = "MSH|^~\\&|MESA_XREF|XYZ_HOSPITAL|MESA_PIX_CLIENT|MESA_DEPARTMENT|20081120102113||RSP^K23^RSP_K23|205200|P|2.5"
OK_1 = (
    f"{MSH}\rMSA|AA|10501108\rQAK|QRY10501108|OK\r"
    "QPD|QRY_1001^Query for Corresponding Identifiers^IHEDEMO|QRY10501108|79471^^^HZLN^PI|^^^PKLN\r"
    "PID|1||78912^^^PKLN&2.16.840.1.113883.3.37.4.1.1.2.511.1&ISO^PI||~^^^^^^S\r"
)
OK_2 = (
    f"{MSH}\rMSA|AA|10501108\rQAK|QRY10501108|OK\r"
    "QPD|QRY_1001^Query for Corresponding Identifiers^IHEDEMO|QRY10501108|79471^^^HZLN^PI\r"
    "PID|1||79471^^^HZLN&2.16.840.1.113883.3.37.4.1.1.2.411.1&ISO^PI~"
    "78912^^^PKLN&2.16.840.1.113883.3.37.4.1.1.2.511.1&ISO^PI~78913^^^PKLN&2.16.840.1.113883.3.37.4.1.1.2.511.1&ISO^PI"
    "||~^^^^^^S\r"
)
NF_1 = (
    f"{MSH}\rMSA|AA|10501108\rQAK|QRY10501108|NF\r"
    "QPD|QRY_1001^Query for Corresponding Identifiers^IHEDEMO|QRY10501108|79234^^^HZLN^PI\r"
)
ERR_1 = (
    f"{MSH}\rMSA|AE|10501108\rERR||QPD^1^3^1^1|204|E||Unknown patient ID\rQAK|QRY10501108|AE\r"
    "QPD|QRY_1001^Query for Corresponding Identifiers^IHEDEMO|QRY10501108|NonExistingPatientId^^^HZLN^PI\r"
)
ERR_DOMAIN = f"{MSH}\rMSA|AE|10501108\rERR||QPD^1^3^1^4|204^Unknown Key Identifier^HL70357|E\rQAK|QRY10501108|AE\r"
ERR_2 = (
    "MSH|^~\\&|MESA_XREF|XYZ_HOSPITAL|MESA_PIX_CLIENT|MESA_DEPARTMENT|20100204111624||ACK^Q23^ACK|8504|P^T|2.5\r"
    "MSA|AR|10501108|Unable to resolve requested domains in QPD-4\r"
    "ERR||QPD^1^4^2~QPD^1^4^3|204^Unknown key identifier^HL70357|E\r"
)
HZLN = PatientIdentifier("79471", "HZLN")


def members(archive: Any, patient_id: str, issuer: str) -> list[tuple[str, str]]:
    with archive.db.read() as conn:
        return sorted(pix.equivalent_ids(conn, patient_id, issuer))


def notify(archive: Any, text: str) -> None:
    router = Hl7Router()
    hl7_pix.register(router, archive)
    handler = router.lookup("ADT", "A31")
    assert handler is not None
    handler(hl7.parse(text), CONTEXT)


def test_a31_links_the_identifiers_and_a_later_a31_unlinks_them(archive: Any) -> None:
    notify(archive, A31_LINK)
    assert members(archive, "01", "IHENA") == [("01", "IHENA"), ("LOCAL01", "IHELOCAL")]
    notify(archive, A31_ALONE)
    assert members(archive, "01", "IHENA") == [("01", "IHENA")]
    assert members(archive, "LOCAL01", "IHELOCAL") == [("LOCAL01", "IHELOCAL")]


def test_a31_without_identifiers_is_an_application_error(archive: Any) -> None:
    with pytest.raises(Hl7ApplicationError) as raised:
        notify(archive, A31_ALONE.replace("01^^^IHENA&1.3.6.1.4.1.21367.2010.1.2.300&ISO^PI", ""))
    assert (raised.value.code, raised.value.segment, raised.value.position) == ("101", "PID", 3)


def test_the_query_has_the_fields_iti9_requires(archive: Any) -> None:
    settings = dataclasses.replace(
        archive.settings, pix=dataclasses.replace(archive.settings.pix, assigning_authority_uid="1.2.3.99")
    )
    archive.settings = settings
    local = hl7_pix.local_domain(archive)
    text = hl7_pix.build_query(
        archive, PatientIdentifier("P&1", local.issuer, local.uid), [Domain("HZLN"), Domain(uid="1.2.3.4")], "TAG1"
    )
    message = hl7.parse(text)
    msh = first(message, "MSH")
    qpd = first(message, "QPD")
    rcp = first(message, "RCP")
    assert msh is not None and qpd is not None and rcp is not None
    assert (msh.get(8), msh.get(8, 2), msh.get(8, 3), msh.get(11)) == ("QBP", "Q23", "QBP_Q21", "2.5")
    assert (qpd.get(1), qpd.get(2), qpd.get(3)) == ("IHE PIX Query", "TAG1", "P&1")
    assert (qpd.get(3, 4, 1), qpd.get(3, 4, 2), qpd.get(3, 4, 3)) == ("PERGAMON", "1.2.3.99", "ISO")
    assert [(qpd.part(r, 4, 1), qpd.part(r, 4, 2)) for r in qpd.repetitions(4)] == [("HZLN", ""), ("", "1.2.3.4")]
    assert rcp.get(1) == "I"


def read(text: str, domains: tuple[Domain, ...] = ()) -> list[PatientIdentifier]:
    return hl7_pix.read_response(hl7.parse(text), HZLN, domains, "QRY10501108")


def test_case_1_the_aliases_are_read() -> None:
    assert read(OK_1) == [PatientIdentifier("78912", "PKLN", "2.16.840.1.113883.3.37.4.1.1.2.511.1")]


def test_case_6_several_ids_of_one_domain_are_all_kept_and_the_queried_id_left_out() -> None:
    assert [(a.patient_id, a.issuer) for a in read(OK_2)] == [("78912", "PKLN"), ("78913", "PKLN")]


def test_case_2_not_found_gives_no_alias() -> None:
    assert read(NF_1) == []


def test_case_3_unknown_identifier_names_qpd3() -> None:
    with pytest.raises(hl7_pix.PixQueryRefused, match=r"QPD-3: the patient identifier '79471' is unknown"):
        read(ERR_1)


def test_case_4_unknown_domain_of_the_identifier_names_qpd3_domain() -> None:
    with pytest.raises(hl7_pix.PixQueryRefused, match=r"QPD-3: the domain 'HZLN' of the patient identifier"):
        read(ERR_DOMAIN)


def test_case_5_unknown_requested_domains_name_qpd4_repetitions() -> None:
    domains = (Domain("PKLN"), Domain("NONEXISTING"), Domain(uid="1.2.3.4"))
    with pytest.raises(hl7_pix.PixQueryRefused) as raised:
        read(ERR_2, domains)
    assert "QPD-4: the domain 'NONEXISTING' asked for is unknown" in str(raised.value)
    assert "QPD-4: the domain '1.2.3.4' asked for is unknown" in str(raised.value)
    assert isinstance(raised.value, errors.NotFound)


def test_an_answer_to_another_query_is_not_used() -> None:
    with pytest.raises(errors.Unavailable):
        hl7_pix.read_response(hl7.parse(OK_1), HZLN, (), "OTHER_TAG")


def test_query_without_a_manager_is_unavailable(archive: Any) -> None:
    with pytest.raises(errors.Unavailable, match="manager_host"):
        hl7_pix.query_pix(archive, "P1")
