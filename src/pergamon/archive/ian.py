"""Instance Availability Notification (PS3.4 R; IHE RAD-49, "Availability of PPS-Referenced Instances").

When an MPPS is COMPLETED or DISCONTINUED and every instance its Performed Series Sequence
references is in the index, one `IAN_JOB` per `workflow.ian_destinations` entry and study is
queued, once per MPPS (`ian_queued_at` is set in the same transaction, conditionally, so two
concurrent checks cannot both queue). `IanTrigger`, subscribed on the event bus, checks on each
final MPPS and on each stored instance that a waiting MPPS references. Each check runs after the
commit that caused it, so whichever of the MPPS and its last instance commits last sees both.
A crash between a commit and its check is made good at the next start (`ApplicationStarted`):
final MPPS of the last `CATCH_UP_WINDOW` seconds not yet notified are checked again.

The notification (PS3.3 C.4.23) lists the instances as stored (study and series from the index),
ONLINE, retrievable from Pergamon's AE title; it is built when queued, so every destination gets
the same content and SOP Instance UID, also on retries.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select, update

from pergamon.archive.events import ApplicationStarted, InstanceStored
from pergamon.archive.index.schema import instance, pps_reference, series, study
from pergamon.archive.index.schema import performed_procedure_step as pps
from pergamon.archive.mpps import FINAL_STATES, MPPS_CLASS, ProcedureStepReceived

if TYPE_CHECKING:
    from pergamon.archive.service import Archive

IAN_CLASS = "1.2.840.10008.5.1.4.33"
"""Instance Availability Notification SOP Class (PS3.4 R)."""
IAN_JOB = "ian-send"
"""Job kind: send one notification to one destination (payload: destination, sop_uid, pps_uid, attrs)."""
ONLINE = "ONLINE"
CATCH_UP_WINDOW = 7 * 86400.0

_QUERY_CHUNK = 500


class IanTrigger:
    """Bus subscriber: queue the IAN of each final MPPS whose referenced instances are all stored."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def __call__(self, event: Any) -> None:
        if not self.archive.settings.workflow.ian_destinations:
            return
        if isinstance(event, ProcedureStepReceived):
            if event.sop_class_uid == MPPS_CLASS and event.status in FINAL_STATES:
                check(self.archive, event.sop_uid)
        elif isinstance(event, InstanceStored):
            for pps_uid in waiting_for(self.archive, event.sop_instance_uid):
                check(self.archive, pps_uid)
        elif isinstance(event, ApplicationStarted):
            catch_up(self.archive, time.time() - CATCH_UP_WINDOW)


def catch_up(archive: Archive, since: float, limit: int = 1000) -> int:
    """Check the final, not yet notified MPPS updated since `since`; how many IANs were queued."""
    with archive.db.read() as conn:
        uids = list(
            conn.execute(
                select(pps.c.sop_uid)
                .where(
                    pps.c.sop_class_uid == MPPS_CLASS,
                    pps.c.status.in_(FINAL_STATES),
                    pps.c.ian_queued_at.is_(None),
                    pps.c.updated_at >= since,
                )
                .order_by(pps.c.updated_at.desc())
                .limit(limit)
            ).scalars()
        )
    return sum(check(archive, uid) for uid in uids)


def waiting_for(archive: Archive, sop_uid: str) -> list[str]:
    """Final MPPS not yet notified that reference this SOP instance."""
    with archive.db.read() as conn:
        rows = conn.execute(
            select(pps.c.sop_uid)
            .join(pps_reference, pps_reference.c.pps_fk == pps.c.pk)
            .where(
                pps_reference.c.sop_uid == sop_uid,
                pps.c.status.in_(FINAL_STATES),
                pps.c.ian_queued_at.is_(None),
            )
            .distinct()
        )
        return [row.sop_uid for row in rows]


