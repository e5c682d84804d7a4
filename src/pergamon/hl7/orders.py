"""Orders (IHE RAD-4 Procedure Scheduled, RAD-13 Procedure Updated): ORM^O01 and OMI^O23 to `archive.orders`.

Each ORC starts an order; ORC-1 says what to do with it (HL7 table 0119): NW new, XO change,
CA cancel, DC discontinue, SC status changed (ORC-5), and the filler's OC / OD (cancelled /
discontinued) like CA / DC. Every order of a message is applied in one transaction: all or none.

Fields read, per RAD TF-2 4.4 (v2.3.1 ORM^O01 with ZDS, SWF) and the SWF.b OMI^O23 with IPC:

- PID-3 first repetition: Patient ID and its assigning authority (namespace ID, else universal ID);
  PID-5 the patient's name;
- ORC-2 / ORC-3 placer / filler order number (else OBR-2 / OBR-3); ORC-5 order status;
- OBR-44 Procedure Code (else OBR-4 components 1-3) and its text, the Requested Procedure Code;
  OBR-4 components 4-6 the Scheduled Protocol Code;
- ORM: OBR-18 Accession Number, OBR-19 Requested Procedure ID, OBR-20 Scheduled Procedure Step ID,
  OBR-24 Modality, OBR-27 (or ORC-7) component 4 the step's start, ZDS-1 the Study Instance UID;
- OMI: one step per IPC: IPC-1 Accession Number (EI, with its namespace as issuer), IPC-2
  Requested Procedure ID, IPC-3 Study Instance UID, IPC-4 Scheduled Procedure Step ID, IPC-5
  Modality, IPC-6 Protocol Code, IPC-9 Scheduled Station AE Title; TQ1-7 the start.

Errors (HL7 table 0357, AE): an unknown ORC-1 or ORC-5 value is 103 at that field, a missing
order number or segment 101 / 100, an unknown order 204 at ORC-2, an order in a state that does
not allow the change 207.
"""

from __future__ import annotations

import hl7
from sqlalchemy import Connection

from pergamon.archive import errors, orders
from pergamon.archive.orders import Code, Order, OrderStatus, ProcedureStep
from pergamon.archive.service import Archive
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Router
from pergamon.hl7.fields import Segment, first, groups

ORDER_CONTROLS = {
    "NW": "new",
    "XO": "change",
    "CA": "cancel",
    "OC": "cancel",
    "DC": "discontinue",
    "OD": "discontinue",
    "SC": "status",
}
"""ORC-1 order control codes applied (HL7 table 0119); anything else is refused."""

_GROUP_MEMBERS = ("TQ1", "OBR", "ZDS", "IPC")


def register(router: Hl7Router, archive: Archive) -> None:
    """Register ORM^O01 (SWF, v2.3.1) and OMI^O23 (SWF.b, v2.5.1) on `router`."""

    def handle(message: hl7.Message, context: Hl7Context) -> None:
        handle_order_message(archive, message, context)

    router.register("ORM", "O01", handle)
    router.register("OMI", "O23", handle)


def handle_order_message(archive: Archive, message: hl7.Message, context: Hl7Context) -> None:
    """Apply every order of an ORM^O01 / OMI^O23; returns once committed.

    Raises:
        Hl7ApplicationError: the message cannot be applied (nothing of it is).
    """
    pid = first(message, "PID")
    order_groups = groups(message, "ORC", _GROUP_MEMBERS)
    if not order_groups:
        raise Hl7ApplicationError("the message has no ORC segment", code="100", segment="ORC")
    message_type = _message_type(message)
    parsed = [_read_group(group, pid, message_type) for group in order_groups]
    applied = []
    with archive.db.write() as conn:
        for control, order, orc in parsed:
            try:
                created = orders.find_order(conn, order.placer_order_number, order.filler_order_number) is None
                _apply(conn, control, order, orc)
                applied.append(orders.received(order, ORDER_CONTROLS[control], created=created,
                                               message_id=context.control_id, origin=context.origin))  # fmt: skip
            except errors.NotFound as exc:
                raise Hl7ApplicationError(
                    str(exc), code="204", segment="ORC", sequence=orc.sequence, position=2
                ) from exc
            except errors.Invalid as exc:
                raise Hl7ApplicationError(
                    str(exc), code="101", segment="ORC", sequence=orc.sequence, position=2
                ) from exc
            except errors.Conflict as exc:
                raise Hl7ApplicationError(
                    str(exc), code="207", segment="ORC", sequence=orc.sequence, position=1
                ) from exc
    for event in applied:
        archive.bus.emit(event)


def _apply(conn: Connection, control: str, order: Order, orc: Segment) -> None:
    action = ORDER_CONTROLS[control]
    if action == "new":
        orders.schedule(conn, order)
    elif action == "change":
        orders.change(conn, order)
    elif action == "cancel":
        orders.cancel(conn, order, OrderStatus.CANCELLED)
    elif action == "discontinue":
        orders.cancel(conn, order, OrderStatus.DISCONTINUED)
    else:
        if order.status is None:
            raise Hl7ApplicationError(
                "order control SC needs the new order status in ORC-5",
                code="101",
                segment="ORC",
                sequence=orc.sequence,
                position=5,
            )
        orders.set_status(conn, order, order.status)


