"""The database behind bot.jobs.storage: SQLite (the zero-setup default) or Postgres, through SQLAlchemy Core,
one schema history for both (Alembic, bot/jobs/migrations), and copying one database's rows into another
(`natty db copy`).

What differs between the two databases lives here and nowhere else: SQLite's connection PRAGMAs and its
transactional DDL, the INSERT that takes ON CONFLICT (SQLAlchemy spells it per dialect), how a Storage call
reaches the database (`connect`: a Runner), the lock that makes processes starting together migrate one after
the other, the snapshot a copy reads under, and the sequences a copy sets after writing ids itself.

Migrations and copies run on SQLAlchemy's async engine (aiosqlite, asyncpg). The bot's own calls run on a
Runner: on Postgres, the async engine (asyncpg: one round trip for a statement in autocommit mode); on SQLite, one
thread of its own holding one connection, so a call is one hop to that thread whatever it does there (through
aiosqlite under SQLAlchemy each cursor operation is a hop of its own: four a statement). On that thread a
statement runs as SQLAlchemy compiled it, once: its SQL string and the order of its parameters are kept, and each
call hands sqlite3 the values (through the types' bind processors). SQLAlchemy's execution layer would hold the
interpreter lock there for about as long again as SQLite works, on every statement, and the bot's event loop
waits for that lock (bench/storage.py --concurrent). A statement that needs more than this (an expanding IN, a
type that converts results) runs through SQLAlchemy's Connection on the same connection.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    Column,
    Engine,
    Executable,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    inspect,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.config import sqlalchemy_url
from bot.jobs.schema import metadata

log = logging.getLogger("natty.database")
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # a line per plugin on every command

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The hand-written migrations before Alembic kept their number in `schema_version`; revisions 0001 to 0003 are
# those versions, so a database they made is stamped at its revision and upgraded from there.
LEGACY_REVISIONS = {1: "0001", 2: "0002", 3: "0003"}
_legacy = MetaData()
_schema_version = Table("schema_version", _legacy, Column("version", Integer, nullable=False))
_alembic_version = Table("alembic_version", _legacy, Column("version_num", String(32), nullable=False))

COPY_BATCH = 1000  # rows per INSERT while copying a table


def _no_sequences(conn: Connection) -> None:
    """SQLite moves an AUTOINCREMENT table's counter past every id inserted, given or not."""


def _set_sequences(conn: Connection) -> None:
    """Postgres' sequences do not move when rows come with their ids: set each past the largest id copied."""
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is not None:
            largest = select(func.coalesce(func.max(column), 0)).scalar_subquery()
            conn.execute(select(func.setval(func.pg_get_serial_sequence(table.name, column.name), largest + 1,
                                            False)))


# What a failed Storage call raises: sqlite3's errors on SQLite (the statements run on sqlite3 itself), SQLAlchemy's
# DBAPIError on Postgres (and for the statements that run through SQLAlchemy on SQLite).
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, DBAPIError)
_BUSY_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available


def is_busy(exc: BaseException) -> bool:
    """A failure that waiting and trying again may cure: SQLite locked or busy, a Postgres lock conflict."""
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    if isinstance(cause, sqlite3.OperationalError):
        return "locked" in str(cause).lower() or "busy" in str(cause).lower()
    return getattr(cause, "sqlstate", None) in _BUSY_SQLSTATES


MIGRATION_LOCK = 0x6E61747479  # "natty": the advisory lock Postgres migrations hold


def _sqlite_locks_at_begin(conn: Connection) -> None:
    """Migrations begin with BEGIN IMMEDIATE (make_engine): the write lock is held already."""


def _take_migration_lock(conn: Connection) -> None:
    """Processes starting together upgrade one after the other (till the transaction ends)."""
    conn.execute(select(func.pg_advisory_xact_lock(MIGRATION_LOCK)))


@dataclass(frozen=True)
class Dialect:
    insert: Callable[..., Any]  # an INSERT that takes .on_conflict_do_update / .on_conflict_do_nothing
    after_copy: Callable[[Connection], None]
    lock_for_migration: Callable[[Connection], None]
    snapshot: dict[str, Any] = field(default_factory=dict)  # execution options: one consistent read of all tables


