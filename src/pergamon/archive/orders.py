"""Requested procedures and their scheduled steps (IHE RAD-4 Procedure Scheduled, RAD-13 Procedure Updated).

Protocol-free: the HL7 door (`hl7/orders.py`) turns ORM^O01 / OMI^O23 into an `Order` and calls
`schedule`, `change`, `cancel` or `set_status`. Every call is one transaction, so an order is
either wholly applied or not at all (and the door acknowledges only after the commit).

Orders and studies are linked (RAD TF-2 4.8: the Study Instance UID and Accession Number the
modality got from the worklist come back in the images) in both arrival orders:

- an order that arrives or changes is linked to the studies already stored with its Study
  Instance UID or Accession Number (MESA 105, images acquired before the order);
- `link_on_store` is an `InstanceStored` subscriber that links a newly stored study to the orders
  with its Study Instance UID or Accession Number.

An accession match also needs the issuers to agree when both sides have one (Issuer of Accession
Number Sequence, Local Namespace Entity ID). Links are kept by Study Instance UID rather than by a
foreign key, so removing a study never depends on its orders.
"""

from __future__ import annotations

import enum
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from pergamon.archive import errors
from pergamon.archive.events import InstanceStored, OrderReceived
from pergamon.archive.index.database import Database
from pergamon.archive.index.schema import procedure_study, requested_procedure, scheduled_procedure_step, study
from pergamon.archive.origin import Origin

_ISSUER_OF_ACCESSION = "00080051"  # Issuer of Accession Number Sequence
_LOCAL_NAMESPACE = "00400031"  # Local Namespace Entity ID


class OrderStatus(enum.StrEnum):
    """Order status of HL7 table 0038 (ORC-5), as far as an Image Manager tracks it."""

    SCHEDULED = "SC"
    IN_PROGRESS = "IP"
    COMPLETED = "CM"
    CANCELLED = "CA"
    DISCONTINUED = "DC"
    ON_HOLD = "HD"


ENDED = frozenset({OrderStatus.CANCELLED, OrderStatus.DISCONTINUED, OrderStatus.COMPLETED})


@dataclass(frozen=True)
class Code:
    """A coded entry (CE/CWE): code value, coding scheme designator, code meaning."""

    value: str
    scheme: str = ""
    meaning: str = ""


@dataclass(frozen=True)
class ProcedureStep:
    """One scheduled procedure step: where, when and how the procedure is to be performed."""

    sps_id: str = ""
    modality: str = ""
    station_ae: str = ""
    start_datetime: str = ""
    protocol_codes: tuple[Code, ...] = ()
    status: OrderStatus = OrderStatus.SCHEDULED


@dataclass(frozen=True)
class Order:
    """A requested procedure as an order message describes it; empty strings are "not given"."""

    placer_order_number: str = ""
    filler_order_number: str = ""
    accession_number: str = ""
    accession_issuer: str = ""
    requested_procedure_id: str = ""
    study_uid: str = ""
    patient_id: str = ""
    patient_issuer: str = ""
    patient_name: str = ""
    procedure_code: Code | None = None
    procedure_description: str = ""
    status: OrderStatus | None = None
    steps: tuple[ProcedureStep, ...] = field(default_factory=tuple)
    message_type: str = ""


def find_order(conn: Connection, placer: str, filler: str) -> int | None:
    """The procedure with this filler order number, else with this placer order number."""
    for column, number in (
        (requested_procedure.c.filler_order_number, filler),
        (requested_procedure.c.placer_order_number, placer),
    ):
        if number:
            pk = conn.execute(select(requested_procedure.c.pk).where(column == number)).scalar()
            if pk is not None:
                return int(pk)
    return None


def schedule(conn: Connection, order: Order) -> int:
    """Create the requested procedure (RAD-4), or replace it when its order number is already known.

    Returns its primary key. A resent new-order message therefore does not duplicate the order.
    Runs inside the caller's write transaction (`Database.write`), like the other changes below.

    Raises:
        Invalid: no placer or filler order number.
    """
    _require_number(order)
    pk = find_order(conn, order.placer_order_number, order.filler_order_number)
    now = time.time()
    values = _columns(order, OrderStatus.SCHEDULED if order.status is None else order.status)
    if pk is None:
        result = conn.execute(insert(requested_procedure).values(**values, created_at=now, updated_at=now))
        pk = int(result.inserted_primary_key[0])  # type: ignore[index]
    else:
        conn.execute(update(requested_procedure).where(requested_procedure.c.pk == pk).values(**values, updated_at=now))
    _replace_steps(conn, pk, order.steps)
    _relink(conn, pk)
    return pk


