"""Attribute matching of PS3.4 C.2.2.2: one `Constraint` per query key, in memory or in SQL.

C-FIND (`dimse/find.py`) and QIDO-RS (`web/dicomweb/qido.py`) parse their requests differently,
then both turn every key into a `Constraint` with `Constraint.parse`. A constraint answers one
question two ways, and the tests hold both to the same answers on SQLite and PostgreSQL:

- `Constraint.matches(value)` for attributes kept as DICOM JSON, worklist items and re-checks;
- `Constraint.clause(column)` for attributes with an index column, which holds `normalize(vr, value)`
  (a multi-valued attribute: the normalised values joined with a backslash).

`ConstraintKind` names the matching types of PS3.4 C.2.2.2.1 to C.2.2.2.8. Where the standard
leaves the choice to the SCP (for the Conformance Statement), Pergamon does this:

- PN (C.2.2.2.1, C.2.2.2.4): insensitive to case (NFC, case-folded, then upper-cased, so Greek
  final sigma and German sharp s compare as expected) but not to accents, unless the key is parsed
  with ``case_sensitive_pn``; the index column must then be filled with the same setting. A value
  matches the whole stored name or any run of adjacent component groups, so ``YAMADA^TAROU``,
  ``山田^太郎`` and ``yamada*`` all match ``Yamada^Tarou=山田^太郎=やまだ^たろう``. Leading ``=``
  in a key are dropped (``=山田^太郎`` asks for that group). Trailing empty components and groups,
  and spaces around components, are not significant.
- Wild cards (C.2.2.2.4) only for AE, CS, LO, LT, PN, SH, ST, UC, UR and UT. A value made only of
  ``*`` is Universal Matching whatever the VR; any other ``*`` or ``?`` in a key of another VR
  raises `InvalidQuery`, since no valid value could match it.
- DA, TM, DT (C.2.2.2.1 b, C.2.2.2.5): a value of reduced precision stands for the interval it
  covers: TM ``1230`` matches 12:30:00 to 12:30:59.999999, which in the fixed-width normalised form
  is every value it prefixes, and the upper bound of a range is likewise its last instant
  (``-1230`` includes 12:30:59). A reversed range is rejected. DT offsets from UTC are dropped on
  both sides: local wall-clock times are compared. Combined date-time matching (Extended
  Negotiation) is not done here. Old ``YYYY.MM.DD`` and ``HH:MM:SS`` forms are read.
- Multiple values (C.2.2.2.8): defined by the standard as "all of" under Extended Negotiation and
  undefined otherwise; Pergamon matches if any value matches any key value (the common reading of
  ``ModalitiesInStudy=CT\\MR``). UI lists are List of UID Matching (C.2.2.2.2). DA, TM and DT take
  one value. LT, ST, UT and UR are single-valued, so a backslash in them is text.
- Empty Value Matching (C.2.2.2.7): ``""`` matches entities whose attribute is absent or empty.
- Fuzzy (QIDO-RS ``fuzzymatching``, PS3.18 8.3.4; C-FIND fuzzy semantic matching of PN): each
  word of a PN key without wild cards must begin a word of the name (words split at ``^ = `` and
  space, across all values), so ``joh`` matches ``Smith^John``.
- Other VRs are compared as strings after trimming padding; IS is compared as an integer.
"""

from __future__ import annotations

import datetime
import enum
import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import Dataset
from sqlalchemy import ColumnElement, and_, or_

from pergamon.archive.errors import InvalidQuery

WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
"""VRs where "*" and "?" are wild cards (PS3.4 C.2.2.2.4)."""

RANGE_VRS = frozenset({"DA", "DT", "TM"})
"""VRs with Range Matching (PS3.4 C.2.2.2.5)."""

TEXT_VRS = frozenset({"LT", "ST", "UR", "UT"})
"""Always single-valued: a backslash is part of the text (PS3.5 6.2)."""

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

_SIGNED = re.compile(r"[+-]?\d+")
_UNSIGNED = re.compile(r"\d+")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
NUMBER_FORMATS: dict[str, re.Pattern[str]] = {
    "AS": re.compile(r"\d{3}[DWMY]"),
    "DS": _DECIMAL,
    "FD": _DECIMAL,
    "FL": _DECIMAL,
    "IS": _SIGNED,
    "SL": _SIGNED,
    "SS": _SIGNED,
    "SV": _SIGNED,
    "UL": _UNSIGNED,
    "US": _UNSIGNED,
    "UV": _UNSIGNED,
}
"""Keys of these VRs are checked against their PS3.5 6.2 form before matching."""

