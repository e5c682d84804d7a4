"""PS3.4 C.2.2.2 attribute matching (`archive/query.py`): one table, three ways to match.

Every row of CASES goes through `Constraint.matches` and through `Constraint.clause` against a
real table on SQLite (in memory, case-sensitive LIKE as `index/database.py` sets it) and on
PostgreSQL (PERGAMON_TEST_POSTGRES_URL; skipped when the server cannot be reached), so the
in-memory and SQL answers can never drift apart.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from sqlalchemy import Column, Connection, Integer, MetaData, Table, Text, create_engine, event, select
from sqlalchemy.exc import OperationalError

from pergamon.archive.errors import InvalidQuery
from pergamon.archive.query import TEXT_VRS, Constraint, ConstraintKind, normalize

POSTGRES_URL = os.environ.get("PERGAMON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

FUZZY = True
YAMADA = "Yamada^Tarou=山田^太郎=やまだ^たろう"
HONG = "Hong^Gildong=洪^吉洞=홍^길동"
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


class Case(NamedTuple):
    vr: str
    query: Any  # as pydicom gives a key: str, list (MultiValue), None
    stored: str | list[str] | None  # list: a multi-valued attribute
    expected: bool
    fuzzy: bool = False


ROWS: list[tuple[Any, ...]] = [
    # Single Value Matching (C.2.2.2.1): exact and case-sensitive, padding not significant
    ("LO", "ABC123", "ABC123", True),
    ("LO", "ABC123", "abc123", False),
    ("LO", "  ABC123 ", "ABC123", True),
    ("LO", "ABC123", "ABC1234", False),
    ("CS", "CT", "CT", True),
    ("CS", "CT", "MR", False),
    ("SH", "ACC-2020-1", "ACC-2020-1", True),
    ("ST", "  indented", "  indented", True),
    ("ST", "indented", "  indented", False),
    ("LT", "a\\b", "a\\b", True),
    ("IS", "7", "007", True),
    ("IS", "7", "70", False),
    ("DS", "1.5", "1.5", True),
    # PN: case-insensitive (also non-ASCII), component groups, trailing delimiters
    ("PN", "smith^john", "SMITH^JOHN", True),
    ("PN", "SMITH^JOHN", "Smith^John^^^", True),
    ("PN", "Smith", "Smith^John", False),
    ("PN", "Smith^John", "Smith^Joan", False),
    ("PN", "Yamada^Tarou", YAMADA, True),
    ("PN", "YAMADA^TAROU", YAMADA, True),
    ("PN", "山田^太郎", YAMADA, True),
    ("PN", "やまだ^たろう", YAMADA, True),
    ("PN", "山田^太郎=やまだ^たろう", YAMADA, True),
    ("PN", "=山田^太郎", YAMADA, True),
    ("PN", "山田", YAMADA, False),
    ("PN", "山田^太郎", "Yamada^Tarou", False),
    ("PN", "hong^gildong", HONG, True),
    ("PN", "홍^길동", HONG, True),
    ("PN", "διονυσιος", "ΔΙΟΝΥΣΙΟΣ", True),
    ("PN", "ΔΙΟΝΥΣΙΟΣ", "Διονυσιος", True),
    ("PN", "Διονυσιος", "Διονύσιος", False),
    ("PN", "müller^jürgen", "MÜLLER^JÜRGEN", True),
    ("PN", "Mu\u0308ller", "Müller", True),
    ("PN", "strasse", "Straße", True),
    # Wild Card Matching (C.2.2.2.4)
    ("LO", "AB*", "ABCD", True),
    ("LO", "AB*", "XABCD", False),
    ("LO", "*CD", "ABCD", True),
    ("LO", "A?CD", "ABCD", True),
    ("LO", "A?CD", "ABBCD", False),
    ("LO", "a*", "ABC", False),
    ("CS", "C?", "CT", True),
    ("LT", "*line*", "first line\\second", True),
    ("LT", "C:\\dir\\*", "C:\\dir\\file", True),
    ("LT", "C:\\dir\\*", "C:\\other", False),
    ("PN", "*^tarou", YAMADA, True),
    ("PN", "*^tarou", "Yamada^Taro", False),
    ("PN", "*山田*", YAMADA, True),
    ("PN", "yamada*", YAMADA, True),
    ("PN", "*太郎", YAMADA, True),
    ("PN", "山?^太郎", YAMADA, True),
    ("PN", "*たろう", YAMADA, True),
    ("PN", "홍*", HONG, True),
    ("PN", "김*", HONG, False),
    ("PN", "διον*", "Διονυσιος^Ανδρεας", True),
    ("PN", "smi?h^*", "Smith^John", True),
    # LIKE escaping: % _ and the escape character are literal in values
    ("LO", "100%", "100%", True),
    ("LO", "100%", "1000", False),
    ("LO", "100%*", "100% sure", True),
    ("LO", "100%*", "1000 sure", False),
    ("LO", "*%", "50", False),
    ("LO", "A_C*", "A_Cxyz", True),
    ("LO", "A_C*", "ABCxyz", False),
    ("LO", "A!B*", "A!Bc", True),
    ("LO", "A!B*", "A!!Bc", False),
    ("LO", "A?C", "A%C", True),
    ("PN", "o_brien*", "O_BRIEN^PAT", True),
    ("PN", "o_brien*", "OXBRIEN^PAT", False),
    # Universal Matching (C.2.2.2.3)
    ("LO", "", "anything", True),
    ("LO", None, None, True),
    ("PN", "*", "X", True),
    ("SH", "*", None, True),
    ("DA", "", None, True),
    ("DA", "*", "20200101", True),
    ("CS", "CT\\*", "US", True),
    # Empty Value Matching (C.2.2.2.7)
    ("LO", '""', None, True),
    ("LO", '""', "", True),
    ("LO", '""', "  ", True),
    ("LO", '""', "X", False),
    ("PN", '""', "^^", True),
    ("PN", '""', "Smith", False),
    ("DA", '""', None, True),
    ("DA", '""', "20200101", False),
    ("CS", '""', [], True),
    ("CS", '""', ["CT"], False),
    # List of UID Matching (C.2.2.2.2)
    ("UI", CT, CT, True),
    ("UI", CT, CT + "0", False),
    ("UI", CT, CT + "\x00", True),
    ("UI", f"{CT}\\{MR}", MR, True),
    ("UI", [CT, MR], CT, True),
    ("UI", f"{CT}\\{MR}", "1.2.3", False),
    ("UI", CT, [MR, CT], True),
    ("UI", CT, [CT + "0", MR], False),
    # Multiple values (C.2.2.2.8, any-of) and multi-valued attributes
    ("CS", "CT\\MR", "MR", True),
    ("CS", "CT\\MR", "US", False),
    ("CS", ["CT", "MR"], ["US", "MR"], True),
    ("CS", "CT", ["CT", "PT"], True),
    ("CS", "PT", ["CT", "PT"], True),
    ("CS", "CT", ["CTX", "PT"], False),
    ("CS", "T", ["CT", "PT"], False),
    ("CS", "C*", ["MR", "CT"], True),
    ("CS", "C*R", ["CT", "MR"], False),
    ("CS", "?T", ["MR", "PT"], True),
    ("CS", "T?M", ["CT", "MR"], False),
    ("LO", "OTHER1", ["ID1", "OTHER1"], True),
    ("LO", "A%\\B_", ["B_"], True),
    ("LO", "A%\\B_", ["BX"], False),
    ("PN", "smith^j*\\doe^j*", "Doe^Jane", True),
    ("PN", "山田^太郎", ["Smith^J", YAMADA], True),
    ("PN", "SMITH*TAROU", ["Smith^J", "Yamada^Tarou"], False),
    ("PN", "*^J", ["Smith^J", "Yamada^Tarou"], True),
    # Range Matching (C.2.2.2.5): DA
    ("DA", "20200101-20201231", "20200615", True),
    ("DA", "20200101-20201231", "20200101", True),
    ("DA", "20200101-20201231", "20201231", True),
    ("DA", "20200101-20201231", "20210101", False),
    ("DA", "20200101-20201231", None, False),
    ("DA", "20200101-", "20991231", True),
    ("DA", "20200101-", "20191231", False),
    ("DA", "-20200101", "19000101", True),
    ("DA", "-20200101", "20200102", False),
    ("DA", "2020.01.01-2020.12.31", "20200615", True),
    ("DA", "20200615", "2020.06.15", True),
    ("DA", "20200101", "20200101", True),
    ("DA", "20200101", "20200102", False),
    # TM: a reduced-precision value is the interval it covers
    ("TM", "12", "120000", True),
    ("TM", "12", "125959.999", True),
    ("TM", "12", "130000", False),
    ("TM", "1230", "123000", True),
    ("TM", "1230", "123045.5", True),
    ("TM", "1230", "1231", False),
    ("TM", "1230", "12", False),
    ("TM", "123045", "123045.123456", True),
    ("TM", "12:30", "123015", True),
    ("TM", "1230", "12:30:59", True),
    ("TM", "1200-1300", "130059", True),
    ("TM", "1200-1300", "130100", False),
    ("TM", "1200-1300", "115959.999999", False),
    ("TM", "-0800", "080059.9", True),
    ("TM", "-0800", "0801", False),
    ("TM", "1700-", "235959", True),
    ("TM", "1700-", "165959", False),
    # DT: offsets dropped, partial values are intervals, "-" of an offset is not a range
    ("DT", "2020", "20200615101010", True),
    ("DT", "2020", "2021", False),
    ("DT", "202001", "20200115+0100", True),
    ("DT", "20200101-20200131", "20200131235959.5", True),
    ("DT", "20200101-20200131", "20200201", False),
    ("DT", "20200101120000-0500", "20200101120000", True),
    ("DT", "2019-2020", "20201231", True),
    ("DT", "-2019", "20200101", False),
    # fuzzy PN (QIDO-RS fuzzymatching): each word begins a word of the name
    ("PN", "joh", "Smith^John", True, FUZZY),
    ("PN", "smi joh", "Smith^John", True, FUZZY),
    ("PN", "smi^joh", "Smith^John", True, FUZZY),
    ("PN", "ohn", "Smith^John", False, FUZZY),
    ("PN", "jo", "Smith^Anne", False, FUZZY),
    ("PN", "山田", YAMADA, True, FUZZY),
    ("PN", "berg", "van der Berg^Anna", True, FUZZY),
    ("PN", "doe", ["Smith^John", "Doe^Jane"], True, FUZZY),
    ("PN", "jo*n", "Smith^John", False, FUZZY),
    ("PN", "smith^jo*n", "Smith^John", True, FUZZY),
    ("PN", "jo_", "Smith^John", False, FUZZY),
]
CASES = [Case(*row) for row in ROWS]


def _id(case: Case) -> str:
    return f"{case.vr}:{case.query!r}~{case.stored!r}{'~fuzzy' if case.fuzzy else ''}->{case.expected}"


def _constraint(case: Case) -> Constraint:
    return Constraint.parse("Key", case.vr, case.query, fuzzy=case.fuzzy)


def _column_value(case: Case) -> str | None:
    """What the index column holds: normalised values joined with a backslash."""
    stored = "\\".join(case.stored) if isinstance(case.stored, list) else case.stored
    return normalize(case.vr, stored)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches(case: Case) -> None:
    constraint = _constraint(case)
    assert constraint.matches(case.stored) is case.expected
    assert constraint.matches(_column_value(case)) is case.expected, "normalised values match alike"


# --- the same table in SQL -------------------------------------------------------------------


class SqlTable:
    """One row per case: `single` holds single-valued cases, `multi` every case (as a list)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.table = Table(
            f"query_test_{uuid.uuid4().hex[:12]}",
            MetaData(),
            Column("id", Integer, primary_key=True),
            Column("single", Text),
            Column("multi", Text),
        )
        self.table.create(conn)
        rows = [
            {"id": i, "single": None if isinstance(c.stored, list) else _column_value(c), "multi": _column_value(c)}
            for i, c in enumerate(CASES)
        ]
        conn.execute(self.table.insert(), rows)
        conn.commit()

    def matches(self, index: int, column: str, constraint: Constraint, *, multi_valued: bool) -> bool:
        clause = constraint.clause(self.table.c[column], multi_valued=multi_valued)
        query = select(self.table.c.id).where(self.table.c.id == index)
        if clause is not None:
            query = query.where(clause)
        return self.conn.execute(query).first() is not None