def change(conn: Connection, order: Order) -> int:
    """Apply a changed order (RAD-13, order control XO): its details and steps replace the stored ones.

    Raises:
        Invalid: no order number. NotFound: unknown order. Conflict: the order was cancelled,
        discontinued or completed.
    """
    _require_number(order)
    pk, status = _existing(conn, order)
    if status in ENDED:
        raise errors.Conflict(f"order {_number(order)} is {status.value}: it cannot be changed")
    values = _columns(order, status if order.status is None else order.status)
    conn.execute(
        update(requested_procedure).where(requested_procedure.c.pk == pk).values(**values, updated_at=time.time())
    )
    _replace_steps(conn, pk, order.steps)
    _relink(conn, pk)
    return pk


def cancel(conn: Connection, order: Order, status: OrderStatus = OrderStatus.CANCELLED) -> int:
    """Cancel (CA) or discontinue (DC) an order and all its steps (RAD-13); repeating it changes nothing.

    Raises:
        Invalid: no order number. NotFound: unknown order. Conflict: the order is completed.
    """
    _require_number(order)
    pk, current = _existing(conn, order)
    if current is OrderStatus.COMPLETED:
        raise errors.Conflict(f"order {_number(order)} is completed: it cannot be {status.name.lower()}")
    _set_status(conn, pk, status)
    return pk


def set_status(conn: Connection, order: Order, status: OrderStatus) -> int:
    """Record a new order status (order control SC: ORC-5 IP, CM, HD...).

    Raises:
        Invalid: no order number. NotFound: unknown order.
    """
    _require_number(order)
    pk, _current = _existing(conn, order)
    _set_status(conn, pk, status)
    return pk


def received(
    order: Order, action: str, *, created: bool, message_id: str = "", origin: Origin | None = None
) -> OrderReceived:
    """The event to emit once an order change is committed (audited as a Procedure Record).

    `action` is what was applied ("new", "change", "status", "cancel", "discontinue"); `created`
    whether the order was unknown before, which makes the message a RAD-4 rather than a RAD-13.
    """
    code = "C" if created else "D" if action in ("cancel", "discontinue") else "U"
    return OrderReceived(
        action=code,
        transaction="RAD-4" if created else "RAD-13",
        placer_order_number=order.placer_order_number,
        filler_order_number=order.filler_order_number,
        accession_number=order.accession_number,
        patient_id=order.patient_id,
        issuer=order.patient_issuer,
        patient_name=order.patient_name,
        message_id=message_id,
        origin=origin,
    )


def link_study(db: Database, study_uid: str) -> list[int]:
    """Link a stored study to the orders with its Study Instance UID or Accession Number; the new links."""
    with db.read() as conn:
        pending = _unlinked_orders(conn, study_uid)
    if not pending:
        return []
    with db.write() as conn:
        pending = _unlinked_orders(conn, study_uid)  # again, inside the transaction
        now = time.time()
        for pk, matched_by in pending:
            conn.execute(
                insert(procedure_study).values(
                    procedure_fk=pk, study_uid=study_uid, matched_by=matched_by, linked_at=now
                )
            )
    return [pk for pk, _ in pending]


def link_on_store(db: Database, *, remembered: int = 4096) -> Callable[[Any], None]:
    """An event-bus subscriber linking each newly stored study to its orders.

    A study is looked at once per (Study Instance UID, Accession Number) rather than once per
    instance: the `remembered` most recent pairs are skipped until an order arrives (which clears
    them). An order that arrives later links itself to stored studies (`_relink`), so the skip
    never loses a link.
    """
    checked: OrderedDict[tuple[str, str | None], None] = OrderedDict()
    lock = threading.Lock()
    orders_seen = [0]  # bumped by every order, so a check that overlapped one is not remembered

    def subscriber(event: Any) -> None:
        if isinstance(event, OrderReceived):
            with lock:
                orders_seen[0] += 1
                checked.clear()
            return
        if not isinstance(event, InstanceStored):
            return
        key = (event.study_uid, event.accession_number)
        with lock:
            if key in checked:
                checked.move_to_end(key)
                return
            seen = orders_seen[0]
        link_study(db, event.study_uid)
        with lock:
            if seen != orders_seen[0]:
                return
            checked[key] = None
            while len(checked) > remembered:
                checked.popitem(last=False)

    return subscriber