EMPTY_VALUE_KEY = '""'
"""The key value that asks for Empty Value Matching (PS3.4 C.2.2.2.7)."""

LIKE_ESCAPE = "!"

_FLOOR = {"TM": "000000.000000", "DT": "00000101000000.000000"}
_CEIL = {"TM": "235960.999999", "DT": "99991231235960.999999"}
_DA = re.compile(r"(\d{4})(\d{2})(\d{2})|(\d{4})\.(\d{2})\.(\d{2})")
_TM = re.compile(r"(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?")
_TM_OLD = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?")
_DT = re.compile(r"(\d{4})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:(\d{2})(?:\.(\d{1,6}))?)?)?)?)?)?([+-]\d{4})?")
_WORD_SEPARATORS = re.compile(r"[\^= \\]")


class ConstraintKind(enum.Enum):
    """The matching types of PS3.4 C.2.2.2."""

    SINGLE_VALUE = "single-value"  # C.2.2.2.1
    UID_LIST = "uid-list"  # C.2.2.2.2
    UNIVERSAL = "universal"  # C.2.2.2.3
    WILDCARD = "wildcard"  # C.2.2.2.4
    RANGE = "range"  # C.2.2.2.5
    SEQUENCE = "sequence"  # C.2.2.2.6
    EMPTY_VALUE = "empty-value"  # C.2.2.2.7
    MULTIPLE_VALUES = "multiple-values"  # C.2.2.2.8, any-of (see the module docstring)


def normalize(vr: str, value: str | None, *, case_sensitive_pn: bool = False) -> str | None:
    """The form a value is stored in an index column and compared in.

    Each backslash-separated value is normalised on its own (except for LT, ST, UT and UR) and
    empty ones are dropped; None if nothing is left. Per value: trailing spaces and NULs are
    removed, leading spaces too except for LT, ST and UT (PS3.5 6.2); then
    DA -> ``YYYYMMDD`` (``YYYY.MM.DD`` read too); TM -> ``HHMMSS.FFFFFF`` (``HH:MM:SS`` read too,
    missing parts filled with zeros: ``12`` -> ``120000.000000``); DT -> ``YYYYMMDDHHMMSS.FFFFFF``
    (month and day filled with 01, the offset from UTC dropped); fixed widths make string order
    time order. PN -> components trimmed, trailing empty components and groups dropped, NFC,
    and unless ``case_sensitive_pn`` case-folded and upper-cased. IS -> canonical integer.
    A DA, TM or DT value that cannot be read is kept as it is (it then only matches itself).
    Idempotent: a normalised value normalises to itself.
    """
    if value is None:
        return None
    text = str(value)
    parts = [text] if vr in TEXT_VRS else text.split("\\")
    values = [v for v in (_normalize_one(vr, p, case_sensitive_pn) for p in parts) if v]
    return "\\".join(values) or None


def _normalize_one(vr: str, value: str, case_sensitive_pn: bool) -> str | None:
    value = _trim(vr, value)
    if not value:
        return None
    if vr == "PN":
        return _normalize_pn(value, case_sensitive_pn) or None
    if vr == "DA":
        return _read_da(value) or value
    if vr in _FLOOR:
        point = _read_tm(value) if vr == "TM" else _read_dt(value)
        return point + _FLOOR[vr][len(point) :] if point else value
    if vr == "IS" and _SIGNED.fullmatch(value):
        return str(int(value))
    return value


def _trim(vr: str, value: str) -> str:
    value = value.rstrip(" \x00")
    return value if vr in ("LT", "ST", "UT") else value.lstrip(" ")


def _normalize_pn(value: str, case_sensitive: bool) -> str:
    groups = []
    for group in value.split("="):
        components = [c.strip() for c in group.split("^")]
        while components and not components[-1]:
            components.pop()
        groups.append("^".join(components))
    while groups and not groups[-1]:
        groups.pop()
    name = unicodedata.normalize("NFC", "=".join(groups))
    return name if case_sensitive else unicodedata.normalize("NFC", name.casefold().upper())


def _read_da(value: str) -> str | None:
    """``YYYYMMDD`` of a DA value (PS3.5 6.2, also the pre-3.0 ``YYYY.MM.DD``), None if malformed."""
    m = _DA.fullmatch(value)
    return "".join(g for g in m.groups() if g) if m else None