def _sqlite_case_sensitive_like(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA case_sensitive_like=ON")
    cursor.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def sql(request: pytest.FixtureRequest) -> Iterator[SqlTable]:
    if request.param == "sqlite":
        engine = create_engine("sqlite://")
        event.listen(engine, "connect", _sqlite_case_sensitive_like)
    else:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        conn = engine.connect()
    except OperationalError as exc:
        engine.dispose()
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_URL}: {exc.orig}")
    table = SqlTable(conn)
    yield table
    conn.rollback()
    table.table.drop(conn)
    conn.commit()
    conn.close()
    engine.dispose()


@pytest.mark.parametrize("index", range(len(CASES)), ids=[_id(c) for c in CASES])
def test_clause(sql: SqlTable, index: int) -> None:
    case = CASES[index]
    constraint = _constraint(case)
    if not isinstance(case.stored, list):
        assert sql.matches(index, "single", constraint, multi_valued=False) is case.expected
    if case.vr not in TEXT_VRS and constraint.kind is not ConstraintKind.RANGE:
        assert sql.matches(index, "multi", constraint, multi_valued=True) is case.expected


def test_range_needs_single_valued_column() -> None:
    constraint = Constraint.parse("StudyDate", "DA", "20200101-")
    with pytest.raises(ValueError, match="single-valued"):
        constraint.clause(Table("t", MetaData(), Column("d", Text)).c.d, multi_valued=True)


