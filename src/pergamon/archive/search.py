"""Searching the index at a Query/Retrieve level: the shared back end of C-FIND and QIDO-RS.

A door parses its request into a `Search` (constraints from `archive.query` plus return keys);
`run_search` turns it into one SQL query over the levels' tables and yields one `Match` per
matching entity, in a stable order (the primary key of the queried level).

Where each constraint is checked (`build_select`):

- a key with an index column (`INDEXED_KEYS`) is matched in SQL, so a study query by Patient ID,
  Study Date or Accession Number is served by the index and nothing is scanned in memory;
- a PN key matched case-sensitively (``query.pn_case_sensitive``) is matched in SQL against the
  case-folded column with a case-folded key, a superset, then re-checked in memory against the
  name as stored (`attrs`), so no second column is needed;
- any other key of a joined level (and Sequence Matching, PS3.4 C.2.2.2.6) is checked in memory
  against the level's DICOM JSON (`attrs`), as are the computed counts of PS3.4 C.3.4;
- a key of a level below the query level is ignored: it cannot be matched in a hierarchical query
  (PS3.4 C.4.1.3.1.1), and ignoring it is kinder to SCUs that send them than failing.

The response identifier of a match (PS3.4 C.4.1.1.3.2) holds every requested key (its stored
value, or zero length when the entity has none), the unique keys of the query level and the
levels above it in the information model (PS3.4 C.6.1.1 Patient Root, C.6.2.1 Study Root),
Query/Retrieve Level, Retrieve AE Title, the computed keys asked for (Number of ... Related ...,
Modalities in Study, SOP Classes in Study, Instance Availability), and Specific Character Set
``ISO_IR 192`` when any returned text is outside the default repertoire: the index holds decoded
text, so whatever character set an object arrived in, its names leave as UTF-8.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import Select, Table, and_, func, or_, select, union_all
from sqlalchemy.sql import ColumnElement, operators
from sqlalchemy.sql.elements import BooleanClauseList

from pergamon.archive import pix
from pergamon.archive.index.schema import INDEXED_KEYS, Level, instance, patient, series, study
from pergamon.archive.model import level_of
from pergamon.archive.query import Constraint, ConstraintKind, normalize

LEVEL_ORDER = [Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE]

UNIQUE_KEYS = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
"""Unique key of each level (PS3.4 C.6.1.1.1 and C.6.2.1.1); Study Root has no Patient level."""

COMPUTED_KEYS = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}
"""Attributes computed from the index rather than stored (PS3.4 C.3.4), with the level they describe.

