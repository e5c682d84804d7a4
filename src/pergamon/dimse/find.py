"""Query SCP door (C-FIND), PS3.4 C.4.1; IHE RAD-14, RAD-15, RAD-30, RAD-44, RAD-11.

Patient Root and Study Root information models (PS3.4 C.6.1, C.6.2) at every level, with the
Hierarchical Search Method (PS3.4 C.4.1.3.1.1). The identifier is parsed into an
`archive.search.Search` (matching rules live in `archive.query`, shared with QIDO-RS); each match
is sent as a pending response, and C-CANCEL is honoured before every one of them. Pending
responses on a Little Endian context are written by `find_responses` straight from the index's
DICOM JSON; the others, and every final status, by pynetdicom.

Character sets: pydicom decodes the identifier with its own Specific Character Set (ISO 2022
escape sequences included), so a key such as ``山田*`` matches however the SCU encoded it and
however the object was encoded when stored. Responses are encoded in UTF-8 (``ISO_IR 192``)
when they hold non-ASCII text (`archive.search.response_dataset`).

Failures (PS3.4 C.4.1.1.4) carry an Error Comment (0000,0902) and, when one key is to blame, the
Offending Element (0000,0901): ``A900`` for an identifier the model cannot answer (no or a wrong
Query/Retrieve Level, a key value that cannot be matched such as ``StudyDate=2020x``), ``C000``
for an identifier that cannot be decoded or a search that fails. The association stays usable.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pynetdicom.events import Event
from pynetdicom.sop_class import PatientRootQueryRetrieveInformationModelFind

from pergamon.archive import errors
from pergamon.archive.events import QueryPerformed
from pergamon.archive.index.schema import Level
from pergamon.archive.query import Constraint
from pergamon.archive.search import ItemKeys, Search, run_search
from pergamon.archive.service import Archive
from pergamon.dimse.find_responses import PendingResponses
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

NOT_KEYS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet", "TimezoneOffsetFromUTC", "RetrieveAETitle"})
"""Elements of a request identifier that are not query keys (PS3.4 C.4.1.1.3.1)."""

LEVELS = {
    True: ("PATIENT", "STUDY", "SERIES", "IMAGE"),  # Patient Root, PS3.4 C.6.1
    False: ("STUDY", "SERIES", "IMAGE"),  # Study Root, PS3.4 C.6.2
}


class KeyRefused(errors.InvalidQuery):
    """A query key whose value cannot be matched; `tag` is the Offending Element."""

    def __init__(self, message: str, tag: int) -> None:
        super().__init__(message)
        self.tag = tag


def parse_identifier(identifier: Dataset, *, patient_root: bool, case_sensitive_pn: bool) -> Search:
    """Turn a C-FIND request identifier (PS3.4 C.4.1.1.3.1) into a Search.

    Every public element other than `NOT_KEYS` is a key: matched when it has a value (PS3.4
    C.2.2.2) and returned in each response. A sequence key may hold one item, whose elements are
    in turn matched against the stored items and returned (Sequence Matching, C.2.2.2.6).

    Raises:
        errors.InvalidQuery: no Query/Retrieve Level or one the model does not have (e.g. PATIENT
            in Study Root); `KeyRefused` for a key value that cannot be matched.
    """
    level_text = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level_text not in LEVELS[patient_root]:
        model = "Patient Root" if patient_root else "Study Root"
        raise errors.InvalidQuery(
            f"Query/Retrieve Level {level_text or '(missing)'} is not valid for {model} "
            f"(one of {', '.join(LEVELS[patient_root])})"
        )
    search = Search(level=Level(level_text), patient_root=patient_root)
    for elem in identifier:
        keyword = _key_keyword(elem)
        if not keyword:
            continue
        search.return_keys.append(keyword)
        search.constraints.append(_parse_key(keyword, elem, case_sensitive_pn))
        if elem.VR == "SQ" and elem.value is not None and len(elem.value) > 0:
            search.sequence_items[keyword] = _parse_item(keyword, elem, case_sensitive_pn)
    return search


def _key_keyword(elem: DataElement) -> str:
    """The keyword of an element that is a query key, '' for anything else."""
    if elem.tag.is_private or elem.tag.group in (0x0000, 0x0002):
        return ""
    keyword = elem.keyword
    return "" if not keyword or keyword in NOT_KEYS else keyword


def _parse_key(keyword: str, elem: DataElement, case_sensitive_pn: bool) -> Constraint:
    try:
        return Constraint.parse(keyword, elem.VR, elem.value, case_sensitive_pn=case_sensitive_pn)
    except errors.InvalidQuery as exc:
        raise KeyRefused(str(exc), int(elem.tag)) from exc


def _parse_item(keyword: str, elem: DataElement, case_sensitive_pn: bool) -> ItemKeys:
    """The keys of a sequence key's single item (PS3.4 C.2.2.2.6); a nested sequence is returned whole."""
    if len(elem.value) > 1:
        message = f"{keyword}: a sequence key holds one item (PS3.4 C.2.2.2.6), not {len(elem.value)}"
        raise KeyRefused(message, int(elem.tag))
    constraints: list[Constraint] = []
    return_keys: list[str] = []
    for sub in elem.value[0]:
        sub_keyword = _key_keyword(sub)
        if not sub_keyword:
            continue
        return_keys.append(sub_keyword)
        try:
            constraints.append(Constraint.parse(sub_keyword, sub.VR, sub.value, case_sensitive_pn=case_sensitive_pn))
        except errors.InvalidQuery as exc:
            raise KeyRefused(f"{keyword} > {exc}", int(elem.tag)) from exc
    return ItemKeys(tuple(constraints), tuple(return_keys))


