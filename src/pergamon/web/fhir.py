"""IHE RESTful ATNA: Retrieve ATNA Audit Event [ITI-81] (ITI TF-2 3.81) on the Audit Record Repository.

`GET /fhir/AuditEvent?...` is a FHIR R4 search (http://hl7.org/fhir/R4/search.html) answered with a
`searchset` Bundle of AuditEvent resources; `GET /fhir/AuditEvent/{id}` reads one. Every resource is
mapped on the fly from the stored DICOM PS3.15 A.5 audit message (ITI-20, ITI TF-2 3.20), following
the DICOM-to-FHIR AuditEvent mapping of FHIR R4 (type = EventID, subtype = EventTypeCode, agent =
ActiveParticipant, source = AuditSourceIdentification, entity = ParticipantObjectIdentification).

Search parameters (ITI TF-2 3.81.4.1.2 plus the FHIR AuditEvent ones an ARR can answer):

* `date` (AuditEvent.recorded; prefixes eq ne gt lt ge le sa eb; repeat to AND, e.g. ge + le);
* tokens: `type` (EventID), `subtype` (EventTypeCode), `action`, `outcome`, `source` (AuditSourceID),
  `site`, `agent` / `agent.identifier` (UserID or AlternativeUserID), `altid`, `agent-role`,
  `entity-id` / `entity.identifier` (ParticipantObjectID, including study UIDs), `patient.identifier`
  (patient ParticipantObjectIDs, `system|value` with the CX assigning authority as `urn:oid:`),
  `entity-type`, `entity-role`, `_id`, `_tag` (the repository's flags, system `urn:pergamon:audit-flag`);
* strings (case-insensitive prefix; `:exact`, `:contains`): `address`, `agent-name` (UserName, UserID);
* `_count` (default 100, at most 1000), `_offset` (paging; the Bundle has next/previous links),
  `_sort` (`date`, `-date`, `_id`, `-_id`; default `date`), `_format` (JSON only).

Comma-separated values are ORed, repeated parameters ANDed. An unknown parameter or a bad value is
answered 400 with an OperationOutcome (FHIR's strict handling), a missing resource 404. A record kept
flagged (unreadable or nonconforming input, see `audit.records`) carries its flags as `meta.tag` and
the raw syslog message in an extension; one with no readable audit message has the type
`urn:pergamon:audit-record#unparsed`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from calendar import monthrange
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import ColumnElement, and_, false, func, not_, or_, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pergamon.archive.index.schema import audit_record, audit_record_key
from pergamon.archive.service import Archive
from pergamon.audit import records
from pergamon.audit.repository import iso_instant

FHIR_JSON = "application/fhir+json; charset=utf-8"
DEFAULT_COUNT = 100
MAX_COUNT = 1000
EXTENSION = "urn:pergamon:fhir:StructureDefinition/"
UNPARSED_TYPE = {
    "system": "urn:pergamon:audit-record",
    "code": "unparsed",
    "display": "Syslog message without a readable DICOM audit message",
}
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
_LIFECYCLE = "http://terminology.hl7.org/CodeSystem/dicom-audit-lifecycle"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_OUTCOME = "http://terminology.hl7.org/CodeSystem/audit-event-outcome"

KEY_TOKENS = {
    "subtype": "subtype",
    "agent": "agent",
    "agent.identifier": "agent",
    "altid": "altid",
    "agent-role": "agent-role",
    "entity-id": "entity-id",
    "entity.identifier": "entity-id",
    "patient.identifier": "patient",
    "entity-type": "entity-type",
    "entity-role": "entity-role",
    "site": "site",
    "_tag": "flag",
}
KEY_STRINGS = {"address": "address", "agent-name": "agent-name"}
COLUMN_TOKENS = {
    "type": audit_record.c.event_id,
    "action": audit_record.c.action,
    "outcome": audit_record.c.outcome,
    "source": audit_record.c.source_id,
}
CONTROL = {"_count", "_offset", "_sort", "_format"}
SORTS = {
    "date": (audit_record.c.recorded.asc(), audit_record.c.pk.asc()),
    "-date": (audit_record.c.recorded.desc(), audit_record.c.pk.desc()),
    "_id": (audit_record.c.pk.asc(),),
    "-_id": (audit_record.c.pk.desc(),),
}
_DATE = re.compile(
    r"(eq|ne|gt|lt|ge|le|sa|eb)?(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")


class BadRequest(Exception):
    """A search the server cannot run: 400 with an OperationOutcome."""


def routes(archive: Archive) -> list[BaseRoute]:
    """ITI-81 routes, relative to the `/fhir` mount."""

    async def search(request: Request) -> Response:
        """Search the audit records: IHE ITI-81 Retrieve ATNA Audit Event, a FHIR R4 searchset Bundle."""
        try:
            query = _parse_query(list(request.query_params.multi_items()))
        except BadRequest as exc:
            return outcome(400, "invalid", str(exc))
        total, rows = await run_in_threadpool(_search, archive, query)
        endpoint = str(request.url).split("?")[0]
        return _json(_bundle(endpoint, query, total, rows))

    async def read(request: Request) -> Response:
        """One audit record as a FHIR R4 AuditEvent (IHE ITI-81)."""
        ident = request.path_params["id"]
        pk = _record_id(ident)
        row = await run_in_threadpool(_read, archive, pk) if pk is not None else None
        if row is None:
            return outcome(404, "not-found", f"AuditEvent/{ident} is not known")
        return _json(audit_event(row))

    async def metadata(request: Request) -> Response:
        """The FHIR CapabilityStatement of the audit record search."""
        return _json(_capabilities())

    return [
        Route("/AuditEvent", search, methods=["GET"]),
        Route("/AuditEvent/{id}", read, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
    ]


def outcome(status: int, code: str, text: str) -> Response:
    """An OperationOutcome response (FHIR R4 http.html#2.21.0.3)."""
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return _json(body, status)


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type=FHIR_JSON)