def list_orders(
    conn: Connection, *, status: str = "", accession: str = "", patient_id: str = "", limit: int = 100, offset: int = 0
) -> list[dict[str, Any]]:
    """Orders, newest first, filtered by exact status, accession number or patient ID."""
    query = select(requested_procedure)
    if status:
        query = query.where(requested_procedure.c.status == status)
    if accession:
        query = query.where(requested_procedure.c.accession_number == accession)
    if patient_id:
        query = query.where(requested_procedure.c.patient_id == patient_id)
    query = query.order_by(requested_procedure.c.pk.desc()).limit(limit).offset(offset)
    rows = conn.execute(query).mappings().all()
    counts: dict[int, int] = {}
    if rows:
        counting = (
            select(procedure_study.c.procedure_fk, func.count())
            .where(procedure_study.c.procedure_fk.in_([r["pk"] for r in rows]))
            .group_by(procedure_study.c.procedure_fk)
        )
        counts = {int(pk): int(n) for pk, n in conn.execute(counting)}
    return [{**_order_json(row), "linked_studies": int(counts.get(row["pk"], 0))} for row in rows]


def get_order(conn: Connection, pk: int) -> dict[str, Any]:
    """One order with its scheduled steps and its linked studies.

    Raises:
        NotFound: no such order.
    """
    row = conn.execute(select(requested_procedure).where(requested_procedure.c.pk == pk)).mappings().first()
    if row is None:
        raise errors.NotFound(f"no order {pk}")
    steps = (
        conn.execute(
            select(scheduled_procedure_step)
            .where(scheduled_procedure_step.c.procedure_fk == pk)
            .order_by(scheduled_procedure_step.c.pk)
        )
        .mappings()
        .all()
    )
    links = (
        conn.execute(
            select(
                procedure_study.c.study_uid,
                procedure_study.c.matched_by,
                procedure_study.c.linked_at,
                study.c.accession_number,
                study.c.study_date,
                study.c.num_instances,
            )
            .select_from(procedure_study.outerjoin(study, study.c.study_uid == procedure_study.c.study_uid))
            .where(procedure_study.c.procedure_fk == pk)
            .order_by(procedure_study.c.pk)
        )
        .mappings()
        .all()
    )
    return {
        **_order_json(row),
        "steps": [
            {
                "sps_id": s["sps_id"],
                "modality": s["modality"] or "",
                "station_ae": s["station_ae"] or "",
                "start_datetime": s["start_datetime"] or "",
                "protocol_codes": json.loads(s["protocol_codes"]),
                "status": s["status"],
            }
            for s in steps
        ],
        "studies": [
            {
                "study_uid": link["study_uid"],
                "matched_by": link["matched_by"],
                "linked_at": link["linked_at"],
                "stored": link["num_instances"] is not None,
                "accession_number": link["accession_number"] or "",
                "study_date": link["study_date"] or "",
                "instances": int(link["num_instances"] or 0),
            }
            for link in links
        ],
    }


def linked_orders(conn: Connection, study_uid: str) -> list[int]:
    """Primary keys of the orders a study is linked to."""
    query = select(procedure_study.c.procedure_fk).where(procedure_study.c.study_uid == study_uid)
    return [int(pk) for pk in conn.execute(query.order_by(procedure_study.c.procedure_fk)).scalars()]