# --- parsing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vr", "value", "kind"),
    [
        ("LO", "ABC", ConstraintKind.SINGLE_VALUE),
        ("PN", PersonName("Smith^John"), ConstraintKind.SINGLE_VALUE),
        ("UI", "1.2.3\\1.2.4", ConstraintKind.UID_LIST),
        ("UI", MultiValue(str, ["1.2.3", "1.2.4"]), ConstraintKind.UID_LIST),
        ("LO", "", ConstraintKind.UNIVERSAL),
        ("US", None, ConstraintKind.UNIVERSAL),
        ("PN", PersonName(""), ConstraintKind.UNIVERSAL),
        ("CS", "*", ConstraintKind.UNIVERSAL),
        ("PN", "Smi*", ConstraintKind.WILDCARD),
        ("DA", "20200101-", ConstraintKind.RANGE),
        ("DA", "20200101", ConstraintKind.SINGLE_VALUE),
        ("TM", "12", ConstraintKind.SINGLE_VALUE),
        ("SQ", Sequence([Dataset()]), ConstraintKind.SEQUENCE),
        ("SQ", None, ConstraintKind.SEQUENCE),
        ("CS", '""', ConstraintKind.EMPTY_VALUE),
        ("CS", MultiValue(str, ["CT", "MR"]), ConstraintKind.MULTIPLE_VALUES),
        ("US", 512, ConstraintKind.SINGLE_VALUE),
    ],
)
def test_kind(vr: str, value: object, kind: ConstraintKind) -> None:
    assert Constraint.parse("Key", vr, value).kind is kind