# -- query ------------------------------------------------------------------------------------------


class Query:
    """A parsed search: SQL conditions plus paging and order."""

    def __init__(self) -> None:
        self.conditions: list[ColumnElement[bool]] = []
        self.count = DEFAULT_COUNT
        self.offset = 0
        self.sort = "date"
        self.params: list[tuple[str, str]] = []


def _parse_query(items: list[tuple[str, str]]) -> Query:
    query = Query()
    for raw_name, value in items:
        name, _, modifier = raw_name.partition(":")
        if name in CONTROL:
            _control(query, name, value)
            continue
        query.params.append((raw_name, value))
        if not value:
            continue  # FHIR: an empty parameter value is ignored
        if name == "date":
            if modifier:
                raise BadRequest(f"date: modifier :{modifier} is not supported")
            query.conditions.append(_date_condition(value))
        elif name in KEY_TOKENS or name in COLUMN_TOKENS or name == "_id":
            if modifier:
                raise BadRequest(f"{name}: modifier :{modifier} is not supported")
            query.conditions.append(_token_condition(name, value))
        elif name in KEY_STRINGS:
            if modifier not in ("", "exact", "contains"):
                raise BadRequest(f"{name}: modifier :{modifier} is not supported")
            query.conditions.append(_string_condition(KEY_STRINGS[name], value, modifier))
        else:
            raise BadRequest(f"unknown search parameter {raw_name!r} for AuditEvent")
    return query


def _control(query: Query, name: str, value: str) -> None:
    if name == "_format":
        if value not in ("json", "application/json", "application/fhir+json"):
            raise BadRequest(f"_format {value!r}: this server answers JSON only")
    elif name == "_sort":
        if value not in SORTS:
            raise BadRequest(f"_sort {value!r}: use one of {', '.join(SORTS)}")
        query.sort = value
    else:
        if not (value.isascii() and value.isdigit()):
            raise BadRequest(f"{name} {value!r} is not a non-negative integer")
        if name == "_count":
            query.count = min(int(value), MAX_COUNT)
        else:
            query.offset = int(value)