They are returned (and matched) when their level is joined: at the query level or above it.
"""

INSTANCE_AVAILABILITY = "ONLINE"
"""Instance Availability (0008,0056) of everything in the index (PS3.4 C.4.1.1.3.2)."""

_TABLE = {Level.PATIENT: patient, Level.STUDY: study, Level.SERIES: series, Level.IMAGE: instance}
_TEXT_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})


def _sum_of_study(column: ColumnElement[int]) -> ColumnElement[int]:
    return select(func.coalesce(func.sum(column), 0)).where(study.c.patient_fk == patient.c.pk).scalar_subquery()


_COMPUTED_COLUMNS: dict[str, Callable[[], ColumnElement[Any]]] = {
    "NumberOfPatientRelatedStudies": lambda: patient.c.num_studies,
    "NumberOfPatientRelatedSeries": lambda: _sum_of_study(study.c.num_series),
    "NumberOfPatientRelatedInstances": lambda: _sum_of_study(study.c.num_instances),
    "NumberOfStudyRelatedSeries": lambda: study.c.num_series,
    "NumberOfStudyRelatedInstances": lambda: study.c.num_instances,
    "ModalitiesInStudy": lambda: study.c.modalities,
    "SOPClassesInStudy": lambda: study.c.sop_classes,
    "NumberOfSeriesRelatedInstances": lambda: series.c.num_instances,
}
_MULTI_VALUED_COMPUTED = frozenset({"ModalitiesInStudy", "SOPClassesInStudy"})


@dataclass(frozen=True)
class ItemKeys:
    """The single item of a sequence key (PS3.4 C.2.2.2.6): keys matched in items and returned.

    An entity matches when one of its items matches every constraint (none: every entity does);
    the response carries the matching items, each reduced to ``return_keys``.
    """

    constraints: tuple[Constraint, ...] = ()
    return_keys: tuple[str, ...] = ()


@dataclass
class Search:
    """A query at one level: who matches (constraints) and what to return (keywords).

    ``sequence_items`` gives, for a sequence key sent with an item, that item's keys; a sequence
    key without one is returned whole. ``patient_root`` selects the information model, which
    decides the unique keys returned (PS3.4 C.6.1 and C.6.2).
    """

    level: Level
    constraints: list[Constraint] = field(default_factory=list)
    return_keys: list[str] = field(default_factory=list)
    patient_root: bool = False
    limit: int = 0
    offset: int = 0
    sequence_items: dict[str, ItemKeys] = field(default_factory=dict)


@dataclass
class Match:
    """One matching entity: its response identifier and the primary keys of its rows.

    ``json`` is the identifier in the DICOM JSON Model, keys in tag order; a door that can encode
    it directly (the C-FIND responder) skips building the pydicom `dataset`, which is made on
    first use.
    """

    json: dict[str, Any]
    pks: dict[Level, int]

    @functools.cached_property
    def dataset(self) -> Dataset:
        """The identifier as a pydicom Dataset (from `json`)."""
        return Dataset.from_json(self.json) if self.json else Dataset()


@dataclass(frozen=True)
class Plan:
    """How a search runs: the SQL, the constraints left for memory and the computed keys selected."""

    query: Select[Any]
    in_memory: list[Constraint]
    item_filters: dict[str, ItemKeys]
    computed: list[str]


def levels_down_to(level: Level, *, patient_root: bool) -> list[Level]:
    """The levels joined to answer a query at `level`.

    Study Root still joins the patient: its Study level carries the patient's attributes
    (PS3.4 C.6.2.1.2).
    """
    return LEVEL_ORDER[: LEVEL_ORDER.index(level) + 1]


def unique_keys(level: Level, *, patient_root: bool) -> list[str]:
    """Unique keys of `level` and the levels above it in the information model (PS3.4 C.6.1.1, C.6.2.1)."""
    first = 0 if patient_root else 1
    return [UNIQUE_KEYS[lvl] for lvl in LEVEL_ORDER[first : LEVEL_ORDER.index(level) + 1]]


def sql_constraint(constraint: Constraint) -> tuple[Constraint, bool]:
    """The constraint to express in SQL on an index column, and whether to re-check it in memory.

    Index columns hold PN case-folded (`archive.query.normalize`). A case-sensitive PN key is
    therefore sent to SQL case-folded, with each ``?`` widened to ``*`` since folding can change a
    name's length (``ß`` -> ``SS``): a superset of the true matches, which the in-memory re-check
    against the stored name then narrows.
    """
    if constraint.vr != "PN" or not constraint.case_sensitive or not constraint.values:
        return constraint, False
    folded: list[str] = []
    for value in constraint.values:
        text = normalize("PN", value.replace("?", "*"))
        if text and text not in folded:
            folded.append(text)
    return dataclasses.replace(constraint, values=tuple(folded), case_sensitive=False), True


def computed_keys_for(search: Search) -> list[str]:
    """Computed keys (PS3.4 C.3.4) the search returns or matches whose level is joined."""
    levels = levels_down_to(search.level, patient_root=search.patient_root)
    asked = [*search.return_keys, *(c.keyword for c in search.constraints)]
    return [kw for kw in dict.fromkeys(asked) if kw in COMPUTED_KEYS and COMPUTED_KEYS[kw] in levels]


def build_select(search: Search) -> tuple[Select[Any], list[Constraint]]:
    """The SQL for a search, and the constraints left to check in memory."""
    plan = build_plan(search)
    return plan.query, plan.in_memory


def build_plan(search: Search, *, patient_ids: list[tuple[str, str]] | None = None) -> Plan:
    """Split a search into SQL (indexed keys) and in-memory checks (the rest); see the module docstring.

    `patient_ids`, when given, replaces the Patient ID and Issuer of Patient ID keys: any of these
    (ID, issuer) pairs matches (PIX cross-references, see `patient_equivalents`).
    """
    levels = levels_down_to(search.level, patient_root=search.patient_root)
    computed = computed_keys_for(search)
    columns: list[Any] = []
    for lvl in levels:
        table = _TABLE[lvl]
        columns += [table.c.pk.label(f"{lvl.value}_pk"), table.c.attrs.label(f"{lvl.value}_attrs")]
    columns += [_COMPUTED_COLUMNS[kw]().label(f"c_{kw}") for kw in computed]
    query: Select[Any] = select(*columns).select_from(patient)
    if Level.STUDY in levels:
        query = query.join(study, study.c.patient_fk == patient.c.pk)
    if Level.SERIES in levels:
        query = query.join(series, series.c.study_fk == study.c.pk)
    if Level.IMAGE in levels:
        query = query.join(instance, instance.c.series_fk == series.c.pk)

    in_memory: list[Constraint] = []
    item_filters: dict[str, ItemKeys] = {}
    if patient_ids:
        query = query.where(or_(*(and_(patient.c.patient_id == i, patient.c.issuer == s) for i, s in patient_ids)))
    for constraint in search.constraints:
        keyword = constraint.keyword
        if patient_ids and keyword in _PATIENT_ID_KEYS:
            continue
        owner = COMPUTED_KEYS.get(keyword) or level_of(keyword)
        if constraint.kind is ConstraintKind.SEQUENCE:
            items = search.sequence_items.get(keyword)
            if owner in levels and items is not None and _restricts(items):
                item_filters[keyword] = items
            continue
        if constraint.kind is ConstraintKind.UNIVERSAL:
            continue
        if keyword == "InstanceAvailability":
            in_memory.append(constraint)
            continue
        by_series = _modalities_by_series(constraint) if Level.STUDY in levels else None
        if by_series is not None:
            query = query.where(by_series)
            continue
        key = INDEXED_KEYS.get(keyword)
        if key is not None and key.level in levels:
            for_sql, recheck = sql_constraint(constraint)
            table = _TABLE[key.level]
            clause = for_sql.clause(table.c[key.column], multi_valued=key.multi_valued)
            if clause is not None:
                query = query.where(_rows_of_any_term(table, clause))
            if recheck:
                in_memory.append(constraint)
            continue
        if owner in levels:
            in_memory.append(constraint)
        # Else a key of a level below the query level: ignored (see the module docstring).
    query = query.order_by(_TABLE[search.level].c.pk)
    return Plan(query, in_memory, item_filters, computed)


def _rows_of_any_term(table: Table, clause: ColumnElement[bool]) -> ColumnElement[bool]:
    """An OR of terms on one column, as "the row is among those some term selects".

    A person name matches in any of its component groups, so ``PatientName=SMITH*`` becomes
    ``LIKE 'SMITH%' OR LIKE '%=SMITH%'``. No index serves the second term, and SQLite then scans
    the whole join in study order (50 ms at 100,000 studies). As a union of one select per term,
    the first uses the name index and the second scans only that index (7 ms). Other clauses are
    returned as they are.
    """
    if not (isinstance(clause, BooleanClauseList) and clause.operator is operators.or_):
        return clause
    return table.c.pk.in_(union_all(*(select(table.c.pk).where(term) for term in clause.clauses)))


_VALUE_KINDS = (ConstraintKind.SINGLE_VALUE, ConstraintKind.MULTIPLE_VALUES)


def _modalities_by_series(constraint: Constraint) -> ColumnElement[bool] | None:
    """Modalities in Study equal to one of some values, as "a series of the study has that modality".

    The same studies as matching the study's ``modalities`` column (the set of its series'
    modalities, `index.writer`), but served by the index on ``series.modality`` instead of a
    regular expression run over every study. None for other keys and for wild cards.
    """
    if constraint.keyword != "ModalitiesInStudy" or constraint.kind not in _VALUE_KINDS or constraint.fuzzy:
        return None
    if not constraint.values or any("*" in v or "?" in v for v in constraint.values):
        return None
    return study.c.pk.in_(select(series.c.study_fk).where(series.c.modality.in_(constraint.values)))


# PIX cross-references (ITI-9/ITI-10): a query by one identifier also finds the patient's other identifiers.
_PATIENT_ID_KEYS = ("PatientID", "IssuerOfPatientID")


def patient_equivalents(conn: Any, search: Search) -> list[tuple[str, str]] | None:
    """The cross-referenced (ID, issuer) pairs of a search by one Patient ID with one Issuer of Patient ID.

    None when the search has no such pair of single-value keys or the identifier has no
    cross-references, so the keys are matched as usual.
    """
    keys = {c.keyword: c for c in search.constraints if c.keyword in _PATIENT_ID_KEYS}
    if len(keys) != 2 or any(c.kind is not ConstraintKind.SINGLE_VALUE for c in keys.values()):
        return None
    pairs = pix.equivalent_ids(conn, keys["PatientID"].values[0], keys["IssuerOfPatientID"].values[0])
    return pairs if len(pairs) > 1 else None


def _restricts(items: ItemKeys) -> bool:
    return any(c.kind not in (ConstraintKind.UNIVERSAL, ConstraintKind.SEQUENCE) for c in items.constraints)


def run_search(conn: Any, search: Search, *, retrieve_ae: str = "") -> Iterator[Match]:
    """Yield the matching entities in a stable order, honouring `limit` and `offset`.

    `limit` and `offset` count matches, so with in-memory checks they are applied here rather
    than in SQL.
    """
    plan = build_plan(search, patient_ids=patient_equivalents(conn, search))
    query = plan.query
    filtered = bool(plan.in_memory or plan.item_filters)
    if not filtered:
        if search.limit:
            query = query.limit(search.limit)
        if search.offset:
            query = query.offset(search.offset)
    levels = levels_down_to(search.level, patient_root=search.patient_root)
    attrs_columns = [f"{lvl.value}_attrs" for lvl in levels]
    fields = answer_fields(search)
    skipped = 0
    produced = 0
    for row in conn.execute(query):
        attrs: dict[str, Any] = {}
        texts = [getattr(row, column) for column in attrs_columns]
        for text in texts:
            attrs.update(json.loads(text))
        computed = _computed_values(plan.computed, row)
        if filtered and not (
            _matches_in_memory(plan.in_memory, attrs, computed) and _matches_items(plan.item_filters, attrs)
        ):
            continue
        if filtered and skipped < search.offset:
            skipped += 1
            continue
        yield Match(
            json=response_json(search, attrs, computed, retrieve_ae, fields, attrs_ascii=all(map(_ascii_json, texts))),
            pks={lvl: getattr(row, f"{lvl.value}_pk") for lvl in levels},
        )
        produced += 1
        if filtered and search.limit and produced >= search.limit:
            return


def _ascii_json(text: str) -> bool:
    """Whether a stored JSON text certainly holds ASCII only: no other character and no \\u escape.

    The index writes its JSON with `json.dumps`' default escaping, so one C-speed scan per text
    spares `response_json` walking every answer value to decide on ISO_IR 192.
    """
    return text.isascii() and "\\u" not in text


def _computed_values(keywords: list[str], row: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"InstanceAvailability": INSTANCE_AVAILABILITY}
    for keyword in keywords:
        value = getattr(row, f"c_{keyword}")
        if keyword in _MULTI_VALUED_COMPUTED:
            values[keyword] = value.split("\\") if value else None
        else:
            values[keyword] = int(value) if value is not None else None
    return values


def _matches_in_memory(constraints: list[Constraint], attrs: dict[str, Any], computed: dict[str, Any]) -> bool:
    for constraint in constraints:
        values: list[str] | str | None
        if constraint.keyword in computed:
            value = computed[constraint.keyword]
            values = [str(v) for v in value] if isinstance(value, list) else (None if value is None else str(value))
        else:
            values = _json_values(attrs.get(json_key(constraint.keyword)))
        if not constraint.matches(values):
            return False
    return True


def _matches_items(filters: dict[str, ItemKeys], attrs: dict[str, Any]) -> bool:
    """Sequence Matching (PS3.4 C.2.2.2.6): some stored item matches all keys of the query item."""
    return all(_matching_items(attrs.get(json_key(keyword)), items) for keyword, items in filters.items())


def _matching_items(element: Mapping[str, Any] | None, items: ItemKeys) -> list[dict[str, Any]]:
    stored: list[dict[str, Any]] = list((element or {}).get("Value") or [])
    return [item for item in stored if _matches_in_memory(list(items.constraints), item, {})]


def json_key(keyword: str) -> str:
    """The DICOM JSON key (eight hex digits) of a keyword; an unknown keyword stays as it is."""
    tag = tag_for_keyword(keyword)
    return f"{tag:08X}" if tag is not None else keyword


def _json_values(element: Mapping[str, Any] | None) -> list[str] | str | None:
    """The string value(s) of a DICOM JSON element, as the matcher expects them."""
    if not element or "Value" not in element:
        return None
    values: list[str] = []
    for value in element["Value"]:
        if isinstance(value, dict):
            groups = [value.get(g, "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
            values.append("=".join(groups).rstrip("="))
        else:
            values.append(str(value))
    return values if len(values) != 1 else values[0]


def _empty_json(keyword: str) -> dict[str, Any]:
    """A zero-length element of a keyword's VR (the first of an ambiguous ``US or SS``)."""
    return {"vr": dictionary_VR(keyword).split(" or ")[0]}


