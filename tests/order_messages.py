"""HL7 v2 order messages for the RAD-4 / RAD-13 tests, built field by field.

``orm`` is an ORM^O01 in HL7 v2.3.1 as RAD TF-2 4.4 describes it (SWF): MSH, PID, PV1, ORC,
OBR and a ZDS carrying the Study Instance UID. Fields: ORC-1 order control, ORC-2 / ORC-3 placer /
filler order number, ORC-5 order status; OBR-4 universal service ID (components 1-3 the requested
procedure code, 4-6 the scheduled protocol code), OBR-18 accession number, OBR-19 requested
procedure ID, OBR-20 scheduled procedure step ID, OBR-24 modality, OBR-27 quantity/timing
(component 4 the start); ZDS-1 ``<uid>^100^Application^DICOM``.

``omi`` is an OMI^O23 in HL7 v2.5.1 (SWF.b): MSH, PID, PV1, ORC, TQ1 (TQ1-7 the start), OBR
(OBR-44 the procedure code) and one IPC per scheduled step: IPC-1 accession number (EI with
namespace), IPC-2 requested procedure ID, IPC-3 Study Instance UID, IPC-4 SPS ID, IPC-5 modality,
IPC-6 protocol code, IPC-9 scheduled station AE title.
"""

from __future__ import annotations

import uuid


def _msh(message_type: str, version: str) -> str:
    return f"MSH|^~\\&|RIS|HOSP|PERGAMON|HOSP|20261127080000||{message_type}|{uuid.uuid4().hex[:20]}|P|{version}"


def _pid(patient_id: str, issuer: str, name: str) -> str:
    return f"PID|1||{patient_id}^^^{issuer}^PI||{name}||19700101|F"


def orm(
    control: str,
    placer: str,
    *,
    filler: str = "",
    status: str = "SC",
    accession: str = "",
    study_uid: str = "",
    modality: str = "CT",
    sps_id: str = "SPS1",
    patient_id: str = "PAT1",
    issuer: str = "HOSP",
    name: str = "DOE^JANE",
) -> str:
    """An ORM^O01 (v2.3.1) with one ORC/OBR/ZDS group; segments separated by CR."""
    segments = [
        _msh("ORM^O01", "2.3.1"),
        _pid(patient_id, issuer, name),
        "PV1|1|O",
        f"ORC|{control}|{placer}^RIS|{filler}{'^PACS' if filler else ''}||{status}||^^^20261127090000",
        f"OBR|1|{placer}^RIS|{filler}|CTHEAD^CT head^99X^P1^Head protocol^99X||||||||||||||"
        f"{accession}|RP1|{sps_id}||||{modality}|||^^^20261127090000",
    ]
    if study_uid:
        segments.append(f"ZDS|{study_uid}^100^Application^DICOM")
    return "\r".join(segments) + "\r"


def omi(
    control: str,
    placer: str,
    *,
    filler: str = "",
    status: str = "SC",
    accession: str = "",
    accession_issuer: str = "",
    study_uid: str = "",
    steps: tuple[tuple[str, str, str], ...] = (("SPS1", "CT", "CT_ROOM1"),),
    patient_id: str = "PAT1",
    issuer: str = "HOSP",
    name: str = "DOE^JANE",
) -> str:
    """An OMI^O23 (v2.5.1) with one ORC group and one IPC per (SPS ID, modality, station AE) step."""
    segments = [
        _msh("OMI^O23^OMI_O23", "2.5.1"),
        _pid(patient_id, issuer, name),
        "PV1|1|O",
        f"ORC|{control}|{placer}^RIS|{filler}{'^PACS' if filler else ''}||{status}",
        "TQ1|1||||||20261127090000",
        f"OBR|1|{placer}^RIS|{filler}|CTHEAD^CT head^99X" + "|" * 40 + "CTHEAD^CT head^99X",
    ]
    for sps_id, modality, station in steps:
        segments.append(
            f"IPC|{accession}^{accession_issuer}|RP1|{study_uid}|{sps_id}|{modality}|P1^Head protocol^99X|||{station}"
        )
    return "\r".join(segments) + "\r"