def _failure(status: int, message: str, tag: int | None = None) -> Dataset:
    """A failure status with Error Comment and, when known, Offending Element (PS3.4 C.4.1.1.4)."""
    ds = status_dataset(status, message)
    if tag is not None:
        ds.OffendingElement = [tag]
    return ds


def handle_find(event: Event, archive: Archive) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """Answer a C-FIND request with one pending response per match, then success.

    Pending responses written by `PendingResponses` are flushed before pynetdicom sends anything
    this generator yields, so the final status always follows them on the wire.

    References: PS3.4 C.4.1.1.4 (statuses), C.4.1.3 (SCP behaviour), PS3.7 9.3.2.3 (C-CANCEL).
    """
    direct = PendingResponses.open(event)
    for response in _answer(event, archive, direct):
        if direct is not None:
            direct.flush()
        yield response


def _answer(
    event: Event, archive: Archive, direct: PendingResponses | None
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """The responses pynetdicom sends; pending ones go through `direct` when there is one."""
    patient_root = event.request.AffectedSOPClassUID == PatientRootQueryRetrieveInformationModelFind
    calling = event.assoc.requestor.ae_title
    try:
        identifier = event.identifier
        search = parse_identifier(
            identifier, patient_root=patient_root, case_sensitive_pn=archive.settings.query.pn_case_sensitive
        )
    except KeyRefused as exc:
        log.warning("C-FIND from %s refused: %s", calling, exc)
        yield _failure(FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc), exc.tag), None
        return
    except errors.InvalidQuery as exc:
        log.warning("C-FIND from %s refused: %s", calling, exc)
        yield _failure(FIND_IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(exc)), None
        return
    except Exception as exc:  # an identifier pydicom cannot decode
        log.warning("C-FIND from %s: unreadable identifier: %s", calling, exc)
        yield _failure(FIND_UNABLE_TO_PROCESS, f"unreadable identifier: {exc}"), None
        return

    search.limit = archive.settings.query.max_results
    sent = 0
    try:
        with archive.db.read() as conn:
            for match in run_search(conn, search, retrieve_ae=archive.settings.dicom.ae_title):
                if event.is_cancelled:
                    log.info("C-FIND cancelled by %s after %d responses", calling, sent)
                    yield CANCEL, None
                    return
                if direct is None:
                    yield PENDING, match.dataset
                elif event.assoc.is_established:
                    direct.send(match.json)
                else:  # released or aborted while we answered: nothing more goes out
                    return
                sent += 1
    except errors.PergamonError as exc:
        log.warning("C-FIND from %s failed: %s", calling, exc)
        yield _failure(FIND_UNABLE_TO_PROCESS, str(exc)), None
        return
    except Exception as exc:
        log.exception("C-FIND from %s failed", calling)
        yield _failure(FIND_UNABLE_TO_PROCESS, f"internal error: {type(exc).__name__}"), None
        return
    if search.limit and sent >= search.limit:
        log.warning("C-FIND from %s stopped at query.max_results=%d responses", calling, search.limit)
    log.info("C-FIND %s level from %s: %d match(es)", search.level.value, calling, sent)
    archive.bus.emit(
        QueryPerformed(
            level=search.level.value,
            keys={c.keyword: str(identifier.get(c.keyword, "")) for c in search.constraints},
            matches=sent,
            origin=origin_of(event),
        )
    )
    yield SUCCESS, None