def _item_json(item: Mapping[str, Any], return_keys: tuple[str, ...]) -> dict[str, Any]:
    """One returned item: the requested item keys, stored values or zero length."""
    reduced: dict[str, Any] = {}
    for keyword in return_keys:
        key = json_key(keyword)
        reduced[key] = item.get(key) or _empty_json(keyword)
    return reduced


@dataclass(frozen=True)
class AnswerField:
    """One key of a search's answers, resolved once per search rather than once per match."""

    keyword: str
    key: str  # the DICOM JSON key (eight hex digits)
    vr: str  # the dictionary VR (the first of an ambiguous one), for a zero-length element
    items: ItemKeys | None  # a sequence key sent with an item that names keys to return


def answer_fields(search: Search) -> list[AnswerField]:
    """The requested keys and the unique keys of the information model (PS3.4 C.4.1.1.3.2), known keywords only."""
    wanted = list(dict.fromkeys([*search.return_keys, *unique_keys(search.level, patient_root=search.patient_root)]))
    fields = []
    for keyword in wanted:
        if tag_for_keyword(keyword) is None:
            continue
        vr = _empty_json(keyword)["vr"]
        items = search.sequence_items.get(keyword)
        returned_items = items if items is not None and items.return_keys and vr == "SQ" else None
        fields.append(AnswerField(keyword, json_key(keyword), vr, returned_items))
    return fields