def _split_values(value: str) -> list[str]:
    """Comma-separated alternatives; `\\,` is a literal comma (FHIR search 3.1.1.8)."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",").replace("\\|", "\x00") for p in parts]


def _token(value: str) -> tuple[str | None, str | None]:
    """(system, code) of a token value: `code`, `system|code`, `|code` (no system), `system|`."""
    if "|" not in value:
        return None, value.replace("\x00", "|")
    system, _, code = value.partition("|")
    return system.replace("\x00", "|"), (code.replace("\x00", "|") or None)


def _key_subquery(kind: str, alternatives: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    k = audit_record_key.c
    return audit_record.c.pk.in_(select(k.record_fk).where(k.kind == kind, or_(*alternatives)))


def _token_condition(name: str, value: str) -> ColumnElement[bool]:
    tokens = [_token(v) for v in _split_values(value)]
    if name in KEY_TOKENS:
        k = audit_record_key.c
        alternatives = []
        for system, code in tokens:
            parts = [k.value == code[:512]] if code is not None else []
            if system is not None:
                parts.append(k.system == system)
            alternatives.append(and_(*parts) if parts else false())
        return _key_subquery(KEY_TOKENS[name], alternatives)
    alternatives = []
    for system, code in tokens:
        if name == "_id":
            alternatives.append(audit_record.c.pk == pk if (pk := _record_id(code)) is not None else false())
            continue
        column = COLUMN_TOKENS[name]
        parts = [column == code] if code is not None else []
        if system is not None and name == "type":
            parts.append(audit_record.c.event_system == system)
        elif system not in (None, "", _OUTCOME) and name == "outcome":
            parts.append(false())
        alternatives.append(and_(*parts) if parts else false())
    return or_(*alternatives)


def _string_condition(kind: str, value: str, modifier: str) -> ColumnElement[bool]:
    k = audit_record_key.c
    alternatives = []
    for text in _split_values(value):
        folded = text.replace("\x00", "|").casefold()
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if modifier == "exact":
            alternatives.append(k.value == folded)
        elif modifier == "contains":
            alternatives.append(k.value.like(f"%{escaped}%", escape="\\"))
        else:
            alternatives.append(k.value.like(f"{escaped}%", escape="\\"))
    return _key_subquery(kind, alternatives)


def date_range(text: str) -> tuple[str, float, float]:
    """(prefix, start, end) of a FHIR date search value: the implicit interval [start, end) in epoch seconds."""
    m = _DATE.fullmatch(text)
    if m is None:
        raise BadRequest(f"date {text!r} is not a FHIR date/dateTime search value")
    prefix, year, month, day, hour, minute, second, fraction, zone = m.groups()
    tz = UTC
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        if month is None:
            start = datetime(int(year), 1, 1, tzinfo=tz)
            end = datetime(int(year) + 1, 1, 1, tzinfo=tz)
        elif day is None:
            start = datetime(int(year), int(month), 1, tzinfo=tz)
            end = start + timedelta(days=monthrange(int(year), int(month))[1])
        elif hour is None:
            start = datetime(int(year), int(month), int(day), tzinfo=tz)
            end = start + timedelta(days=1)
        else:
            start = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0), tzinfo=tz)
            if second is None:
                end = start + timedelta(minutes=1)
            elif fraction is None:
                end = start + timedelta(seconds=1)
            else:
                start += timedelta(seconds=float(fraction))
                end = start + timedelta(seconds=10 ** -(len(fraction) - 1))
    except (ValueError, OverflowError) as exc:
        raise BadRequest(f"date {text!r}: {exc}") from None
    return prefix or "eq", start.timestamp(), end.timestamp()


def _date_condition(value: str) -> ColumnElement[bool]:
    alternatives = []
    for text in _split_values(value):
        prefix, start, end = date_range(text)
        recorded = audit_record.c.recorded
        alternatives.append(
            {
                "eq": and_(recorded >= start, recorded < end),
                "ne": not_(and_(recorded >= start, recorded < end)),
                "gt": recorded >= end,
                "sa": recorded >= end,
                "ge": recorded >= start,
                "lt": recorded < start,
                "eb": recorded < start,
                "le": recorded < end,
            }[prefix]
        )
    return or_(*alternatives)


def _search(archive: Archive, query: Query) -> tuple[int, list[Any]]:
    where = and_(*query.conditions) if query.conditions else None
    count = select(func.count()).select_from(audit_record)
    page = select(audit_record).order_by(*SORTS[query.sort]).limit(query.count).offset(query.offset)
    if where is not None:
        count, page = count.where(where), page.where(where)
    with archive.db.read() as conn:
        total = int(conn.execute(count).scalar_one())
        rows = list(conn.execute(page)) if query.count else []
    return total, rows


def _read(archive: Archive, pk: int) -> Any:
    with archive.db.read() as conn:
        return conn.execute(select(audit_record).where(audit_record.c.pk == pk)).first()


def _bundle(endpoint: str, query: Query, total: int, rows: list[Any]) -> dict[str, Any]:
    def page_url(offset: int) -> str:
        params = [*query.params, ("_count", str(query.count)), ("_sort", query.sort), ("_offset", str(offset))]
        return f"{endpoint}?{urlencode(params)}"

    links = [{"relation": "self", "url": page_url(query.offset)}]
    if query.count and query.offset + query.count < total:
        links.append({"relation": "next", "url": page_url(query.offset + query.count)})
    if query.offset > 0:
        links.append({"relation": "previous", "url": page_url(max(0, query.offset - query.count))})
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
        "entry": [
            {"fullUrl": f"{endpoint}/{row.pk}", "resource": audit_event(row), "search": {"mode": "match"}}
            for row in rows
        ],
    }


# -- mapping (DICOM PS3.15 A.5 -> FHIR R4 AuditEvent) -----------------------------------------------


def _clean(value: Any) -> Any:
    """Drop empty values: FHIR JSON allows no empty strings, arrays or objects."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, "", [], {})}
    if isinstance(value, list):
        return [v for v in (_clean(v) for v in value) if v not in (None, "", [], {})]
    return value


