"""QIDO-RS, the DICOMweb Search transaction (PS3.18 10.6, query parameters 8.3.4); IHE RAD-129.

Resources (PS3.18 Table 10.6.1-2): ``/studies``, ``/series``, ``/instances``,
``/studies/{study}/series``, ``/studies/{study}/instances`` and
``/studies/{study}/series/{series}/instances``. The query string is parsed into an
`archive.search.Search`, as `dimse/find.py` parses a C-FIND identifier: every key becomes an
`archive.query.Constraint` (the one matching module) and `archive.search.run_search` runs it in
the thread pool (the core is synchronous).

Query parameters (PS3.18 8.3.4):

- ``{attributeID}={value}``: a keyword or eight hex digits, or ``Sequence.Attribute`` for one
  level of Sequence Matching (``00400275.00401001=RP1``). Matching per PS3.4 C.2.2.2 (wild cards,
  ranges ``A-B``, Empty Value Matching with ``""``...). UI and CS values may list values separated
  by commas or backslashes (UID List Matching, PS3.18 8.3.4.1); a repeated key also lists values.
  A key of a level below the resource's (``/studies?Modality=CT``) cannot be matched in a
  hierarchical query; it is ignored and named in a ``Warning`` header field.
- ``includefield``: keywords, tags or ``all`` (comma-separated and/or repeated); attributes of a
  level below the resource's are not returned (PS3.18 10.6.3.3).
- ``fuzzymatching=true``: fuzzy semantic matching of person names (see `archive.query`).
- ``limit`` and ``offset``: paging in a stable order (the index's insertion order of the level).
  When results are left out (``limit``, or the server maximum ``query.max_results``), the response
  carries ``Warning: 299 {host}: "The number of results exceeded the maximum supported by the
  server. Additional results can be requested."`` (PS3.18 8.3.4.4).

Responses (PS3.18 10.6.3, 8.7.3): ``application/dicom+json`` by default (an array of F.2
objects, always UTF-8), or ``multipart/related; type="application/dicom+xml"`` with one PS3.19
Native DICOM Model document per result. Each result holds the default attributes of PS3.18 Tables
10.6.3-3 (study), 10.6.3-4 (series) and 10.6.3-5 (instance) -- the relational resources (all
series, all instances, a study's instances) also the levels above (10.6.3.3.2, 10.6.3.3.3) --
with Retrieve URL (0008,1190) pointing at this server's WADO-RS resource, plus the matching and
included keys. No match is ``200`` with an empty array (an empty XML body): the current text of
PS3.18 for search transactions dropped ``204`` for zero results. An unknown Study or Series
Instance UID in the path is a search that matches nothing, not a 404. A request that cannot be
understood is ``400`` with a message naming the parameter; an unservable ``Accept`` is ``406``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from pergamon.archive.errors import InvalidQuery
from pergamon.archive.events import QueryPerformed
from pergamon.archive.index.schema import Level
from pergamon.archive.model import PATIENT_KEYWORDS, SERIES_KEYWORDS, STUDY_KEYWORDS, level_of
from pergamon.archive.origin import Origin
from pergamon.archive.query import Constraint
from pergamon.archive.search import COMPUTED_KEYS, ItemKeys, Match, Search, json_key, levels_down_to, run_search
from pergamon.archive.service import Archive
from pergamon.web.dicomweb import media

log = logging.getLogger(__name__)

STUDY_DEFAULTS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
"""PS3.18 Table 10.6.3-3 (Retrieve URL is added to every result; Timezone Offset From UTC is not kept)."""

SERIES_DEFAULTS = (
    "SpecificCharacterSet",
    "Modality",
    "SeriesDescription",
    "SeriesInstanceUID",
    "SeriesNumber",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "RequestAttributesSequence",
)
"""PS3.18 Table 10.6.3-4; Request Attributes Sequence with `SERIES_REQUEST_ITEM_KEYS` in its items."""

SERIES_REQUEST_ITEM_KEYS = ("ScheduledProcedureStepID", "RequestedProcedureID")

INSTANCE_DEFAULTS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceAvailability",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
"""PS3.18 Table 10.6.3-5."""

INSTANCE_ALL = (
    *INSTANCE_DEFAULTS,
    "ImageType",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "ContentDate",
    "ContentTime",
    "AcquisitionNumber",
    "AcquisitionDate",
    "AcquisitionTime",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "ImageComments",
    "ContentLabel",
    "ContentDescription",
    "ConceptNameCodeSequence",
    "CompletionFlag",
    "VerificationFlag",
    "PresentationCreationDate",
    "PresentationCreationTime",
)
"""``includefield=all`` at instance level: the PS3.4 C.6.1.1.5 keys and the common image, SR and
presentation-state attributes (instance attributes are not enumerated by the information model)."""

ALL_KEYS: dict[Level, tuple[str, ...]] = {
    Level.STUDY: (
        *STUDY_DEFAULTS,
        *sorted(PATIENT_KEYWORDS | STUDY_KEYWORDS),
        "SOPClassesInStudy",
    ),
    Level.SERIES: (*SERIES_DEFAULTS, *sorted(SERIES_KEYWORDS)),
    Level.IMAGE: INSTANCE_ALL,
}
"""What ``includefield=all`` adds for each level a resource returns (PS3.18 10.6.3.3)."""

DEFAULTS = {Level.STUDY: STUDY_DEFAULTS, Level.SERIES: SERIES_DEFAULTS, Level.IMAGE: INSTANCE_DEFAULTS}

NOT_MATCHABLE = frozenset(
    {"SpecificCharacterSet", "QueryRetrieveLevel", "RetrieveAETitle", "RetrieveURL", "TimezoneOffsetFromUTC"}
)
"""Keys that are returned but never matched (PS3.4 C.4.1.1.3.1; the time zone is not adjusted)."""

CONTROL_PARAMETERS = frozenset({"includefield", "fuzzymatching", "limit", "offset", "accept"})
LIST_VRS = frozenset({"UI", "CS"})
"""VRs whose query values may be a comma-separated list (PS3.18 8.3.4.1); no valid value holds a comma."""

OFFERED = [media.JSON, "application/json", media.MULTIPART_XML]

MORE_RESULTS = (
    "The number of results exceeded the maximum supported by the server. Additional results can be requested."
)
"""Warning text of PS3.18 8.3.4.4 when a result is cut."""

_TAG = re.compile(r"[0-9A-Fa-f]{8}")


@dataclass(frozen=True)
class Resource:
    """One Search resource: its level and the levels whose default attributes it returns."""

    level: Level
    returns: tuple[Level, ...]


STUDIES = Resource(Level.STUDY, (Level.STUDY,))
STUDY_SERIES = Resource(Level.SERIES, (Level.SERIES,))
ALL_SERIES = Resource(Level.SERIES, (Level.STUDY, Level.SERIES))
SERIES_INSTANCES = Resource(Level.IMAGE, (Level.IMAGE,))
STUDY_INSTANCES = Resource(Level.IMAGE, (Level.SERIES, Level.IMAGE))
ALL_INSTANCES = Resource(Level.IMAGE, (Level.STUDY, Level.SERIES, Level.IMAGE))


@dataclass
class QidoQuery:
    """A parsed request: the search, the client's paging and what to warn about."""

    search: Search
    limit: int = 0
    offset: int = 0
    ignored: list[str] = field(default_factory=list)
    sparse: frozenset[str] = frozenset()
    """Keywords added by ``includefield=all`` alone: left out of a result when it has no value."""