def _read_tm(value: str) -> str | None:
    """The digits a TM value gives (``1230``, ``123045.5``), None if malformed or out of range."""
    m = _TM.fullmatch(value) or _TM_OLD.fullmatch(value)
    if not m:
        return None
    hh, mm, ss, frac = m.groups()
    if int(hh) > 23 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        return None
    return hh + (mm or "") + (ss or "") + (f".{frac}" if frac else "")


def _read_dt(value: str) -> str | None:
    """The digits a DT value gives, offset dropped (``20200101120000.5``), None if malformed."""
    m = _DT.fullmatch(value)
    if not m:
        return None
    year, month, day, hh, mm, ss, frac, offset = m.groups()
    if (
        (month and not 1 <= int(month) <= 12)
        or (day and not 1 <= int(day) <= 31)
        or (hh and int(hh) > 23)
        or (mm and int(mm) > 59)
        or (ss and int(ss) > 60)
        or (offset and (int(offset[1:3]) > 14 or int(offset[3:]) > 59))
    ):
        return None
    return "".join(p for p in (year, month, day, hh, mm, ss) if p) + (f".{frac}" if frac else "")


def _valid_calendar_date(digits: str) -> bool:
    try:
        datetime.date(int(digits[:4]), int(digits[4:6] or 1), int(digits[6:8] or 1))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Constraint:
    """One query key as a PS3.4 C.2.2.2 matching rule.

    ``values`` are the normalised key values: one for SINGLE_VALUE and WILDCARD, several for
    UID_LIST and MULTIPLE_VALUES (each may hold wild cards). For TM and DT they are the digits the
    key gives (``1230``): a prefix of the normalised values they match. ``lower`` and ``upper`` are
    the normalised inclusive bounds of a RANGE (None when open). ``case_sensitive`` is False only
    for PN keys matched case-insensitively; ``fuzzy`` only for PN keys (see the module docstring).
    """

    keyword: str
    vr: str
    kind: ConstraintKind
    values: tuple[str, ...] = ()
    lower: str | None = None
    upper: str | None = None
    case_sensitive: bool = True
    fuzzy: bool = False

    @classmethod
    def parse(
        cls, keyword: str, vr: str, value: object, *, case_sensitive_pn: bool = False, fuzzy: bool = False
    ) -> Constraint:
        """Turn a query key's value into a constraint (PS3.4 C.2.2.2).

        ``value`` is what pydicom gives: str, PersonName, MultiValue, a list, a number, Sequence,
        None or ''. Raises InvalidQuery, naming the key and saying what is wrong, for a malformed
        date, time or range, a range or wild card on a VR that has none, several values for DA, TM
        or DT, a malformed number, or a non-empty key of a binary VR.
        """
        make = functools.partial(
            cls, keyword, vr, case_sensitive=vr != "PN" or case_sensitive_pn, fuzzy=fuzzy and vr == "PN"
        )
        if vr == "SQ":
            return make(ConstraintKind.SEQUENCE)
        parts = _key_parts(keyword, vr, value)
        if parts == [EMPTY_VALUE_KEY]:
            return make(ConstraintKind.EMPTY_VALUE)
        parts = [p for p in parts if p]
        if not parts or any(not p.strip("*") for p in parts):
            return make(ConstraintKind.UNIVERSAL)
        if vr in BINARY_VRS:
            raise InvalidQuery(f"{keyword}: matching on a value of VR {vr} is not supported, only Universal Matching")
        for part in parts:
            _check_part(keyword, vr, part)
        if vr in RANGE_VRS:
            if len(parts) > 1:
                joined = "\\".join(parts)
                raise InvalidQuery(f"{keyword}: '{joined}' has several values, {vr} keys take one")
            return _parse_temporal(make, keyword, vr, parts[0])
        values: list[str] = []
        for part in parts:
            norm = _normalize_one(vr, part, case_sensitive_pn) or ""
            norm = norm.lstrip("=") if vr == "PN" else norm
            if norm and norm not in values:
                values.append(norm)
        if not values:
            return make(ConstraintKind.UNIVERSAL)
        if vr == "UI":
            kind = ConstraintKind.UID_LIST if len(values) > 1 else ConstraintKind.SINGLE_VALUE
        elif len(values) > 1:
            kind = ConstraintKind.MULTIPLE_VALUES
        elif _has_wildcard(vr, values[0]):
            kind = ConstraintKind.WILDCARD
        else:
            kind = ConstraintKind.SINGLE_VALUE
        return make(kind, tuple(values))

    def matches(self, value: str | Sequence[str] | None) -> bool:
        """Whether an entity's attribute value matches, in memory.

        ``value`` is raw or normalised (it is normalised here): a str (split at backslashes unless
        the VR is LT, ST, UT or UR), a sequence of values (pydicom's MultiValue), or None. A
        multi-valued attribute matches if any of its values does.
        """
        if self.kind in (ConstraintKind.UNIVERSAL, ConstraintKind.SEQUENCE):
            return True
        stored = self._stored_values(value)
        if self.kind is ConstraintKind.EMPTY_VALUE:
            return not stored
        if not stored:
            return False
        if self.kind is ConstraintKind.RANGE:
            return any(
                (self.lower is None or self.lower <= v) and (self.upper is None or v <= self.upper) for v in stored
            )
        words = {w for v in stored for w in _WORD_SEPARATORS.split(v) if w} if self.fuzzy else set()
        for op, operand in self._terms():
            if op == "fuzzy":
                if all(any(w.startswith(q) for w in words) for q in _query_words(operand)):
                    return True
                continue
            for v in stored:
                candidates = _group_runs(v) if self.vr == "PN" else (v,)
                if any(_term_matches(op, operand, c) for c in candidates):
                    return True
        return False

    def clause(self, column: ColumnElement[str], *, multi_valued: bool = False) -> ColumnElement[bool] | None:
        """The same match as SQLAlchemy Core, on a column holding ``normalize(vr, value)``.

        None for Universal and Sequence Matching (no restriction: the caller matches items).
        With ``multi_valued`` the column holds several values joined with a backslash and a
        value must match as a whole, which LIKE cannot express, so the key becomes one regular
        expression (`ColumnOperators.regexp_match`: ``~`` on PostgreSQL, Python's ``re`` which
        SQLAlchemy registers on SQLite); ranges need a single-valued column (ValueError).
        Single-valued columns use ``=``, ``IN``, ``LIKE`` (escaped with ``!``; SQLite connections
        need ``PRAGMA case_sensitive_like=ON``) and comparisons, so indexes can serve them.
        """
        if self.kind in (ConstraintKind.UNIVERSAL, ConstraintKind.SEQUENCE):
            return None
        if self.kind is ConstraintKind.EMPTY_VALUE:
            return or_(column.is_(None), column == "")
        if self.kind is ConstraintKind.RANGE:
            if multi_valued:
                raise ValueError(f"{self.keyword}: Range Matching needs a single-valued column")
            bounds = []
            if self.lower is not None:
                bounds.append(column >= self.lower)
            if self.upper is not None:
                bounds.append(column <= self.upper)
            return and_(*bounds)
        terms = self._terms()
        pn = self.vr == "PN"
        parts = [_fuzzy_clause(column, v) for op, v in terms if op == "fuzzy"]
        others = [(op, v) for op, v in terms if op != "fuzzy"]
        if others and multi_valued:
            parts.append(column.regexp_match(_multi_valued_regex(others, pn)))
        elif others and not pn and all(op == "eq" for op, _ in others):
            literals = [v for _, v in others]
            parts.append(column == literals[0] if len(literals) == 1 else column.in_(literals))
        else:
            parts.extend(_like_clause(column, op, v, pn) for op, v in others)
        return parts[0] if len(parts) == 1 else or_(*parts)

    def _terms(self) -> list[tuple[str, str]]:
        """Each key value with how it matches: eq, wildcard, prefix (TM, DT) or fuzzy (PN)."""
        terms = []
        for v in self.values:
            if _has_wildcard(self.vr, v):
                terms.append(("wildcard", v))
            elif self.fuzzy:
                terms.append(("fuzzy", v))
            elif self.vr in _FLOOR:
                terms.append(("prefix", v))
            else:
                terms.append(("eq", v))
        return terms

    def _stored_values(self, value: str | Sequence[str] | None) -> list[str]:
        if value is None:
            return []
        raw = [str(value)] if isinstance(value, str) or not isinstance(value, Sequence) else [str(v) for v in value]
        values = []
        for item in raw:
            norm = normalize(self.vr, item, case_sensitive_pn=self.case_sensitive)
            if norm is not None:
                values.extend([norm] if self.vr in TEXT_VRS else norm.split("\\"))
        return values