def _order_json(row: Any) -> dict[str, Any]:
    return {
        "pk": row["pk"],
        "placer_order_number": row["placer_order_number"],
        "filler_order_number": row["filler_order_number"],
        "accession_number": row["accession_number"],
        "accession_issuer": row["accession_issuer"],
        "requested_procedure_id": row["requested_procedure_id"],
        "study_uid": row["study_uid"],
        "patient_id": row["patient_id"],
        "patient_issuer": row["patient_issuer"],
        "patient_name": row["patient_name"] or "",
        "procedure_code": json.loads(row["procedure_code"]) if row["procedure_code"] else None,
        "procedure_description": row["procedure_description"] or "",
        "status": row["status"],
        "message_type": row["message_type"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _number(order: Order) -> str:
    return order.filler_order_number or order.placer_order_number


def _require_number(order: Order) -> None:
    if not _number(order):
        raise errors.Invalid("the order has neither a placer nor a filler order number")


def _existing(conn: Connection, order: Order) -> tuple[int, OrderStatus]:
    pk = find_order(conn, order.placer_order_number, order.filler_order_number)
    if pk is None:
        raise errors.NotFound(f"unknown order {_number(order)}")
    status = conn.execute(select(requested_procedure.c.status).where(requested_procedure.c.pk == pk)).scalar_one()
    return pk, OrderStatus(status)


def _columns(order: Order, status: OrderStatus) -> dict[str, Any]:
    return {
        "placer_order_number": order.placer_order_number,
        "filler_order_number": order.filler_order_number,
        "accession_number": order.accession_number,
        "accession_issuer": order.accession_issuer,
        "requested_procedure_id": order.requested_procedure_id,
        "study_uid": order.study_uid,
        "patient_id": order.patient_id,
        "patient_issuer": order.patient_issuer,
        "patient_name": order.patient_name or None,
        "procedure_code": json.dumps(asdict(order.procedure_code)) if order.procedure_code else None,
        "procedure_description": order.procedure_description or None,
        "status": status.value,
        "message_type": order.message_type,
    }


def _replace_steps(conn: Connection, pk: int, steps: tuple[ProcedureStep, ...]) -> None:
    conn.execute(delete(scheduled_procedure_step).where(scheduled_procedure_step.c.procedure_fk == pk))
    seen: set[str] = set()
    for step in steps:
        if step.sps_id in seen:  # one row per step ID; a repeated one (e.g. empty IDs) keeps the first
            continue
        seen.add(step.sps_id)
        conn.execute(
            insert(scheduled_procedure_step).values(
                procedure_fk=pk,
                sps_id=step.sps_id,
                modality=step.modality or None,
                station_ae=step.station_ae or None,
                start_datetime=step.start_datetime or None,
                protocol_codes=json.dumps([asdict(c) for c in step.protocol_codes]),
                status=step.status.value,
            )
        )


def _set_status(conn: Connection, pk: int, status: OrderStatus) -> None:
    now = time.time()
    conn.execute(
        update(requested_procedure).where(requested_procedure.c.pk == pk).values(status=status.value, updated_at=now)
    )
    conn.execute(
        update(scheduled_procedure_step)
        .where(scheduled_procedure_step.c.procedure_fk == pk)
        .values(status=status.value)
    )


def _relink(conn: Connection, pk: int) -> None:
    """Recompute the studies linked to an order from its current Study Instance UID and Accession Number."""
    order = conn.execute(select(requested_procedure).where(requested_procedure.c.pk == pk)).mappings().one()
    conn.execute(delete(procedure_study).where(procedure_study.c.procedure_fk == pk))
    matches = []
    if order["study_uid"]:
        matches.append(study.c.study_uid == order["study_uid"])
    if order["accession_number"]:
        matches.append(study.c.accession_number == order["accession_number"])
    if not matches:
        return
    now = time.time()
    rows = conn.execute(select(study.c.study_uid, study.c.accession_number, study.c.attrs).where(or_(*matches)))
    for study_uid, accession, attrs in rows:
        matched_by = _matched_by(order, study_uid, accession, _accession_issuer(attrs))
        if matched_by:
            conn.execute(
                insert(procedure_study).values(
                    procedure_fk=pk, study_uid=study_uid, matched_by=matched_by, linked_at=now
                )
            )


def _unlinked_orders(conn: Connection, study_uid: str) -> list[tuple[int, str]]:
    """(order pk, how it matched) of the orders this study belongs to and is not yet linked to.

    One statement: the study joined to the orders carrying its UID or its (non-empty) Accession
    Number, so a study with no order costs one indexed lookup (once per study while loading).
    """
    same_study = requested_procedure.c.study_uid == study.c.study_uid
    same_accession = requested_procedure.c.accession_number == func.nullif(study.c.accession_number, "")  # '' is none
    linked = select(procedure_study.c.procedure_fk).where(procedure_study.c.study_uid == study_uid)
    candidates = (
        conn.execute(
            select(requested_procedure, study.c.accession_number.label("study_accession"), study.c.attrs)
            .select_from(study.join(requested_procedure, or_(same_study, same_accession)))
            .where(study.c.study_uid == study_uid, requested_procedure.c.pk.not_in(linked))
        )
        .mappings()
        .all()
    )
    found: list[tuple[int, str]] = []
    for order in candidates:
        matched_by = _matched_by(order, study_uid, order["study_accession"], _accession_issuer(order["attrs"]))
        if matched_by:
            found.append((int(order["pk"]), matched_by))
    return found


def _matched_by(order: Any, study_uid: str, accession: str | None, issuer: str) -> str:
    if order["study_uid"] and order["study_uid"] == study_uid:
        return "study-uid"
    if order["accession_number"] and order["accession_number"] == accession:
        if order["accession_issuer"] and issuer and order["accession_issuer"] != issuer:
            return ""
        return "accession"
    return ""


def _accession_issuer(attrs: str | None) -> str:
    """Local Namespace Entity ID of the study's Issuer of Accession Number Sequence, if any."""
    element = json.loads(attrs or "{}").get(_ISSUER_OF_ACCESSION) or {}
    for item in element.get("Value") or []:
        values = (item.get(_LOCAL_NAMESPACE) or {}).get("Value") or []
        if values:
            return str(values[0]).strip()
    return ""