DIALECTS = {
    "sqlite": Dialect(insert=sqlite.insert, after_copy=_no_sequences, lock_for_migration=_sqlite_locks_at_begin),
    "postgresql": Dialect(insert=postgresql.insert, after_copy=_set_sequences,
                          lock_for_migration=_take_migration_lock, snapshot={"isolation_level": "REPEATABLE READ"}),
}


def dialect_of(engine: AsyncEngine | AsyncConnection) -> Dialect:
    return DIALECTS[engine.dialect.name]


def _use_wal(cursor: Any, *, wait: float = 5.0) -> None:
    """Switch a database file to WAL (it stays so). The switch needs the file to itself, and SQLite answers
    "database is locked" at once, without its busy timeout, while another connection (a process starting
    together with this one) holds it: try again for up to `wait` seconds. A file in WAL already needs nothing."""
    deadline = time.monotonic() + wait
    while True:
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() == "wal":
            return
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(engine: Engine, *, begin: str | None = None) -> None:
    """WAL mode, synchronous=NORMAL, up to 5 s of waiting for a lock. `begin` ("BEGIN", "BEGIN IMMEDIATE"): what
    a transaction starts with, DDL inside it too (SQLite's driver would otherwise commit around DDL, and begin
    only at the first write): a migration that fails changes nothing, and a read of several tables sees one
    snapshot."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("busy_timeout=5000", "synchronous=NORMAL"):
            cursor.execute(f"PRAGMA {pragma}")
        _use_wal(cursor)
        cursor.close()
        if begin:
            dbapi_connection.isolation_level = None  # the driver begins nothing; the BEGIN below does

    if begin:
        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql(begin)


def _sqlite_file(url: URL) -> None:
    if url.database:
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def make_engine(url: str, *, migrating: bool = False, reading: bool = False) -> AsyncEngine:
    """An async engine for a DATABASE_URL (sqlite:///..., postgresql://... or postgres://..., or SQLAlchemy's
    own spelling). `migrating`: its transactions hold SQLite's write lock from their start (another process
    migrating waits for it) and take DDL in; `reading`: they read one snapshot (see _sqlite_pragmas)."""
    target = make_url(sqlalchemy_url(url))
    if target.get_backend_name() != "sqlite":
        return create_async_engine(target, pool_size=5, max_overflow=5)
    _sqlite_file(target)
    engine = create_async_engine(target)
    _sqlite_pragmas(engine.sync_engine,
                    begin="BEGIN IMMEDIATE" if migrating else "BEGIN" if reading else None)
    return engine


# --- the bot's calls ----------------------------------------------------------------------------------

class Runner(Protocol):
    """Where Storage's calls run: `work` gets a connection, executes its statements and returns plain values
    (rows fetched, counts), committed when it returns and rolled back when it raises. `atomic`: its statements
    are one transaction (without it a call may run each statement on its own, as autocommit does)."""

    dialect: str

    async def run(self, work: Callable[[SQLConnection], T], *, atomic: bool = False) -> T: ...

    async def close(self) -> None: ...


def _commit_or_roll_back(conn: SQLConnection, work: Callable[[SQLConnection], T]) -> T:
    try:
        result = work(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return result


class SQLConnection(Protocol):
    """What a Runner's `work` is given: SQLAlchemy's Connection, or on SQLite the same API over sqlite3."""

    def execute(self, statement: Executable, parameters: Any = None, /) -> Any: ...

    def exec_driver_sql(self, statement: str, parameters: Any = None, /) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


_REQUIRED = object()


class _Compiled:
    """A statement compiled once for SQLite: its SQL, and for each `?` the parameter's name, its value when the
    statement holds it (a literal), and its type's bind processor."""

    def __init__(self, statement: Any, keys: tuple[str, ...], dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))
        if compiled.post_compile_params or not compiled.positional:
            raise _NotLean(statement)
        self.sql = compiled.string
        self.slots: list[tuple[str, Any, Callable[[Any], Any] | None]] = []
        for name in compiled.positiontup or ():
            bind = compiled.binds[name]
            value = bind.effective_value if not bind.required and bind.callable is None else _REQUIRED
            self.slots.append((name, value, bind.type.dialect_impl(dialect).bind_processor(dialect)))
        self.row_type: type[tuple[Any, ...]] | None = None
        columns = getattr(statement, "selected_columns", None)
        if columns is not None and any(c.type.dialect_impl(dialect).result_processor(dialect, None) is not None
                                       for c in columns):
            raise _NotLean(statement)

    def values(self, params: dict[str, Any]) -> tuple[Any, ...]:
        out = []
        for name, value, process in self.slots:
            if name in params:
                value = params[name]
            elif value is _REQUIRED:
                raise KeyError(f"no value for the statement's parameter {name!r}")
            out.append(process(value) if process is not None and value is not None else value)
        return tuple(out)