def _key_parts(keyword: str, vr: str, value: object) -> list[str]:
    """A key's values as trimmed strings (a backslash separates values, except in LT, ST, UT, UR)."""
    if value is None:
        return []
    if isinstance(value, (bytes, bytearray)):
        if vr not in BINARY_VRS:
            value = bytes(value).decode("utf-8", "replace")
        elif value:
            raise InvalidQuery(f"{keyword}: matching on a value of VR {vr} is not supported")
        else:
            return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        values: Sequence[object] = [value] if vr in TEXT_VRS else str(value).split("\\")
    else:
        values = value
    if any(isinstance(v, Dataset) for v in [value, *values]):
        raise InvalidQuery(f"{keyword}: sequence items were given for a key of VR {vr}, not SQ")
    items = [str(v) for v in values]
    return [_trim(vr, item) for item in items]


def _check_part(keyword: str, vr: str, part: str) -> None:
    if ("*" in part or "?" in part) and vr not in WILDCARD_VRS:
        raise InvalidQuery(
            f"{keyword}: '{part}' has a wild card, but Wild Card Matching is not defined for VR {vr} (PS3.4 C.2.2.2.4)"
        )
    pattern = NUMBER_FORMATS.get(vr)
    if pattern is not None and not pattern.fullmatch(part):
        if "-" in part.lstrip("+-"):
            raise InvalidQuery(
                f"{keyword}: '{part}' looks like a range, but Range Matching is only defined for"
                " DA, TM and DT (PS3.4 C.2.2.2.5)"
            )
        raise InvalidQuery(f"{keyword}: '{part}' is not a valid {vr} value (PS3.5 6.2)")