def attribute_keyword(attribute_id: str, parameter: str) -> str:
    """The keyword of an attributeID (keyword or tag, PS3.18 8.3.4.1), or InvalidQuery."""
    if _TAG.fullmatch(attribute_id):
        tag = int(attribute_id, 16)
        if (tag >> 16) % 2:
            raise InvalidQuery(f"{parameter}: private attribute {attribute_id} is not supported for query")
        keyword = keyword_for_tag(tag)
        if not keyword:
            raise InvalidQuery(f"{parameter}: {attribute_id} is not a known DICOM attribute tag")
        return keyword
    if tag_for_keyword(attribute_id) is None:
        raise InvalidQuery(
            f"{parameter}: '{attribute_id}' is not a DICOM attribute keyword nor a tag (ggggeeee), PS3.18 8.3.4.1"
        )
    return attribute_id


def _vr(keyword: str) -> str:
    return dictionary_VR(keyword).split(" or ")[0]


def _attribute_path(attribute_id: str, parameter: str) -> tuple[str, str | None]:
    """``(keyword, None)`` or ``(sequence keyword, item keyword)`` for ``Sequence.Attribute``."""
    parts = attribute_id.split(".")
    if len(parts) > 2:
        raise InvalidQuery(f"{parameter}: only one level of sequence nesting is supported ('{attribute_id}')")
    keyword = attribute_keyword(parts[0], parameter)
    if len(parts) == 1:
        return keyword, None
    if _vr(keyword) != "SQ":
        raise InvalidQuery(f"{parameter}: {keyword} is not a sequence, so '{attribute_id}' names nothing")
    return keyword, attribute_keyword(parts[1], parameter)