class _NotLean(Exception):
    """The statement runs through SQLAlchemy's Connection instead."""


class _Row(tuple[Any, ...]):
    """A row by position or by column name (row.id), and row._mapping, as SQLAlchemy's Row reads."""

    _fields: tuple[str, ...] = ()
    _index: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        try:
            return self[self._index[name]]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))


def _row_type(description: Any) -> type[_Row]:
    fields = tuple(d[0] for d in description)
    return type("Row", (_Row,), {"_fields": fields, "_index": {f: i for i, f in enumerate(fields)},
                                 "__slots__": ()})


class _Result:
    """The part of SQLAlchemy's CursorResult that Storage reads, rows fetched already."""

    def __init__(self, rows: list[Any], rowcount: int, lastrowid: int | None) -> None:
        self._rows, self.rowcount, self._lastrowid = rows, rowcount, lastrowid
        self.returns_rows = bool(rows) or rowcount == -1

    def __iter__(self) -> Any:
        return iter(self._rows)

    def all(self) -> list[Any]:
        return self._rows

    def first(self) -> Any:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    @property
    def inserted_primary_key(self) -> tuple[int | None]:
        return (self._lastrowid,)


class _SQLiteConnection:
    """SQLConnection over the sqlite3 connection of a SQLAlchemy Connection, on the runner's thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dbapi: Any = conn.connection.dbapi_connection
        self.dialect = conn.dialect
        self._compiled: dict[tuple[Executable, tuple[str, ...]], _Compiled | None] = {}

    def _compile(self, statement: Executable, keys: tuple[str, ...]) -> _Compiled | None:
        try:
            return self._compiled[statement, keys]
        except KeyError:
            pass
        try:
            compiled: _Compiled | None = _Compiled(statement, keys, self.dialect)
        except _NotLean:
            compiled = None
        self._compiled[statement, keys] = compiled
        return compiled

    def execute(self, statement: Executable, parameters: Any = None, /) -> Any:
        many = isinstance(parameters, list)
        first = (parameters[0] if parameters else {}) if many else (parameters or {})
        compiled = self._compile(statement, tuple(first))
        if compiled is None:
            return self.conn.execute(statement, parameters)
        cursor = self.dbapi.cursor()
        try:
            if many:
                cursor.executemany(compiled.sql, [compiled.values(p) for p in parameters])
                return _Result([], cursor.rowcount, None)
            cursor.execute(compiled.sql, compiled.values(first))
            if cursor.description is None:
                return _Result([], cursor.rowcount, cursor.lastrowid)
            if compiled.row_type is None:
                compiled.row_type = _row_type(cursor.description)
            make = compiled.row_type
            return _Result([make(row) for row in cursor.fetchall()], -1, None)
        finally:
            cursor.close()

    def exec_driver_sql(self, statement: str, parameters: Any = None, /) -> Any:
        return self.conn.exec_driver_sql(statement, parameters)

    def commit(self) -> None:
        if self.conn.in_transaction():  # something ran through SQLAlchemy's Connection
            self.conn.commit()
        else:
            self.dbapi.commit()

    def rollback(self) -> None:
        if self.conn.in_transaction():
            self.conn.rollback()
        else:
            self.dbapi.rollback()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if not future.done():  # a cancelled caller stopped waiting; the call itself ran to its end
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _settle_all(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in done:
        _settle(future, result, error)


class ThreadRunner:
    """SQLite: SQLAlchemy's synchronous engine on a thread of its own, one connection, one call at a time in the
    order they came (as aiosqlite kept them: a queue, and each answer handed back to the loop); every call
    commits, so each is atomic."""

    def __init__(self, url: URL) -> None:
        _sqlite_file(url)
        self.engine = create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0)
        _sqlite_pragmas(self.engine)
        self.dialect = self.engine.dialect.name
        self._calls: SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="natty-sqlite", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _SQLiteConnection | None = None

    def _serve(self) -> None:
        loop = self._loop
        assert loop is not None
        while True:
            # Calls that queued up while one ran are run before answering, and all their answers go back in one
            # hand-off: each hand-off wakes the event loop through its self-pipe and costs it the GIL twice.
            call = self._calls.get()
            done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            while call is not None:
                future, fn = call
                try:
                    done.append((future, fn(), None))
                except BaseException as exc:  # handed to the caller
                    done.append((future, None, exc))
                if len(done) >= 32:
                    break
                try:
                    call = self._calls.get_nowait()
                except Empty:
                    break
            if done:
                try:
                    loop.call_soon_threadsafe(_settle_all, done)
                except RuntimeError:  # the loop closed without closing the storage
                    pass
            if call is None:
                return

    def _submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((future, fn))
        return future

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()
        self._conn = await self._submit(lambda: _SQLiteConnection(self.engine.connect()))

    def _call(self, work: Callable[[SQLConnection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("storage is not open")
        return _commit_or_roll_back(self._conn, work)

    async def run(self, work: Callable[[SQLConnection], T], *, atomic: bool = False) -> T:
        return await self._submit(lambda: self._call(work))

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        if self._thread.is_alive():
            await self._submit(self._close)
            self._calls.put(None)
            self._thread.join()


class AsyncRunner:
    """Postgres: the async engine, one connection in autocommit mode (a statement is its own transaction: one
    round trip, no BEGIN and COMMIT around it) and one for atomic calls, one call at a time on each."""

    def __init__(self, url: URL) -> None:
        self.engine = create_async_engine(url, pool_size=2, max_overflow=2)
        self.dialect = self.engine.dialect.name
        self._auto: AsyncConnection | None = None
        self._tx: AsyncConnection | None = None
        self._locks = (asyncio.Lock(), asyncio.Lock())

    async def start(self) -> None:
        auto = await self.engine.connect()
        self._auto = await auto.execution_options(isolation_level="AUTOCOMMIT")
        self._tx = await self.engine.connect()

    async def run(self, work: Callable[[SQLConnection], T], *, atomic: bool = False) -> T:
        conn, lock = (self._tx, self._locks[1]) if atomic else (self._auto, self._locks[0])
        if conn is None:
            raise RuntimeError("storage is not open")
        async with lock:
            try:
                if atomic:
                    return await conn.run_sync(_commit_or_roll_back, work)
                return await conn.run_sync(work)
            except BaseException:
                if conn.invalidated:  # the connection broke (or the call was cancelled): reconnect on next use
                    await conn.rollback()
                raise

    async def close(self) -> None:
        for conn in (self._auto, self._tx):
            if conn is not None:
                await conn.close()
        self._auto = self._tx = None
        await self.engine.dispose()


async def connect(url: str) -> Runner:
    """The Runner for a DATABASE_URL's calls (its migrations applied already: `upgrade`)."""
    target = make_url(sqlalchemy_url(url))
    runner: ThreadRunner | AsyncRunner = (ThreadRunner(target) if target.get_backend_name() == "sqlite"
                                          else AsyncRunner(target))
    await runner.start()
    return runner