_FORMS = {"DA": "a date YYYYMMDD", "TM": "a time HHMMSS.FFFFFF", "DT": "a date-time YYYYMMDDHHMMSS.FFFFFF&ZZXX"}


def _read_point(keyword: str, vr: str, text: str, whole: str) -> str:
    """The digits of one date, time or date-time of a key, or InvalidQuery."""
    point = _read_da(text) if vr == "DA" else _read_tm(text) if vr == "TM" else _read_dt(text)
    if point is None or (vr != "TM" and not _valid_calendar_date(point[:8])):
        raise InvalidQuery(
            f"{keyword}: '{whole}' is not {_FORMS[vr]} (PS3.5 6.2) nor a range of them (PS3.4 C.2.2.2.5)"
        )
    return point


def _bounds(vr: str, lower: str | None, upper: str | None) -> tuple[str | None, str | None]:
    """Normalised inclusive bounds: a reduced-precision lower bound is its first instant, upper its last."""
    if vr == "DA":
        return lower, upper
    return (
        lower + _FLOOR[vr][len(lower) :] if lower else None,
        upper + _CEIL[vr][len(upper) :] if upper else None,
    )


def _range_splits(keyword: str, vr: str, text: str) -> list[tuple[str | None, str | None]]:
    """Every reading of ``text`` as ``A-B``, ``A-`` or ``-B`` whose ends are valid and in order.

    A DT may carry a negative offset from UTC, so a ``-`` can belong to a value; every split is
    tried and the ones that read as a valid, non-reversed range are kept.
    """
    splits: list[tuple[str | None, str | None]] = []
    for i, char in enumerate(text):
        if char != "-":
            continue
        lo_text, hi_text = text[:i].strip(), text[i + 1 :].strip()
        try:
            lo = _read_point(keyword, vr, lo_text, text) if lo_text else None
            hi = _read_point(keyword, vr, hi_text, text) if hi_text else None
        except InvalidQuery:
            continue
        if lo is None and hi is None:
            continue
        lower, upper = _bounds(vr, lo, hi)
        if lower is not None and upper is not None and lower > upper:
            if vr != "DT":
                raise InvalidQuery(f"{keyword}: range '{text}' ends before it starts (PS3.4 C.2.2.2.5)")
            continue
        splits.append((lower, upper))
    return splits