def _coding(coded: records.Coded | None) -> dict[str, Any] | None:
    if coded is None or not (coded.code or coded.display):
        return None
    return {"system": coded.system, "code": coded.code, "display": coded.display}


def _base64(value: str) -> str | None:
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return value or None


def audit_event(row: Any) -> dict[str, Any]:
    """The FHIR R4 AuditEvent of one stored record."""
    flags = [f for f in (row.flag or "").split(",") if f]
    parsed = records.parse(row.raw)
    audit = parsed.audit
    header = parsed.header
    meta: dict[str, Any] = {
        "lastUpdated": iso_instant(row.received_at),
        "tag": [{"system": records.FLAG_SYSTEM, "code": f} for f in flags],
    }
    resource: dict[str, Any] = {"resourceType": "AuditEvent", "id": str(row.pk), "meta": meta}
    if flags:
        resource["extension"] = [
            {"url": EXTENSION + "audit-record-problems", "valueString": row.detail or ", ".join(flags)},
            {"url": EXTENSION + "syslog-message", "valueBase64Binary": base64.b64encode(row.raw).decode("ascii")},
        ]
    recorded = iso_instant(row.recorded)
    if audit is not None and _INSTANT.fullmatch(audit.date_time.strip()):
        recorded = audit.date_time.strip()
    peer_host = row.peer.rsplit(":", 1)[0]
    observer = (audit.source_id if audit else "") or (header.hostname if header else "") or peer_host
    if audit is None or audit.event_id is None or not audit.event_id.code:
        resource.update(
            type=UNPARSED_TYPE,
            recorded=recorded,
            agent=[
                {
                    "who": {"display": (header.hostname if header else None) or peer_host},
                    "name": header.app_name if header else None,
                    "requestor": False,
                    "network": {"address": peer_host, "type": "2"},
                }
            ],
            source={"observer": {"display": observer or "unknown"}},
        )
        return _clean(resource)  # type: ignore[no-any-return]
    resource.update(
        type=_coding(audit.event_id),
        subtype=[_coding(c) for c in audit.event_types],
        action=audit.action if audit.action in ("C", "R", "U", "D", "E") else None,
        recorded=recorded,
        outcome=audit.outcome if audit.outcome in ("0", "4", "8", "12") else None,
        outcomeDesc=audit.outcome_description,
        purposeOfEvent=[{"coding": [_coding(c)], "text": c.display} for c in audit.purposes],
        agent=[_agent(p) for p in audit.participants] or [{"requestor": False, "who": {"display": "unknown"}}],
        source={
            "site": audit.site_id,
            "observer": {"display": observer or "unknown"},
            "type": [_source_type(c) for c in audit.source_types],
        },
        entity=[_entity(o) for o in audit.objects],
    )
    return _clean(resource)  # type: ignore[no-any-return]


