"""Ingest's hottest index statements, compiled once per dialect and run on the database driver's cursor.

Every object stored into a known series runs four statements on SQLite (find its series and the
instance it replaces, if any; insert; two counter updates) and two on PostgreSQL, where the last
three are one statement (a network round trip each). Through `Connection.execute` each costs
~70 us of Python on a CT slice's store, about four times what SQLite itself spends on it: cache
lookup, execution context, result wrapping. `DriverStatement` compiles the same SQLAlchemy
statement once per dialect and parameter set and hands the SQL to the driver cursor of the
caller's connection, inside its transaction. The parameters get the same bind processing
`Connection.execute` would give them; a statement whose results SQLAlchemy would convert, or that
needs Python-side defaults, goes through `Connection.execute` as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler


class _Compiled:
    """The driver's SQL of one statement for one dialect and set of parameter names."""

    def __init__(self, statement: Executable, dialect: Dialect, names: frozenset[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(names))
        assert isinstance(compiled, SQLCompiler)
        self.compiled = compiled
        self.sql = compiled.string
        self.positions = tuple(compiled.positiontup or ()) if compiled.positional else None
        self.processors = tuple(compiled._bind_processors.items())  # e.g. SQLite's float() of a Float
        self.untouched = not (
            compiled.insert_prefetch
            or compiled.update_prefetch
            or any(_processes(column.type, dialect) for column in compiled._result_columns)
        )

    def parameters(self, params: Mapping[str, Any]) -> Sequence[Any] | Mapping[str, Any]:
        """The statement's parameters (its own literals included) in the driver's style."""
        values = self.compiled.construct_params(params, _check=False)
        for name, process in self.processors:
            if values.get(name) is not None:
                values[name] = process(values[name])
        if self.positions is not None:
            return tuple(values[name] for name in self.positions)
        return values


def _processes(column_type: Any, dialect: Dialect) -> bool:
    """Whether SQLAlchemy converts a result column's values (the driver's values would then differ)."""
    return column_type._cached_result_processor(dialect, None) is not None


class DriverStatement:
    """A Core statement run on the driver cursor of the caller's connection (see the module's docstring)."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, frozenset[str]], _Compiled] = {}

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Run with `params` (a statement whose result is not wanted)."""
        compiled = self._for(conn, params)
        if not compiled.untouched:
            conn.execute(self.statement, dict(params))
            return
        cursor = conn.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(params))
        finally:
            cursor.close()

    def fetchone(self, conn: Connection, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """Run with `params`; the first result row (its values by position), or None."""
        compiled = self._for(conn, params)
        if not compiled.untouched:
            return conn.execute(self.statement, dict(params)).first()
        cursor = conn.connection.cursor()
        try:
            cursor.execute(compiled.sql, compiled.parameters(params))
            return cursor.fetchone()  # type: ignore[no-any-return]
        finally:
            cursor.close()

    def _for(self, conn: Connection, params: Mapping[str, Any]) -> _Compiled:
        key = (conn.dialect.name, frozenset(params))
        compiled = self._compiled.get(key)
        if compiled is None:  # two threads may both compile it once: the same result
            compiled = self._compiled[key] = _Compiled(self.statement, conn.dialect, key[1])
        return compiled
