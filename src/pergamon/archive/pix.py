"""Patient identifier cross-references of the PIX Consumer (IHE ITI-9 PIX Query, ITI-10 PIX Update Notification).

Protocol-free: `hl7/pix.py` turns an ADT^A31 or an RSP^K23 into identifiers and calls
`replace_set` or `apply_query_answer`. The archive keeps sets of identifiers (id, assigning
authority) that name the same patient; `equivalent_ids` is what the search path uses so that a
query by (Patient ID, Issuer of Patient ID) also finds studies filed under the other identifiers
of the set.

- ITI-10 (ITI TF-2 3.10.4.1.3): each A31 lists the complete set of linked identifiers, so the set
  replaces, never merges with, what was known about these identifiers; an unlink arrives as two
  A31s, each splitting its identifiers off.
- ITI-9 (ITI TF-2 3.9.4.2.2.6): an answer gives the aliases of the queried identifier in the
  requested domains (all domains when none was requested); aliases in the other domains are kept.

Identifiers in Pergamon's own domain (`[pix] assigning_authority`) also stand for the same ID
without an issuer, because objects stored without Issuer of Patient ID belong to that domain:
such a member brings an extra row (id, "") with source "local".

Several identifiers of one domain in a set are all kept ("use all of them", ITI TF-2 3.9.4.2.2.6).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, delete, func, insert, or_, select

from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import pix_xref

LOCAL_SOURCE = "local"


@dataclass(frozen=True)
class PatientIdentifier:
    """A patient ID in an identifier domain: the namespace ID of its assigning authority, else its ISO OID."""

    patient_id: str
    issuer: str
    issuer_uid: str = ""

    def in_domain(self, domain: Domain) -> bool:
        """Whether this identifier belongs to `domain` (same namespace ID, or same universal ID)."""
        return bool((domain.issuer and domain.issuer == self.issuer) or (domain.uid and domain.uid == self.issuer_uid))


@dataclass(frozen=True)
class Domain:
    """An identifier domain (assigning authority): namespace ID and/or universal ID (ISO OID)."""

    issuer: str = ""
    uid: str = ""


def replace_set(db: Database, identifiers: Sequence[PatientIdentifier], *, source: str, local: Domain) -> str | None:
    """Record that `identifiers` are exactly one patient's identifiers (an ITI-10 A31); the set key.

    Their earlier links are dropped first, so members of their old sets that are not listed are
    split off. A single identifier is linked to nothing (returns None).
    """
    with db.write() as conn:
        return _replace(conn, identifiers, source=source, local=local)


def apply_query_answer(
    db: Database,
    queried: PatientIdentifier,
    aliases: Sequence[PatientIdentifier],
    domains: Sequence[Domain],
    *,
    local: Domain,
) -> str | None:
    """Apply an ITI-9 answer: `aliases` are all identifiers of `queried` in `domains` (every domain if empty).

    An answer with no aliases (QAK-2 NF) removes the stale ones in those domains.
    """
    with db.write() as conn:
        kept: list[PatientIdentifier] = []
        if domains:
            kept = [m for m in _members(conn, queried) if not any(m.in_domain(d) for d in domains)]
        return _replace(conn, [queried, *kept, *aliases], source="ITI-9", local=local)


def equivalent_ids(conn: Connection, patient_id: str, issuer: str) -> list[tuple[str, str]]:
    """(patient ID, issuer) pairs naming the same patient as (patient_id, issuer), itself first."""
    found = [(patient_id, issuer)]
    for member in _members(conn, PatientIdentifier(patient_id, issuer), with_local=True):
        pair = (member.patient_id, member.issuer)
        if pair not in found:
            found.append(pair)
    return found


def cross_references(conn: Connection, patient_id: str, issuer: str) -> list[dict[str, Any]]:
    """The other identifiers of (patient_id, issuer), for the operator API."""
    key = _set_key(conn, patient_id, issuer)
    if key is None:
        return []
    rows = conn.execute(select(pix_xref).where(pix_xref.c.set_key == key).order_by(pix_xref.c.pk)).mappings()
    return [
        {
            "patient_id": row["patient_id"],
            "issuer": row["issuer"],
            "issuer_uid": row["issuer_uid"],
            "source": row["source"],
            "updated_at": row["updated_at"],
        }
        for row in rows
        if (row["patient_id"], row["issuer"]) != (patient_id, issuer)
    ]


def _set_key(conn: Connection, patient_id: str, issuer: str) -> str | None:
    query = select(pix_xref.c.set_key).where(pix_xref.c.patient_id == patient_id, pix_xref.c.issuer == issuer)
    return conn.execute(query).scalar()


def _members(conn: Connection, identifier: PatientIdentifier, *, with_local: bool = False) -> list[PatientIdentifier]:
    key = _set_key(conn, identifier.patient_id, identifier.issuer)
    if key is None:
        return []
    query = select(pix_xref.c.patient_id, pix_xref.c.issuer, pix_xref.c.issuer_uid).where(pix_xref.c.set_key == key)
    if not with_local:
        query = query.where(pix_xref.c.source != LOCAL_SOURCE)
    return [PatientIdentifier(*row) for row in conn.execute(query.order_by(pix_xref.c.pk))]


def _replace(conn: Connection, identifiers: Iterable[PatientIdentifier], *, source: str, local: Domain) -> str | None:
    members: dict[tuple[str, str], PatientIdentifier] = {}
    for ident in identifiers:
        members.setdefault((ident.patient_id, ident.issuer), ident)
    rows = [(m, source) for m in members.values()]
    for m in members.values():
        alias = PatientIdentifier(m.patient_id, "")
        if m.in_domain(local) and (alias, LOCAL_SOURCE) not in rows and (m.patient_id, "") not in members:
            rows.append((alias, LOCAL_SOURCE))
    pairs = [and_(pix_xref.c.patient_id == m.patient_id, pix_xref.c.issuer == m.issuer) for m, _ in rows]
    old_keys = set(conn.execute(select(pix_xref.c.set_key).where(or_(*pairs))).scalars()) if pairs else set()
    if pairs:
        conn.execute(delete(pix_xref).where(or_(*pairs)))
    _prune(conn, old_keys)
    if len(members) < 2:
        return None
    key = str(uuid.uuid4())
    now = time.time()
    for member, row_source in rows:
        conn.execute(
            insert(pix_xref).values(
                set_key=key,
                patient_id=member.patient_id,
                issuer=member.issuer,
                issuer_uid=member.issuer_uid,
                source=row_source,
                updated_at=now,
            )
        )
    return key


def _prune(conn: Connection, keys: set[str]) -> None:
    """Drop sets left with fewer than two identifiers: nothing is cross-referenced any more."""
    for key in keys:
        query = select(func.count()).where(pix_xref.c.set_key == key, pix_xref.c.source != LOCAL_SOURCE)
        if conn.execute(query).scalar_one() < 2:
            conn.execute(delete(pix_xref).where(pix_xref.c.set_key == key))