def response_json(
    search: Search,
    attrs: dict[str, Any],
    computed: dict[str, Any],
    retrieve_ae: str,
    fields: list[AnswerField] | None = None,
    *,
    attrs_ascii: bool = False,
) -> dict[str, Any]:
    """The response identifier of one match (PS3.4 C.4.1.1.3.2) in DICOM JSON; see the module docstring.

    A sequence key sent with an item returns the stored items matching it (all of them when the
    item restricts nothing), each reduced to the item's keys; sent without one, the whole stored
    sequence. Computed keys whose level is not joined are returned zero length. Keys are in tag
    order, as in an encoded data set. `fields` is `answer_fields(search)`, passed when answering
    many matches of one search. `attrs_ascii` says `attrs` holds ASCII text only, so only computed
    values can call for ISO_IR 192.
    """
    selected: dict[str, Any] = {}
    from_computed: dict[str, Any] = {}
    for answer in fields if fields is not None else answer_fields(search):
        if answer.keyword in computed:
            selected[answer.key] = from_computed[answer.key] = _computed_json(answer.vr, computed[answer.keyword])
        elif answer.items is not None:
            matching = _matching_items(attrs.get(answer.key), answer.items)
            selected[answer.key] = {
                "vr": "SQ",
                "Value": [_item_json(item, answer.items.return_keys) for item in matching],
            }
        else:
            selected[answer.key] = attrs.get(answer.key) or {"vr": answer.vr}
    selected[_QUERY_LEVEL_KEY] = {"vr": "CS", "Value": [search.level.value]}
    if retrieve_ae:
        selected[_RETRIEVE_AE_KEY] = {"vr": "AE", "Value": [retrieve_ae]}
    if _json_needs_utf8(from_computed if attrs_ascii else selected):  # level and AE title are ASCII
        selected[_CHARSET_KEY] = {"vr": "CS", "Value": ["ISO_IR 192"]}
    return dict(sorted(selected.items()))


_QUERY_LEVEL_KEY = "00080052"
_RETRIEVE_AE_KEY = "00080054"
_CHARSET_KEY = "00080005"


def _computed_json(vr: str, value: Any) -> dict[str, Any]:
    """A computed key (PS3.4 C.3.4) as a DICOM JSON element; None gives a zero-length one."""
    element: dict[str, Any] = {"vr": vr}
    if value is not None and value != []:
        element["Value"] = list(value) if isinstance(value, list) else [value]
    return element


def _json_needs_utf8(elements: Mapping[str, Any]) -> bool:
    """Whether any text in DICOM JSON elements (items included) is outside ASCII, the default repertoire."""
    for element in elements.values():
        vr = element.get("vr")
        if vr == "SQ":
            if any(_json_needs_utf8(item) for item in element.get("Value") or ()):
                return True
        elif vr in _TEXT_VRS:
            for value in element.get("Value") or ():
                texts = value.values() if isinstance(value, dict) else (value,)
                if not all(text is None or str(text).isascii() for text in texts):
                    return True
    return False