def test_sequence_constraint_restricts_nothing() -> None:
    constraint = Constraint.parse("RequestAttributesSequence", "SQ", Sequence([Dataset()]))
    assert constraint.matches(None) is True
    assert constraint.clause(Table("t", MetaData(), Column("c", Text)).c.c) is None


def test_case_sensitive_pn() -> None:
    constraint = Constraint.parse("PatientName", "PN", "Smith*", case_sensitive_pn=True)
    assert constraint.matches("Smith^John") is True
    assert constraint.matches("SMITH^JOHN") is False
    assert normalize("PN", "Smith^John", case_sensitive_pn=True) == "Smith^John"


@pytest.mark.parametrize(
    ("keyword", "vr", "value", "message"),
    [
        ("StudyDate", "DA", "2020-2019x", r"StudyDate: '2020-2019x' is not a valid range of a date YYYYMMDD"),
        ("StudyDate", "DA", "20201301", r"StudyDate: '20201301' is not a date YYYYMMDD"),
        ("StudyDate", "DA", "20200230", r"'20200230' is not a date"),
        ("StudyDate", "DA", "2020-01-01", r"not a valid range"),
        ("StudyDate", "DA", "20201231-20200101", r"range '20201231-20200101' ends before it starts"),
        ("StudyDate", "DA", "2020*", r"Wild Card Matching is not defined for VR DA"),
        ("StudyDate", "DA", "20200101\\20200102", r"has several values, DA keys take one"),
        ("StudyDate", "DA", "-", r"not a valid range"),
        ("StudyTime", "TM", "2500", r"StudyTime: '2500' is not a time HHMMSS.FFFFFF"),
        ("StudyTime", "TM", "1260", r"'1260' is not a time"),
        ("StudyTime", "TM", "12-13-14", r"not a valid range of a time"),
        ("StudyTime", "TM", "1300-1200", r"ends before it starts"),
        ("AcquisitionDateTime", "DT", "2020-2021-2022", r"not a valid range of a date-time"),
        ("AcquisitionDateTime", "DT", "20201-", r"not a valid range"),
        ("SeriesNumber", "IS", "1-5", r"looks like a range, but Range Matching is only defined for DA, TM and DT"),
        ("SeriesNumber", "IS", "abc", r"'abc' is not a valid IS value"),
        ("Rows", "US", "-1", r"'-1' is not a valid US value"),
        ("PatientAge", "AS", "45", r"'45' is not a valid AS value"),
        ("StudyInstanceUID", "UI", "1.2.*", r"Wild Card Matching is not defined for VR UI"),
        ("StudyInstanceUID", "UI", "1.2.3\\1.?", r"'1.\?' has a wild card"),
        ("PixelData", "OB", b"\x00\x01", r"VR OB is not supported"),
        ("PatientName", "PN", Sequence([Dataset()]), r"sequence items were given for a key of VR PN"),
    ],
)
def test_invalid_query(keyword: str, vr: str, value: object, message: str) -> None:
    with pytest.raises(InvalidQuery, match=message):
        Constraint.parse(keyword, vr, value)


