"""Query SCP door (C-FIND), PS3.4 C.4.1; IHE RAD-14, RAD-15, RAD-30, RAD-44, RAD-11.

Patient Root and Study Root information models at every level. The identifier is parsed into
`archive.search.Search` (matching rules live in `archive.query`, shared with QIDO-RS), and each
match is sent as a pending response. C-CANCEL is honoured before every response.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind

from pergamon.archive import errors
from pergamon.archive.events import QueryPerformed
from pergamon.archive.index.schema import Level
from pergamon.archive.query import Constraint
from pergamon.archive.search import Search, run_search
from pergamon.archive.service import Archive
from pergamon.dimse.status import (
    CANCEL,
    FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    FIND_UNABLE_TO_PROCESS,
    PENDING,
    SUCCESS,
    status_dataset,
)
from pergamon.dimse.store import origin_of

log = logging.getLogger(__name__)

# Elements of an identifier that are not query keys (PS3.4 C.4.1.1.3).
NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC", "RetrieveAETitle"})
PATIENT_ROOT_LEVELS = {"PATIENT", "STUDY", "SERIES", "IMAGE"}
STUDY_ROOT_LEVELS = {"STUDY", "SERIES", "IMAGE"}


def parse_identifier(identifier: Dataset, *, patient_root: bool, case_sensitive_pn: bool) -> Search:
    """Turn a C-FIND identifier into a Search.

    Raises:
        errors.InvalidQuery: no or unknown Query/Retrieve Level for the model, or a key value
            that cannot be matched (e.g. a malformed date range).
    """
    level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    allowed = PATIENT_ROOT_LEVELS if patient_root else STUDY_ROOT_LEVELS
    if level_text not in allowed:
        model = "Patient Root" if patient_root else "Study Root"
        raise errors.InvalidQuery(f"Query/Retrieve Level {level_text or '(missing)'} is not valid for {model}")
    search = Search(level=Level(level_text), patient_root=patient_root)
    for elem in identifier:
        if elem.tag.is_private or elem.tag.group in (0x0000, 0x0002):
            continue
        keyword = elem.keyword
        if not keyword or keyword in NOT_KEYS:
            continue
        search.return_keys.append(keyword)
        search.constraints.append(
            Constraint.parse(keyword, elem.VR, elem.value, case_sensitive_pn=case_sensitive_pn)
        )
    return search


def handle_find(event: Event, archive: Archive) -> Iterator[tuple[int, Dataset | None]]:
    """Answer a C-FIND request with one pending response per match, then success."""
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
    try:
        identifier = event.identifier
        search = parse_identifier(
            identifier, patient_root=patient_root, case_sensitive_pn=archive.settings.query.pn_case_sensitive
        )
    except errors.InvalidQuery as exc:
        log.warning("C-FIND from %s refused: %s", event.assoc.requestor.ae_title, exc)
        yield status_dataset(FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)).Status, None
        return
    except Exception as exc:  # an identifier pydicom cannot decode
        log.warning("C-FIND from %s: unreadable identifier: %s", event.assoc.requestor.ae_title, exc)
        yield FIND_UNABLE_TO_PROCESS, None
        return

    limit = archive.settings.query.max_results
    sent = 0
    try:
        with archive.db.read() as conn:
            for match in run_search(conn, search, retrieve_ae=archive.settings.dicom.ae_title):
                if event.is_cancelled:
                    log.info("C-FIND cancelled by %s after %d responses", event.assoc.requestor.ae_title, sent)
                    yield CANCEL, None
                    return
                yield PENDING, match.dataset
                sent += 1
                if limit and sent >= limit:
                    log.warning("C-FIND stopped at query.max_results=%d responses", limit)
                    break
    except errors.PergamonError as exc:
        log.warning("C-FIND from %s failed: %s", event.assoc.requestor.ae_title, exc)
        yield FIND_UNABLE_TO_PROCESS, None
        return
    log.info(
        "C-FIND %s level from %s: %d match(es)",
        search.level.value,
        event.assoc.requestor.ae_title,
        sent,
    )
    archive.bus.emit(
        QueryPerformed(
            level=search.level.value,
            keys={c.keyword: str(identifier.get(c.keyword, "")) for c in search.constraints},
            matches=sent,
            origin=origin_of(event),
        )
    )
    yield SUCCESS, None