def _key_value(vr: str, values: list[str]) -> str:
    parts: list[str] = []
    for value in values:
        parts.extend(value.split(",") if vr in LIST_VRS else [value])
    return "\\".join(parts)


def _non_negative(name: str, values: list[str]) -> int:
    text = values[-1].strip()
    if not (text.isascii() and text.isdigit()):  # str.isdigit() alone accepts '²', which int() refuses
        raise InvalidQuery(f"{name}: '{values[-1]}' is not a non-negative integer (PS3.18 8.3.4.4)")
    return int(text)


def parse_query(
    params: list[tuple[str, str]],
    resource: Resource,
    path_uids: dict[str, str],
    *,
    case_sensitive_pn: bool = False,
) -> QidoQuery:
    """Turn QIDO-RS query parameters (PS3.18 8.3.4) into a `QidoQuery`; see the module docstring.

    ``path_uids`` maps StudyInstanceUID / SeriesInstanceUID to the UIDs of the resource path.
    Raises `InvalidQuery` for an unknown parameter or attribute, a bad value of ``limit``,
    ``offset``, ``fuzzymatching`` or ``includefield``, and any key `Constraint.parse` refuses.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        grouped.setdefault(name, []).append(value)
    fuzzy_values = [v.strip().lower() for v in grouped.pop("fuzzymatching", [])]
    if any(v not in ("true", "false") for v in fuzzy_values):
        raise InvalidQuery(f"fuzzymatching: '{fuzzy_values[-1]}' is neither true nor false (PS3.18 8.3.4.3)")
    fuzzy = bool(fuzzy_values) and fuzzy_values[-1] == "true"
    query = QidoQuery(search=Search(level=resource.level))
    if "limit" in grouped:
        query.limit = _non_negative("limit", grouped.pop("limit"))
    if "offset" in grouped:
        query.offset = _non_negative("offset", grouped.pop("offset"))
    grouped.pop("accept", None)
    include = grouped.pop("includefield", [])

    joined = levels_down_to(resource.level, patient_root=False)
    return_keys: list[str] = [kw for lvl in resource.returns for kw in DEFAULTS[lvl]]
    items: dict[str, tuple[list[Constraint], list[str]]] = {
        "RequestAttributesSequence": ([], list(SERIES_REQUEST_ITEM_KEYS))
    }
    whole_sequences: set[str] = set()

    def level_ok(keyword: str) -> bool:
        return (COMPUTED_KEYS.get(keyword) or level_of(keyword)) in joined

    everything: list[str] = []
    for item in (part.strip() for value in include for part in value.split(",")):
        if not item:
            raise InvalidQuery("includefield: empty value; give keywords, tags (ggggeeee) or 'all' (PS3.18 8.3.4.2)")
        if item == "all":
            everything = [kw for lvl in resource.returns for kw in ALL_KEYS[lvl]]
            continue
        keyword, sub = _attribute_path(item, "includefield")
        if not level_ok(keyword):
            continue  # PS3.18 10.6.3.3: attributes of lower levels are not returned
        return_keys.append(keyword)
        if sub is None:
            whole_sequences.add(keyword)
        else:
            items.setdefault(keyword, ([], []))[1].append(sub)

    for name, values in grouped.items():
        keyword, sub = _attribute_path(name, name)
        if keyword in NOT_MATCHABLE or not level_ok(keyword):
            query.ignored.append(name)
            continue
        return_keys.append(keyword)
        if sub is None:
            query.search.constraints.append(_constraint(keyword, values, case_sensitive_pn, fuzzy, name))
            continue
        constraints, keys = items.setdefault(keyword, ([], []))
        constraints.append(_constraint(sub, values, case_sensitive_pn, fuzzy, name))
        keys.append(sub)
        query.search.constraints.append(Constraint.parse(keyword, "SQ", None))

    for keyword, uid in path_uids.items():
        query.search.constraints.append(_constraint(keyword, [uid], case_sensitive_pn, False, "path"))
    query.sparse = frozenset(everything) - set(return_keys)
    query.search.return_keys = list(dict.fromkeys([*return_keys, *everything]))
    for keyword, (constraints, keys) in items.items():
        if keyword in query.search.return_keys and (keyword not in whole_sequences or constraints):
            query.search.sequence_items[keyword] = ItemKeys(tuple(constraints), tuple(dict.fromkeys(keys)))
    return query


def _constraint(keyword: str, values: list[str], case_sensitive_pn: bool, fuzzy: bool, name: str) -> Constraint:
    vr = _vr(keyword)
    if vr == "SQ":
        raise InvalidQuery(f"{name}: {keyword} is a sequence; match one of its attributes ({keyword}.Attribute)")
    try:
        return Constraint.parse(keyword, vr, _key_value(vr, values), case_sensitive_pn=case_sensitive_pn, fuzzy=fuzzy)
    except InvalidQuery as exc:
        prefix = "" if name in (keyword, "path") else f"{name}: "
        raise InvalidQuery(f"{prefix}{exc}") from exc


def retrieve_url(base: str, ds: Dataset | Mapping[str, str], level: Level) -> str:
    """The WADO-RS resource of a result (PS3.18 10.4.1), for Retrieve URL (0008,1190)."""
    url = f"{base}/studies/{ds.get('StudyInstanceUID', '')}"
    if level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{ds.get('SeriesInstanceUID', '')}"
    if level is Level.IMAGE:
        url += f"/instances/{ds.get('SOPInstanceUID', '')}"
    return url


def _search(archive: Archive, query: QidoQuery) -> tuple[list[Match], bool]:
    """Run the search (in a worker thread); the matches and whether results were left out."""
    server_max = archive.settings.query.max_results
    cap = query.limit
    if server_max and (not cap or cap > server_max):
        cap = server_max
    search = query.search
    search.offset = query.offset
    search.limit = cap + 1 if cap else 0
    with archive.db.read() as conn:
        matches = list(run_search(conn, search))
    cut = bool(cap) and len(matches) > cap
    return (matches[:cap] if cut else matches), cut


def _render(
    matches: list[Match], media_type: str, base: str, level: Level, sparse: frozenset[str]
) -> tuple[bytes, str]:
    if media_type == media.MULTIPART_XML:
        if not matches:  # no body parts: an empty body (a multipart body needs at least one part)
            return b"", media.multipart_related([], media.XML)[1]
        return media.multipart_related(
            (media.to_xml(_result_dataset(m, base, level, sparse)) for m in matches), media.XML
        )
    sparse_keys = frozenset(json_key(keyword) for keyword in sparse)  # once per request, not per result
    results = [_result_json(m, base, level, sparse_keys) for m in matches]
    body = json.dumps(results, ensure_ascii=False, separators=(",", ":"))
    return body.encode("utf-8"), media_type


def _result_dataset(match: Match, base: str, level: Level, sparse: frozenset[str]) -> Dataset:
    """One result for the XML form: without Query/Retrieve Level or empty sparse keys, with Retrieve URL."""
    ds = match.dataset
    for keyword in ("QueryRetrieveLevel", *sparse):
        if keyword in ds and (keyword == "QueryRetrieveLevel" or ds[keyword].is_empty):
            del ds[keyword]
    ds.RetrieveURL = retrieve_url(base, ds, level)
    return ds


def _result_json(match: Match, base: str, level: Level, sparse_keys: frozenset[str]) -> dict[str, Any]:
    """`_result_dataset` in DICOM JSON, written from the index's JSON without a pydicom Dataset.

    `sparse_keys` are the JSON keys (eight hex digits) of the sparse keywords.
    """
    result = media.from_index_json(match.json)
    result.pop(_QUERY_LEVEL_KEY, None)
    for key in sparse_keys:
        if key in result and "Value" not in result[key]:
            del result[key]
    uids = {keyword: _first_value(result.get(key)) for keyword, key in _URL_UID_KEYS.items()}
    result[_RETRIEVE_URL_KEY] = {"vr": "UR", "Value": [retrieve_url(base, uids, level)]}
    return dict(sorted(result.items()))


_QUERY_LEVEL_KEY = "00080052"
_RETRIEVE_URL_KEY = "00081190"
_URL_UID_KEYS = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018"}


def _first_value(element: dict[str, Any] | None) -> str:
    values = (element or {}).get("Value") or [""]
    return str(values[0] or "")


def _endpoint(archive: Archive, resource: Resource) -> Callable[[Request], Awaitable[Response]]:
    settings = archive.settings

    async def search(request: Request) -> Response:
        """PS3.18 10.6: parse, negotiate, search in the thread pool, render."""
        media_type = media.negotiate(request, OFFERED)
        path_uids = {}
        if "study" in request.path_params:
            path_uids["StudyInstanceUID"] = request.path_params["study"]
        if "series" in request.path_params:
            path_uids["SeriesInstanceUID"] = request.path_params["series"]
        params = request.query_params.multi_items()
        query = parse_query(params, resource, path_uids, case_sensitive_pn=settings.query.pn_case_sensitive)
        matches, cut = await run_in_threadpool(_search, archive, query)
        base = media.service_url(request, settings.http.base_path)
        body, content_type = await run_in_threadpool(_render, matches, media_type, base, resource.level, query.sparse)
        host = request.url.netloc or "pergamon"
        warnings = []
        if cut:
            warnings.append(f'299 {host}: "{MORE_RESULTS}"')
        if query.ignored:
            names = ", ".join(query.ignored)
            warnings.append(f'299 {host}: "The following attributes are not supported for query here: {names}"')
        headers = {"Warning": ", ".join(warnings)} if warnings else {}
        log.info(
            "QIDO-RS %s: %d parameter(s), %d match(es)%s",
            request.url.path,
            len(params),
            len(matches),
            " (more available)" if cut else "",
        )
        client = request.client
        peer = f"{client.host}:{client.port}" if client else ""
        archive.bus.emit(
            QueryPerformed(
                level=resource.level.value,
                keys={c.keyword: ",".join(c.values) for c in query.search.constraints},
                matches=len(matches),
                origin=Origin.from_http("", peer),
            )
        )
        return Response(body, status_code=200, media_type=content_type, headers=headers)

    return search


def routes(archive: Archive) -> list[BaseRoute]:
    """The Search resources of PS3.18 Table 10.6.1-2, relative to the DICOMweb base path."""
    table = [
        ("/studies", STUDIES),
        ("/series", ALL_SERIES),
        ("/instances", ALL_INSTANCES),
        ("/studies/{study}/series", STUDY_SERIES),
        ("/studies/{study}/instances", STUDY_INSTANCES),
        ("/studies/{study}/series/{series}/instances", SERIES_INSTANCES),
    ]
    return [Route(path, _endpoint(archive, resource), methods=["GET"], name=f"qido:{path}") for path, resource in table]
