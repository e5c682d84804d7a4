"""PIX Consumer: ITI-9 PIX Query (QBP^Q23 / RSP^K23) and ITI-10 PIX Update Notification (ADT^A31).

Both turn HL7 identifiers (CX: ID, and in component 4 the assigning authority as namespace ID &
universal ID & universal ID type) into `archive.pix` cross-reference sets; a domain is known by
its namespace ID, else its universal ID.

- ITI-10 (ITI TF-2 3.10): the A31's PID-3 is the complete list of the patient's linked
  identifiers; it replaces what was known (`archive.pix.replace_set`). PID-5 is ignored.
- ITI-9 (ITI TF-2 3.9): `query_pix` sends QBP^Q23 (QPD-1 ``IHE PIX Query``, QPD-3 the
  identifier, QPD-4 the domains wanted, RCP-1 ``I``) to the configured PIX Manager and acts on
  each response case of 3.9.4.2.2.6: AA with QAK-2 OK and a PID stores the aliases; AA with NF
  stores none and drops stale ones in the domains asked; AE / AR raises `PixQueryRefused`
  naming what ERR-2 points at (QPD-3 the identifier or its domain, QPD-4 a domain asked for).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import hl7

from pergamon.archive import errors, pix
from pergamon.archive.events import PixQuerySent, PixUpdateReceived
from pergamon.archive.pix import Domain, PatientIdentifier
from pergamon.archive.service import Archive
from pergamon.hl7 import client
from pergamon.hl7.charsets import escape
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Router
from pergamon.hl7.fields import Segment, first, segments
from pergamon.security.tls import client_context

log = logging.getLogger(__name__)

QUERY_NAME = "IHE PIX Query"
_OID = re.compile(r"[0-2](\.\d+)+\Z")


class PixQueryRefused(errors.NotFound):
    """The PIX Manager answered AE / AR: it does not know the identifier, its domain or a domain asked for."""

    code = "pix-query-refused"


def register(router: Hl7Router, archive: Archive) -> None:
    """Register the ITI-10 ADT^A31 handler on `router`."""

    def handle(message: hl7.Message, context: Hl7Context) -> None:
        handle_update_notification(archive, message, context)

    router.register("ADT", "A31", handle)


def local_domain(archive: Archive) -> Domain:
    """Pergamon's own identifier domain (`[pix] assigning_authority`, `assigning_authority_uid`)."""
    return Domain(archive.settings.pix.assigning_authority, archive.settings.pix.assigning_authority_uid)


def handle_update_notification(archive: Archive, message: hl7.Message, context: Hl7Context) -> None:
    """ITI-10: PID-3 lists every identifier of one patient; record exactly that set.

    Raises:
        Hl7ApplicationError: no PID, or no identifier in PID-3.
    """
    pid = first(message, "PID")
    if pid is None:
        raise Hl7ApplicationError("ADT^A31 without a PID segment", code="100", segment="PID")
    identifiers = identifiers_of(pid, 3)
    if not identifiers:
        raise Hl7ApplicationError("PID-3 holds no patient identifier", code="101", segment="PID", position=3)
    pix.replace_set(archive.db, identifiers, source="ITI-10", local=local_domain(archive))
    pairs = tuple((i.patient_id, i.issuer) for i in identifiers)
    archive.bus.emit(PixUpdateReceived(pairs, context.control_id, context.origin))
    log.info("PIX update %s: %s", context.control_id, ", ".join(f"{i.patient_id}^{i.issuer}" for i in identifiers))


def identifiers_of(segment: Segment, number: int) -> list[PatientIdentifier]:
    """The CX repetitions of a field that have an ID and an assigning authority."""
    found: list[PatientIdentifier] = []
    for raw in segment.repetitions(number):
        ident = segment.part(raw, 1)
        namespace, uid = segment.part(raw, 4, 1), segment.part(raw, 4, 2)
        if ident and (namespace or uid):
            found.append(PatientIdentifier(ident, namespace or uid, uid))
    return found


def query_pix(
    archive: Archive, patient_id: str, issuer: str = "", what_domains: Sequence[Domain | str] = ()
) -> list[PatientIdentifier]:
    """ITI-9: ask the PIX Manager for the other identifiers of (patient_id, issuer) and record the answer.

    `issuer` empty or Pergamon's own namespace means Pergamon's domain. `what_domains` limits the
    answer to these domains (QPD-4; a string is a namespace ID, or a universal ID if it is an OID).
    Returns the aliases found (empty for NF).

    Raises:
        Unavailable: no PIX Manager configured, or it could not be reached or answered nonsense.
        PixQueryRefused: the PIX Manager answered AE or AR (unknown identifier or domain).
    """
    settings = archive.settings.pix
    if not settings.manager_host:
        raise errors.Unavailable("no PIX Manager is configured ([pix] manager_host)")
    local = local_domain(archive)
    queried = _queried(patient_id, issuer, local)
    domains = [_domain(d) for d in what_domains]
    tag = uuid.uuid4().hex[:16]
    message = build_query(archive, queried, domains, tag)
    tls = client_context(archive.settings) if settings.manager_tls else None
    peer = f"{settings.manager_host}:{settings.manager_port}"
    try:
        try:
            response = client.send(settings.manager_host, settings.manager_port, message, settings.timeout, tls=tls)
        except (OSError, client.Hl7ClientError) as exc:
            raise errors.Unavailable(f"PIX Manager {peer} did not answer the query: {exc}") from exc
        aliases = read_response(response, queried, domains, tag)
        pix.apply_query_answer(archive.db, queried, aliases, domains, local=local)
    except errors.PergamonError as exc:
        archive.bus.emit(_query_sent(archive, queried, message, peer, str(exc) or type(exc).__name__))
        raise
    archive.bus.emit(_query_sent(archive, queried, message, peer, ""))
    return aliases