# --- migrations ---------------------------------------------------------------------------------------

def alembic_config(url: str | None = None) -> Config:
    """Alembic's configuration for natty's migrations (no alembic.ini: the scripts ship inside the package)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "rev%%(rev)s_%%(slug)s")
    if url:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(conn: Connection) -> str | None:
    """The revision a database is at (None: no revision applied yet)."""
    return MigrationContext.configure(conn).get_current_revision()


def _state(conn: Connection) -> tuple[str | None, int | None]:
    """(Alembic's revision, else None; the version of a database made before Alembic, 0 when its migrations never
    ran, else None), read without Alembic's context, which would log its set-up on every start."""
    tables = inspect(conn)
    if tables.has_table("alembic_version"):
        return conn.execute(select(_alembic_version.c.version_num)).scalar(), None
    if tables.has_table("schema_version"):
        return None, int(conn.execute(select(func.max(_schema_version.c.version))).scalar() or 0)
    return None, None


def _upgrade(conn: Connection, head: str) -> tuple[str | None, str]:
    DIALECTS[conn.dialect.name].lock_for_migration(conn)
    before, legacy = _state(conn)
    config = alembic_config()
    config.attributes["connection"] = conn
    if legacy is not None:
        if legacy > max(LEGACY_REVISIONS):
            raise RuntimeError(f"the database's schema_version is {legacy}, newer than this natty knows")
        if legacy:
            command.stamp(config, LEGACY_REVISIONS[legacy])
            log.info("database made before Alembic (schema version %d): stamped revision %s", legacy,
                     LEGACY_REVISIONS[legacy])
        _schema_version.drop(conn)
        before = LEGACY_REVISIONS.get(legacy)
    if before != head:
        command.upgrade(config, "head")
    return before, head