def _agent(p: records.Participant) -> dict[str, Any]:
    roles = [_coding(r) for r in p.roles]
    return {
        "type": {"coding": roles[:1]},
        "role": [{"coding": [r]} for r in roles[1:]],
        "who": {"identifier": {"value": p.user_id}, "display": p.user_name or p.user_id},
        "altId": p.alt_user_id,
        "name": p.user_name,
        "requestor": p.requestor,
        "network": {
            "address": p.address,
            "type": p.address_type if p.address_type in ("1", "2", "3", "4", "5") else None,
        }
        if p.address
        else None,
    }


def _source_type(c: records.Coded) -> dict[str, Any] | None:
    if c.code in ("1", "2", "3", "4", "5", "6", "7", "8", "9") and c.system_name in ("DCM", "RFC-3881", ""):
        return {"system": _SOURCE_TYPE, "code": c.code, "display": c.display}
    return _coding(c)


def _entity(o: records.ParticipantObject) -> dict[str, Any]:
    details = []
    for kind, value in o.details:
        encoded = _base64(value)
        details.append(
            {"type": kind or "unknown", "valueBase64Binary": encoded}
            if encoded
            else {"type": kind or "unknown", "valueString": value or "-"}
        )
    return {
        "what": {
            "identifier": {"value": o.object_id, "type": {"coding": [_coding(o.id_type)]}},
            "display": o.name,
        },
        "type": {"system": _ENTITY_TYPE, "code": o.type_code} if o.type_code in ("1", "2", "3", "4") else None,
        "role": {"system": _OBJECT_ROLE, "code": o.role} if o.role else None,
        "lifecycle": {"system": _LIFECYCLE, "code": o.lifecycle} if o.lifecycle else None,
        "name": o.name,
        "description": o.description,
        "query": _base64(o.query),
        "detail": details,
    }


def _capabilities() -> dict[str, Any]:
    token = [*KEY_TOKENS, *COLUMN_TOKENS, "_id"]
    params = [{"name": "date", "type": "date"}]
    params += [{"name": n, "type": "token"} for n in token]
    params += [{"name": n, "type": "string"} for n in KEY_STRINGS]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": "AuditEvent",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": params,
                    }
                ],
            }
        ],
    }


def _record_id(text: str) -> int | None:
    """An AuditEvent id as a row key, or None: ASCII digits only (str.isdigit() accepts '³'), < 2**63."""
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None