def _query_sent(archive: Archive, queried: PatientIdentifier, message: str, peer: str, outcome: str) -> PixQuerySent:
    """The event auditing one ITI-9 query (ITI TF-2 3.9.5.1.1): the QBP as sent, MSH-10, who and whom."""
    settings = archive.settings.pix
    msh = message.split("\r", 1)[0].split("|")
    return PixQuerySent(
        patient_id=queried.patient_id,
        issuer=queried.issuer,
        query=message.encode("utf-8"),
        message_id=msh[9] if len(msh) > 9 else "",
        manager=peer,
        sender="|".join(v for v in (settings.sending_facility, settings.sending_application) if v),
        receiver="|".join(v for v in (settings.receiving_facility, settings.receiving_application) if v),
        outcome=outcome,
    )


def build_query(archive: Archive, queried: PatientIdentifier, domains: Sequence[Domain], tag: str) -> str:
    """The QBP^Q23 message of ITI TF-2 3.9.4.1.2 (HL7 v2.5, segments separated by CR)."""
    settings = archive.settings.pix
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    msh = "|".join(
        [
            "MSH",
            "^~\\&",
            escape(settings.sending_application),
            escape(settings.sending_facility),
            escape(settings.receiving_application),
            escape(settings.receiving_facility),
            now,
            "",
            "QBP^Q23^QBP_Q21",
            uuid.uuid4().hex[:20],
            "P",
            "2.5",
        ]
    )
    what = "~".join(f"^^^{_authority(d.issuer, d.uid)}" for d in domains)
    qpd = f"QPD|{QUERY_NAME}|{tag}|{escape(queried.patient_id)}^^^{_authority(queried.issuer, queried.issuer_uid)}"
    if what:
        qpd += f"|{what}"
    return "\r".join([msh, qpd, "RCP|I"]) + "\r"


def read_response(
    response: hl7.Message, queried: PatientIdentifier, domains: Sequence[Domain], tag: str
) -> list[PatientIdentifier]:
    """The aliases an RSP^K23 gives (response cases 1, 2 and 6), excluding the queried identifier.

    Raises:
        PixQueryRefused: MSA-1 AE or AR (cases 3, 4 and 5), with what ERR-2 points at.
        Unavailable: not a readable answer to this query.
    """
    msa = first(response, "MSA")
    if msa is None:
        raise errors.Unavailable("the PIX Manager's answer has no MSA segment")
    code = msa.get(1).upper()
    if code in ("AE", "AR", "CE", "CR"):
        raise PixQueryRefused(_refusal(response, msa, queried, domains))
    if code not in ("AA", "CA"):
        raise errors.Unavailable(f"the PIX Manager answered MSA-1 {code!r}")
    qak = first(response, "QAK")
    if qak is not None and qak.get(1) and qak.get(1) != tag:
        raise errors.Unavailable(f"the PIX Manager answered query {qak.get(1)!r}, not {tag!r}")
    status = qak.get(2).upper() if qak is not None else ""
    if status == "NF":
        return []
    aliases: list[PatientIdentifier] = []
    for pid in segments(response, "PID"):
        for ident in identifiers_of(pid, 3):
            same = ident.patient_id == queried.patient_id and ident.in_domain(
                Domain(queried.issuer, queried.issuer_uid)
            )
            if not same and ident not in aliases:
                aliases.append(ident)
    return aliases


def _refusal(response: hl7.Message, msa: Segment, queried: PatientIdentifier, domains: Sequence[Domain]) -> str:
    """A sentence naming what the PIX Manager did not know, from the ERR-2 locations (ITI TF-2 3.9.4.2.2.6)."""
    problems: list[str] = []
    for err in segments(response, "ERR"):
        for raw in err.repetitions(2) or [""]:
            segment, field = err.part(raw, 1), err.part(raw, 3)
            if segment != "QPD":
                continue
            if field == "3" and err.part(raw, 5) == "4":
                problems.append(f"QPD-3: the domain {queried.issuer!r} of the patient identifier is unknown")
            elif field == "3":
                problems.append(
                    f"QPD-3: the patient identifier {queried.patient_id!r} is unknown in {queried.issuer!r}"
                )
            elif field == "4":
                repetition = err.part(raw, 4)
                index = int(repetition) - 1 if repetition.isdigit() else -1
                domain = domains[index] if 0 <= index < len(domains) else None
                name = repr(domain.issuer or domain.uid) if domain else f"repetition {repetition}"
                problems.append(f"QPD-4: the domain {name} asked for is unknown")
    text = msa.get(3) or next((e.get(8) for e in segments(response, "ERR") if e.get(8)), "")
    if not problems:
        problems.append(text or "no reason given")
    elif text:
        problems.append(text)
    return f"PIX Manager refused the query ({msa.get(1)}): " + "; ".join(dict.fromkeys(problems))


def _queried(patient_id: str, issuer: str, local: Domain) -> PatientIdentifier:
    if not issuer or issuer in (local.issuer, local.uid):
        return PatientIdentifier(patient_id, local.issuer or local.uid, local.uid)
    return PatientIdentifier(patient_id, issuer, issuer if _OID.match(issuer) else "")


def _domain(domain: Domain | str) -> Domain:
    if isinstance(domain, Domain):
        return domain
    return Domain(uid=domain) if _OID.match(domain) else Domain(issuer=domain)


def _authority(namespace: str, uid: str) -> str:
    """CX-4 (HD): namespace ID & universal ID & ISO; the namespace alone when there is no OID."""
    if uid and namespace == uid:
        namespace = ""
    if not uid:
        return escape(namespace)
    return f"{escape(namespace)}&{escape(uid)}&ISO"