async def upgrade(url: str) -> tuple[str | None, str]:
    """Apply the migrations a database lacks, in one transaction: (revision before, revision now). A database
    made before Alembic is recognised by its `schema_version` and carried over with its data."""
    head = head_revision()
    engine = make_engine(url, migrating=True)
    try:
        async with engine.begin() as conn:
            before, now = await conn.run_sync(_upgrade, head)
    finally:
        await engine.dispose()
    if before != now:
        log.info("database upgraded from %s to %s", before or "empty", now)
    return before, now


# --- copying ------------------------------------------------------------------------------------------

class CopyRefused(Exception):
    """The target holds rows already (and --force was not given), or is the source itself."""


async def count_rows(conn: AsyncConnection) -> dict[str, int]:
    return {table.name: int((await conn.execute(select(func.count()).select_from(table))).scalar() or 0)
            for table in metadata.sorted_tables}


def _same_database(a: str, b: str) -> bool:
    url_a, url_b = make_url(sqlalchemy_url(a)), make_url(sqlalchemy_url(b))
    if url_a.get_backend_name() == url_b.get_backend_name() == "sqlite":
        return Path(url_a.database or "").resolve() == Path(url_b.database or "").resolve()
    return url_a.set(password=None) == url_b.set(password=None)


async def copy(source: str, target: str, *, force: bool = False) -> dict[str, tuple[int, int]]:
    """Copy every table of `source` into `target` (both upgraded first) in one transaction of the target, read
    from one snapshot of the source; ids and order are kept. Refuses a target with rows unless `force`, which
    empties the target's tables first. Returns each table's (rows in the source, rows in the target after)."""
    if _same_database(source, target):
        raise CopyRefused("the target is the source database itself")
    await upgrade(source)
    await upgrade(target)
    src, dst = make_engine(source, reading=True), make_engine(target)
    try:
        async with src.connect() as read:
            await read.execution_options(**dialect_of(src).snapshot)
            async with read.begin(), dst.begin() as write:
                counts = await count_rows(read)
                present = {name: n for name, n in (await count_rows(write)).items() if n}
                if present and not force:
                    raise CopyRefused("the target holds rows already (" + ", ".join(
                        f"{name}: {n}" for name, n in present.items()) + "); --force replaces them")
                for table in reversed(metadata.sorted_tables):
                    await write.execute(table.delete())
                for table in metadata.sorted_tables:
                    rows = await read.stream(select(table).order_by(*table.primary_key.columns))
                    async for batch in rows.partitions(COPY_BATCH):
                        await write.execute(table.insert(), [dict(row._mapping) for row in batch])
                await write.run_sync(dialect_of(dst).after_copy)
        async with dst.connect() as check:
            after = await count_rows(check)
    finally:
        await src.dispose()
        await dst.dispose()
    return {name: (counts[name], after[name]) for name in counts}