@pytest.mark.parametrize(
    ("vr", "value", "expected"),
    [
        ("TM", "12", "120000.000000"),
        ("TM", "1230", "123000.000000"),
        ("TM", "123045.5", "123045.500000"),
        ("TM", "12:30:45", "123045.000000"),
        ("TM", "123045.123456 ", "123045.123456"),
        ("DA", "2020.01.02", "20200102"),
        ("DA", "20200102 ", "20200102"),
        ("DT", "20200101120000.5+0100", "20200101120000.500000"),
        ("DT", "2020", "20200101000000.000000"),
        ("PN", "Yamada^Tarou=山田^太郎=", "YAMADA^TAROU=山田^太郎"),
        ("PN", " Smith ^ John ^^^", "SMITH^JOHN"),
        ("PN", "^^^", None),
        ("CS", "CT\\MR ", "CT\\MR"),
        ("CS", "\\", None),
        ("UI", "1.2.3\x00", "1.2.3"),
        ("LO", "   ", None),
        ("LO", "", None),
        ("LO", None, None),
        ("LT", " text with \\ and spaces  ", " text with \\ and spaces"),
        ("IS", "+007", "7"),
        ("TM", "not a time", "not a time"),
    ],
)
def test_normalize(vr: str, value: str | None, expected: str | None) -> None:
    assert normalize(vr, value) == expected
    assert normalize(vr, expected) == expected, "idempotent"
