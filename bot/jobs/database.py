"""The database behind bot.jobs.storage: SQLite (the zero-setup default) or Postgres, through SQLAlchemy Core,
one schema history for both (Alembic, bot/jobs/migrations), and copying one database's rows into another
(`natty db copy`).

What differs between the two databases lives here and nowhere else: SQLite's connection PRAGMAs and its
transactional DDL, the INSERT that takes ON CONFLICT (SQLAlchemy spells it per dialect), how a Storage call
reaches the database (`connect`: a Runner), the lock that makes processes starting together migrate one after
the other, the snapshot a copy reads under, and the sequences a copy sets after writing ids itself.

Migrations and copies run on SQLAlchemy's async engine (aiosqlite, asyncpg). The bot's own calls run on a
Runner: on Postgres, the async engine (asyncpg: one round trip for a statement in autocommit mode); on SQLite,
SQLAlchemy's synchronous engine on one thread of its own, so a call is one hop to that thread, whatever it does
there (through aiosqlite each cursor operation is a hop of its own: four a statement).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, create_engine, event, func, inspect, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, make_url
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


def _sqlite_pragmas(engine: Engine, *, begin: str | None = None) -> None:
    """WAL mode, synchronous=NORMAL, up to 5 s of waiting for a lock. `begin` ("BEGIN", "BEGIN IMMEDIATE"): what
    a transaction starts with, DDL inside it too (SQLite's driver would otherwise commit around DDL, and begin
    only at the first write): a migration that fails changes nothing, and a read of several tables sees one
    snapshot."""

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000"):
            cursor.execute(f"PRAGMA {pragma}")
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

    async def run(self, work: Callable[[Connection], T], *, atomic: bool = False) -> T: ...

    async def close(self) -> None: ...


def _commit_or_roll_back(conn: Connection, work: Callable[[Connection], T]) -> T:
    try:
        result = work(conn)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return result


class ThreadRunner:
    """SQLite: SQLAlchemy's synchronous engine on a thread of its own, one connection, one call at a time (in
    the order they came, as aiosqlite kept them); every call commits, so each is atomic."""

    def __init__(self, url: URL) -> None:
        _sqlite_file(url)
        self.engine = create_engine(url.set(drivername="sqlite+pysqlite"), pool_size=1, max_overflow=0)
        _sqlite_pragmas(self.engine)
        self.dialect = self.engine.dialect.name
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="natty-sqlite")
        self._conn: Connection | None = None

    async def start(self) -> None:
        self._conn = await asyncio.get_running_loop().run_in_executor(self._thread, self.engine.connect)

    def _call(self, work: Callable[[Connection], T]) -> T:
        if self._conn is None:
            raise RuntimeError("storage is not open")
        return _commit_or_roll_back(self._conn, work)

    async def run(self, work: Callable[[Connection], T], *, atomic: bool = False) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, work)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self.engine.dispose()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)


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

    async def run(self, work: Callable[[Connection], T], *, atomic: bool = False) -> T:
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
