"""ADT patient messages (IHE RAD-1 Patient Registration, RAD-12 Patient Update; PIR): A01/A04/A05/A08, A40, A47.

The door translates; `archive.patients` applies (one transaction each, then the ACK is AA):

- A01 (admit), A04 (register), A05 (pre-admit), A08 (update): create or update the patient's
  demographics (`update_demographics`).
- A40 (merge patient, patient identifier list): every PID / MRG group merges the MRG-1 patient
  into the PID-3 one (`merge`): its studies move and the MRG-1 ID matches nothing afterwards. An
  MRG-1 patient unknown here leaves nothing to merge: AA, and logged (dcm4chee does the same).
- A47 (change patient identifier list): the MRG-1 patient takes the PID-3 identifier
  (`change_identifier`); AE 204 when MRG-1 is unknown, AE 205 when PID-3 is taken (that is an A40).

HL7 v2 to DICOM (IHE RAD TF-2 4.12 / Appendix B; the assigning authority as in dcm4chee-arc-hl7cs):

| HL7 | DICOM |
|---|---|
| PID-3 first repetition, CX.1 | Patient ID (0010,0020) |
| PID-3 CX.4 namespace ID (else universal ID) | Issuer of Patient ID (0010,0021) |
| PID-3 CX.4 universal ID, its type | Issuer of Patient ID Qualifiers Sequence (0010,0024) > Universal Entity ID, Type |
| PID-3 further repetitions | Other Patient IDs Sequence (0010,1002) > Patient ID, Issuer, Type of Patient ID TEXT |
| PID-5 XPN (family, given, middle, suffix, prefix) | Patient's Name (0010,0010) `Family^Given^Middle^Prefix^Suffix` |
| PID-6 XPN | Patient's Mother's Birth Name (0010,1060) |
| PID-7 TS `YYYYMMDD[HHMM[SS[.S]]]` | Patient's Birth Date (0010,0030), Patient's Birth Time (0010,0032) |
| PID-8 (table 0001) F, M, O; A, N; U | Patient's Sex (0010,0040) F, M, O; O; empty (unknown) |

An empty field leaves the attribute as it is; the HL7 null `""` empties it (HL7 v2.5 2.5.3). An
identifier of Pergamon's own domain (`[pix] assigning_authority`) names the patient stored without issuer.
Errors name the segment and field for the ERR segment: a missing PID or MRG is AR 100, an empty
PID-3 or MRG-1 AR 101, a value of the wrong form AE 102, an unknown PID-8 code AE 103.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterator

import hl7
from pydicom import Dataset

from pergamon.archive import errors, patients
from pergamon.archive.patients import PatientKey
from pergamon.archive.service import Archive
from pergamon.hl7.dispatch import Hl7ApplicationError, Hl7Context, Hl7Rejected, Hl7Router
from pergamon.hl7.fields import Segment, first, groups

log = logging.getLogger(__name__)

NULL = '""'
"""The HL7 null value: the receiver deletes what it holds (HL7 v2.5 2.5.3)."""
UPDATE_EVENTS = ("A01", "A04", "A05", "A08")
SEX = {"F": "F", "M": "M", "O": "O", "A": "O", "N": "O", "U": ""}
"""HL7 table 0001 to DICOM Patient's Sex (PS3.3 C.7.1.1: M, F, O); U (unknown) leaves it empty."""


def register(router: Hl7Router, archive: Archive) -> None:
    """Register the ADT triggers this module handles on `router`."""
    for trigger in UPDATE_EVENTS:
        router.register("ADT", trigger, _bound(handle_update, archive))
    router.register("ADT", "A40", _bound(handle_merge, archive))
    router.register("ADT", "A47", _bound(handle_change_identifier, archive))


def _bound(
    handler: Callable[[Archive, hl7.Message, Hl7Context], None], archive: Archive
) -> Callable[[hl7.Message, Hl7Context], None]:
    def handle(message: hl7.Message, context: Hl7Context) -> None:
        handler(archive, message, context)

    return handle


# --- handlers ------------------------------------------------------------------------------------


def handle_update(archive: Archive, message: hl7.Message, context: Hl7Context) -> None:
    """A01 / A04 / A05 / A08: create the PID-3 patient or update its demographics."""
    pid = first(message, "PID")
    if pid is None:
        raise Hl7Rejected("no PID segment", "100", "PID")
    key, attrs = _patient(archive, pid)
    with _core_errors(pid):
        patients.update_demographics(archive, key, attrs, message_id=context.control_id, origin=context.origin)