def check(archive: Archive, pps_uid: str) -> bool:
    """Queue the IANs of this MPPS if it is final, not yet notified and all its instances are stored.

    True when this call queued them. An MPPS that references no instance has nothing to announce.
    """
    destinations = tuple(dict.fromkeys(t.strip() for t in archive.settings.workflow.ian_destinations))
    if not destinations:
        return False
    with archive.db.read() as conn:
        step = conn.execute(select(pps.c.pk, pps.c.status, pps.c.ian_queued_at).where(pps.c.sop_uid == pps_uid)).first()
        if step is None or step.status not in FINAL_STATES or step.ian_queued_at is not None:
            return False
        refs = [
            row.sop_uid
            for row in conn.execute(
                select(pps_reference.c.sop_uid).where(pps_reference.c.pps_fk == step.pk).order_by(pps_reference.c.pk)
            )
        ]
    if not refs:
        return False
    stored = _stored(archive, refs)
    if any(uid not in stored for uid in refs):
        return False
    notifications = build_notifications(
        pps_uid, [stored[uid] for uid in dict.fromkeys(refs)], archive.settings.dicom.ae_title
    )
    with archive.db.write() as conn:
        claimed = conn.execute(
            update(pps).where(pps.c.pk == step.pk, pps.c.ian_queued_at.is_(None)).values(ian_queued_at=time.time())
        ).rowcount
        if claimed != 1:
            return False
        for notification in notifications:
            attrs = notification.to_json_dict()
            uid = generate_uid()
            for destination in destinations:
                payload = {"destination": destination, "sop_uid": uid, "pps_uid": pps_uid, "attrs": attrs}
                archive.jobs.enqueue(IAN_JOB, payload, conn=conn)
    archive.jobs.wake()
    return True


def build_notifications(pps_uid: str, stored: Iterable[tuple[str, str, str, str]], retrieve_ae: str) -> list[Dataset]:
    """One IAN dataset per study (PS3.3 C.4.23) of (study, series, SOP class, SOP instance) tuples."""
    studies: dict[str, dict[str, list[tuple[str, str]]]] = {}
    for study_uid, series_uid, sop_class, sop_uid in stored:
        studies.setdefault(study_uid, {}).setdefault(series_uid, []).append((sop_class, sop_uid))
    notifications = []
    for study_uid, by_series in studies.items():
        ds = Dataset()
        step = Dataset()
        step.ReferencedSOPClassUID = MPPS_CLASS
        step.ReferencedSOPInstanceUID = pps_uid
        step.PerformedWorkitemCodeSequence = []  # Type 2 (PS3.3 C.4.23.1)
        ds.ReferencedPerformedProcedureStepSequence = [step]
        ds.StudyInstanceUID = study_uid
        series_items = []
        for series_uid, instances in by_series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            sop_items = []
            for sop_class, sop_uid in instances:
                ref = Dataset()
                ref.RetrieveAETitle = retrieve_ae
                ref.InstanceAvailability = ONLINE
                ref.ReferencedSOPClassUID = sop_class
                ref.ReferencedSOPInstanceUID = sop_uid
                sop_items.append(ref)
            item.ReferencedSOPSequence = sop_items
            series_items.append(item)
        ds.ReferencedSeriesSequence = series_items
        notifications.append(ds)
    return notifications


def _stored(archive: Archive, sop_uids: list[str]) -> dict[str, tuple[str, str, str, str]]:
    """(study, series, SOP class, SOP instance) of those of `sop_uids` that are in the index."""
    uids = sorted(set(sop_uids))
    found: dict[str, tuple[str, str, str, str]] = {}
    with archive.db.read() as conn:
        for start in range(0, len(uids), _QUERY_CHUNK):
            rows = conn.execute(
                select(study.c.study_uid, series.c.series_uid, instance.c.sop_class_uid, instance.c.sop_uid)
                .join(series, series.c.pk == instance.c.series_fk)
                .join(study, study.c.pk == series.c.study_fk)
                .where(instance.c.sop_uid.in_(uids[start : start + _QUERY_CHUNK]))
            )
            for row in rows:
                found[row.sop_uid] = (row.study_uid, row.series_uid, row.sop_class_uid, row.sop_uid)
    return found