def _parse_temporal(make: functools.partial[Constraint], keyword: str, vr: str, text: str) -> Constraint:
    """Single Value (C.2.2.2.1 b) or Range Matching (C.2.2.2.5) of a DA, TM or DT key."""
    if "-" in text:
        splits = _range_splits(keyword, vr, text)
        if len(splits) == 1:
            lower, upper = splits[0]
            return make(ConstraintKind.RANGE, lower=lower, upper=upper)
        if len(splits) > 1:
            raise InvalidQuery(f"{keyword}: range '{text}' can be read in several ways; give full values")
        if vr != "DT" or _read_dt(text) is None:
            raise InvalidQuery(
                f"{keyword}: '{text}' is not a valid range of {_FORMS[vr]}s (PS3.4 C.2.2.2.5): "
                "use A-B, A- or -B with A not after B"
            )
    return make(ConstraintKind.SINGLE_VALUE, (_read_point(keyword, vr, text, text),))


def _has_wildcard(vr: str, value: str) -> bool:
    return vr in WILDCARD_VRS and ("*" in value or "?" in value)


def _group_runs(name: str) -> list[str]:
    """A PN value and every run of adjacent component groups in it."""
    groups = name.split("=")
    return ["=".join(groups[i:j]) for i in range(len(groups)) for j in range(i + 1, len(groups) + 1)]


def _query_words(value: str) -> list[str]:
    return [w for w in _WORD_SEPARATORS.split(value) if w]


@functools.lru_cache(maxsize=512)
def _wildcard_regex(pattern: str) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.DOTALL)


def _term_matches(op: str, operand: str, value: str) -> bool:
    if op == "eq":
        return value == operand
    if op == "prefix":
        return value.startswith(operand)
    return _wildcard_regex(operand).fullmatch(value) is not None


def _like_escape(text: str) -> str:
    return "".join(LIKE_ESCAPE + c if c in ("%", "_", LIKE_ESCAPE) else c for c in text)


def _like_pattern(pattern: str) -> str:
    """A PS3.4 wild card pattern as a LIKE pattern escaped with LIKE_ESCAPE."""
    return "".join("%" if c == "*" else "_" if c == "?" else _like_escape(c) for c in pattern)


def _like_clause(column: ColumnElement[str], op: str, value: str, pn: bool) -> ColumnElement[bool]:
    """One term on a single-valued column; for PN also on every run of adjacent component groups."""
    if op == "prefix":
        return column.like(_like_escape(value) + "%", escape=LIKE_ESCAPE)
    pattern = _like_pattern(value) if op == "wildcard" else _like_escape(value)
    whole = column == value if op == "eq" else column.like(pattern, escape=LIKE_ESCAPE)
    if not pn:
        return whole
    # A run starts the value or follows "=", and ends it or precedes "=". A leading (trailing)
    # "*" already reaches back to the start (on to the end), so those alternatives are dropped.
    starts = ("",) if value.startswith("*") else ("", "%=")
    ends = ("",) if value.endswith("*") else ("", "=%")
    runs = [s + pattern + e for s in starts for e in ends if s or e]
    return or_(whole, *(column.like(p, escape=LIKE_ESCAPE) for p in runs)) if runs else whole


def _fuzzy_clause(column: ColumnElement[str], value: str) -> ColumnElement[bool]:
    """Every word of ``value`` begins a word of the column (PN fuzzy matching)."""
    words = []
    for word in _query_words(value):
        escaped = _like_escape(word)
        starts = [escaped + "%"] + [f"%{sep}{escaped}%" for sep in "^= \\"]
        words.append(or_(*(column.like(p, escape=LIKE_ESCAPE) for p in starts)))
    return and_(*words)


def _regex_escape(text: str) -> str:
    """Escape for both Python ``re`` and PostgreSQL AREs: a backslash before ASCII punctuation."""
    return "".join("\\" + c if c.isascii() and not c.isalnum() else c for c in text)


def _multi_valued_regex(terms: list[tuple[str, str]], pn: bool) -> str:
    """One regular expression: some backslash-separated value (PN: run of groups) matches a term.

    Wild cards never cross a backslash, so a pattern cannot match across two values. Uses only
    syntax that Python ``re`` and PostgreSQL AREs read alike.
    """
    not_sep = r"[^\\]"
    alternatives = []
    for op, value in terms:
        if op == "wildcard":
            alternatives.append(
                "".join(not_sep + "*" if c == "*" else not_sep if c == "?" else _regex_escape(c) for c in value)
            )
        else:
            alternatives.append(_regex_escape(value) + (not_sep + "*" if op == "prefix" else ""))
    start, end = (r"(?:\A|[\\=])", r"(?:[\\=]|\Z)") if pn else (r"(?:\A|\\)", r"(?:\\|\Z)")
    return f"{start}(?:{'|'.join(alternatives)}){end}"