def handle_merge(archive: Archive, message: hl7.Message, context: Hl7Context) -> None:
    """A40: merge each MRG-1 patient into the PID-3 patient of its group (every group read before any merge)."""
    merges = [(pid, _patient(archive, pid), local(archive, read_mrg(mrg))) for pid, mrg in _pid_mrg_groups(message)]
    for pid, (surviving, attrs), obsolete in merges:
        with _core_errors(pid):
            result = patients.merge(archive, surviving, obsolete, attrs, message_id=context.control_id,
                                    origin=context.origin)  # fmt: skip
        if result.outcome is patients.MergeOutcome.NOTHING_TO_MERGE:
            log.info("ADT A40 %s: patient %s is unknown here, nothing merged into %s", context.control_id,
                     obsolete, surviving)  # fmt: skip


def handle_change_identifier(archive: Archive, message: hl7.Message, context: Hl7Context) -> None:
    """A47: the MRG-1 patient takes the PID-3 identifier."""
    groups_ = _pid_mrg_groups(message)
    changes = [(pid, mrg, _patient(archive, pid), local(archive, read_mrg(mrg))) for pid, mrg in groups_]
    for pid, mrg, (new, attrs), old in changes:
        try:
            patients.change_identifier(archive, old, new, attrs, message_id=context.control_id, origin=context.origin)
        except errors.NotFound as exc:
            raise Hl7ApplicationError(str(exc), "204", "MRG", mrg.sequence, 1) from None
        except errors.Conflict as exc:
            raise Hl7ApplicationError(str(exc), "205", "PID", pid.sequence, 3) from None
        except errors.Invalid as exc:
            raise Hl7ApplicationError(str(exc), "102", "PID", pid.sequence, 3) from None


def local(archive: Archive, key: PatientKey) -> PatientKey:
    """`key` as the index files it: an ID of Pergamon's own domain (`[pix] assigning_authority`) has no issuer.

    Objects stored without Issuer of Patient ID belong to that domain (as `archive.pix` reads them).
    """
    own = {archive.settings.pix.assigning_authority, archive.settings.pix.assigning_authority_uid} - {""}
    return PatientKey(key.patient_id, "") if key.issuer in own else key


def _patient(archive: Archive, pid: Segment) -> tuple[PatientKey, Dataset]:
    """`read_pid`, with the key as the index files it (`local`)."""
    key, attrs = read_pid(pid)
    filed = local(archive, key)
    if filed != key and "IssuerOfPatientIDQualifiersSequence" in attrs:
        del attrs.IssuerOfPatientIDQualifiersSequence
    return filed, attrs


@contextlib.contextmanager
def _core_errors(pid: Segment) -> Iterator[None]:
    """Turn the core's refusals about one PID's patient into AE at PID-3."""
    try:
        yield
    except errors.Invalid as exc:
        raise Hl7ApplicationError(str(exc), "102", "PID", pid.sequence, 3) from None
    except errors.NotFound as exc:
        raise Hl7ApplicationError(str(exc), "204", "PID", pid.sequence, 3) from None
    except errors.Conflict as exc:
        raise Hl7ApplicationError(str(exc), "205", "PID", pid.sequence, 3) from None


def _pid_mrg_groups(message: hl7.Message) -> list[tuple[Segment, Segment]]:
    """The PATIENT groups of an A40 / A47: each PID with the MRG that follows it (both required)."""
    found = groups(message, "PID", ("PD1", "MRG", "PV1"))
    if not found:
        raise Hl7Rejected("no PID segment", "100", "PID")
    pairs = []
    for group in found:
        pid = group["PID"][0]
        if "MRG" not in group:
            raise Hl7Rejected(f"PID #{pid.sequence} has no MRG segment (the patient to merge or change)", "100", "MRG",
                              pid.sequence)  # fmt: skip
        pairs.append((pid, group["MRG"][0]))
    return pairs


# --- reading PID and MRG -------------------------------------------------------------------------