def _read_group(group: dict[str, list[Segment]], pid: Segment | None, message_type: str) -> tuple[str, Order, Segment]:
    """(ORC-1, the order it describes, the ORC) of one ORC group; raises on what cannot be applied."""
    orc = group["ORC"][0]
    control = orc.get(1).upper()
    if control not in ORDER_CONTROLS:
        raise Hl7ApplicationError(
            f"order control (ORC-1) {control!r} is not one of {', '.join(ORDER_CONTROLS)}",
            code="103" if control else "101",
            segment="ORC",
            sequence=orc.sequence,
            position=1,
        )
    status = _status(orc)
    obr = (group.get("OBR") or [None])[0]
    if obr is None and ORDER_CONTROLS[control] in ("new", "change"):
        raise Hl7ApplicationError(
            f"order control {control} needs an OBR segment after the ORC", code="100", segment="OBR"
        )
    placer = orc.get(2) or (obr.get(2) if obr else "")
    filler = orc.get(3) or (obr.get(3) if obr else "")
    if not placer and not filler:
        raise Hl7ApplicationError(
            "the order has neither a placer (ORC-2) nor a filler (ORC-3) order number",
            code="101",
            segment="ORC",
            sequence=orc.sequence,
            position=2,
        )
    patient_id, issuer = _patient_id(pid)
    if obr is None:
        return control, Order(placer, filler, patient_id=patient_id, patient_issuer=issuer, status=status), orc
    step_status = status or OrderStatus.SCHEDULED
    ipcs = group.get("IPC") or []
    procedure_code = _code(obr, 44, 1) or _code(obr, 4, 1)
    protocol = _code(obr, 4, 4)
    if ipcs:
        tq1 = (group.get("TQ1") or [None])[0]
        start = tq1.get(7) if tq1 else ""
        steps = tuple(
            ProcedureStep(
                sps_id=ipc.get(4),
                modality=ipc.get(5),
                station_ae=ipc.get(9),
                start_datetime=start,
                protocol_codes=_codes(ipc, 6) or ((protocol,) if protocol else ()),
                status=step_status,
            )
            for ipc in ipcs
        )
        ipc = ipcs[0]
        accession, accession_issuer = ipc.get(1), ipc.get(1, 2)
        requested_procedure_id, study_uid = ipc.get(2), ipc.get(3)
    else:
        zds = (group.get("ZDS") or [None])[0]
        start = obr.get(27, 4) or orc.get(7, 4)
        steps = (
            ProcedureStep(
                sps_id=obr.get(20),
                modality=obr.get(24),
                start_datetime=start,
                protocol_codes=(protocol,) if protocol else (),
                status=step_status,
            ),
        )
        accession, accession_issuer = obr.get(18), ""
        requested_procedure_id, study_uid = obr.get(19), zds.get(1) if zds else ""
    order = Order(
        placer_order_number=placer,
        filler_order_number=filler,
        accession_number=accession,
        accession_issuer=accession_issuer,
        requested_procedure_id=requested_procedure_id,
        study_uid=study_uid,
        patient_id=patient_id,
        patient_issuer=issuer,
        patient_name=_name(pid),
        procedure_code=procedure_code,
        procedure_description=procedure_code.meaning if procedure_code else "",
        status=status,
        steps=steps,
        message_type=message_type,
    )
    return control, order, orc


def _status(orc: Segment) -> OrderStatus | None:
    value = orc.get(5).upper()
    if not value:
        return None
    try:
        return OrderStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in OrderStatus)
        raise Hl7ApplicationError(
            f"order status (ORC-5) {value!r} is not one of {known}",
            code="103",
            segment="ORC",
            sequence=orc.sequence,
            position=5,
        ) from None


def _patient_id(pid: Segment | None) -> tuple[str, str]:
    """PID-3's first identifier and its assigning authority (namespace ID, else universal ID)."""
    if pid is None:
        return "", ""
    return pid.get(3), pid.get(3, 4, 1) or pid.get(3, 4, 2)


def _name(pid: Segment | None) -> str:
    """PID-5 (XPN) as a DICOM PN: family^given^middle^prefix^suffix (as `hl7.adt` maps it)."""
    if pid is None:
        return ""
    reps = pid.repetitions(5)
    if not reps or reps[0] == '""':
        return ""
    # XPN: 1 family, 2 given, 3 middle, 4 suffix, 5 prefix, 6 degree; PN swaps 4 and 5 and keeps the degree.
    family, given, middle = pid.part(reps[0], 1), pid.part(reps[0], 2), pid.part(reps[0], 3)
    suffix = " ".join(v for v in (pid.part(reps[0], 4), pid.part(reps[0], 6)) if v)
    return "^".join((family, given, middle, pid.part(reps[0], 5), suffix)).rstrip("^")


def _code(segment: Segment, number: int, start: int) -> Code | None:
    """A CE at components start..start+2 (identifier, text, coding system) of a field, if it has a value."""
    value = segment.get(number, start)
    if not value:
        return None
    return Code(value=value, meaning=segment.get(number, start + 1), scheme=segment.get(number, start + 2))


def _codes(segment: Segment, number: int) -> tuple[Code, ...]:
    """Every repetition of a CE field."""
    found = []
    for raw in segment.repetitions(number):
        value = segment.part(raw, 1)
        if value:
            found.append(Code(value=value, meaning=segment.part(raw, 2), scheme=segment.part(raw, 3)))
    return tuple(found)


def _message_type(message: hl7.Message) -> str:
    msh = first(message, "MSH")
    # MSH-1 is the field separator itself, so MSH-n is at index n-1 of the split text.
    return f"{msh.get(8)}^{msh.get(8, 2)}" if msh else ""