def read_pid(pid: Segment) -> tuple[PatientKey, Dataset]:
    """The patient key (PID-3) and the patient-level DICOM attributes the PID carries (module table).

    Raises:
        Hl7Rejected: PID-3 is empty (101).
        Hl7ApplicationError: PID-7 is not a date (102), PID-8 not in table 0001 (103).
    """
    reps = pid.repetitions(3)
    if not reps or not pid.part(reps[0]) or pid.part(reps[0]) == NULL:
        raise Hl7Rejected("PID-3 (patient identifier list) has no patient ID", "101", "PID", pid.sequence, 3)
    key = _cx(pid, reps[0])
    ds = Dataset()
    qualifiers = _qualifiers(pid, reps[0])
    if qualifiers is not None:
        ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    if len(reps) > 1:
        others = []
        for rep in reps[1:]:
            other = _cx(pid, rep)
            item = Dataset()
            item.PatientID = other.patient_id
            if other.issuer:
                item.IssuerOfPatientID = other.issuer
            item.TypeOfPatientID = "TEXT"
            others.append(item)
        ds.OtherPatientIDsSequence = others
    _set(ds, "PatientName", _xpn(pid, 5))
    _set(ds, "PatientMotherBirthName", _xpn(pid, 6))
    _birth(ds, pid)
    sex = pid.get(8)
    if sex == NULL:
        ds.PatientSex = ""
    elif sex:
        if sex.upper() not in SEX:
            raise Hl7ApplicationError(f"PID-8 {sex!r} is not an administrative sex of HL7 table 0001", "103", "PID",
                                      pid.sequence, 8)  # fmt: skip
        ds.PatientSex = SEX[sex.upper()]
    return key, ds


def read_mrg(mrg: Segment) -> PatientKey:
    """MRG-1 (prior patient identifier list), first repetition.

    Raises:
        Hl7Rejected: MRG-1 is empty (101).
    """
    reps = mrg.repetitions(1)
    if not reps or not mrg.part(reps[0]) or mrg.part(reps[0]) == NULL:
        raise Hl7Rejected("MRG-1 (prior patient identifier list) has no patient ID", "101", "MRG", mrg.sequence, 1)
    return _cx(mrg, reps[0])


def _cx(segment: Segment, rep: str) -> PatientKey:
    """A CX: ID (component 1) and assigning authority (component 4: namespace ID, else universal ID)."""
    issuer = segment.part(rep, 4, 1) or segment.part(rep, 4, 2)
    return PatientKey(segment.part(rep, 1), issuer)


def _qualifiers(segment: Segment, rep: str) -> Dataset | None:
    universal, kind = segment.part(rep, 4, 2), segment.part(rep, 4, 3)
    if not universal:
        return None
    item = Dataset()
    item.UniversalEntityID = universal
    if kind:
        item.UniversalEntityIDType = kind
    return item


def _xpn(segment: Segment, number: int) -> str | None:
    """An XPN's first repetition as a DICOM PN; None when the field is empty, "" for the null value."""
    reps = segment.repetitions(number)
    if not reps:
        return None
    if reps[0] == NULL:
        return ""
    # XPN: 1 family name (FN, surname first), 2 given, 3 middle, 4 suffix, 5 prefix, 6 degree.
    family, given, middle = segment.part(reps[0], 1), segment.part(reps[0], 2), segment.part(reps[0], 3)
    suffix = " ".join(v for v in (segment.part(reps[0], 4), segment.part(reps[0], 6)) if v)
    return "^".join((family, given, middle, segment.part(reps[0], 5), suffix)).rstrip("^")


def _birth(ds: Dataset, pid: Segment) -> None:
    value = pid.get(7)
    if not value:
        return
    if value == NULL:
        ds.PatientBirthDate = ""
        ds.PatientBirthTime = ""
        return
    digits = value.split("+")[0].split("-")[0]
    whole, _, fraction = digits.partition(".")
    try:
        if len(whole) < 8 or not whole.isdigit():
            raise ValueError("not YYYYMMDD")
        dt.date(int(whole[:4]), int(whole[4:6]), int(whole[6:8]))
    except ValueError:
        raise Hl7ApplicationError(f"PID-7 {value!r} is not a date of birth (YYYYMMDD[HHMM[SS]])", "102", "PID",
                                  pid.sequence, 7) from None  # fmt: skip
    ds.PatientBirthDate = whole[:8]
    if len(whole) >= 12:
        ds.PatientBirthTime = whole[8:14] + (f".{fraction[:6]}" if fraction and len(whole) >= 14 else "")


def _set(ds: Dataset, keyword: str, value: str | None) -> None:
    if value is not None:
        setattr(ds, keyword, value)
