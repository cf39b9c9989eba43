"""The database on SQLite and on a real PostgreSQL (tests/postgres.py): every Storage call behaves alike on
both, the migrations make the schema bot.jobs.schema describes, a database made by the hand-written migrations
before Alembic upgrades with its rows, and `natty db upgrade` / `natty db copy` do what they say."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from bot.config import database_url_problem, load_settings, secrets_of, sqlalchemy_url
from bot.jobs import database
from bot.jobs.job import Job, JobState
from bot.jobs.schema import metadata
from bot.jobs.storage import Storage
from tests.postgres import PASSWORD

HEAD = "0004"  # the newest revision (bot/jobs/migrations/versions)

ROOT = Path(__file__).resolve().parents[1]
BIG = 2**63 - 1  # the largest Discord-sized id: 64 bits, which Postgres' INTEGER could not hold

# The hand-written migrations before Alembic, as bot/jobs/storage.py ran them (schema_version 1, 2, 3).

LEGACY_MIGRATIONS: list[str] = [
    # 1: jobs, guild settings, per-user state
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL,
        guild_id INTEGER,
        channel_id INTEGER,
        task TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL DEFAULT '',
        params TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        application_id INTEGER,
        interaction_token TEXT,
        token_expires_at REAL,
        ephemeral INTEGER NOT NULL DEFAULT 0,
        locale TEXT,
        message_id INTEGER,
        parent_id TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        result TEXT,
        error TEXT
    );
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_user ON jobs(user_id, created_at);
    CREATE INDEX jobs_message ON jobs(message_id);
    CREATE TABLE job_messages (
        message_id INTEGER PRIMARY KEY,
        job_id TEXT NOT NULL,
        channel_id INTEGER
    );
    CREATE TABLE guild_settings (
        guild_id INTEGER PRIMARY KEY,
        settings TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL
    );
    CREATE TABLE user_state (
        user_id INTEGER NOT NULL,
        guild_id INTEGER NOT NULL DEFAULT 0,
        last_job_at REAL,
        day TEXT,
        jobs_today INTEGER NOT NULL DEFAULT 0,
        data TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (user_id, guild_id)
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 2: games and collab sessions (JSON state + the deadline a timer waits for), game scores, real-item pool
    """
    CREATE TABLE play_sessions (id TEXT PRIMARY KEY, kind TEXT NOT NULL, guild_id INTEGER, channel_id INTEGER,
        state TEXT NOT NULL, deadline REAL, data TEXT NOT NULL DEFAULT '{}', created_at REAL NOT NULL,
        updated_at REAL NOT NULL);
    CREATE INDEX play_sessions_open ON play_sessions(kind, state);
    CREATE TABLE game_scores (guild_id INTEGER NOT NULL, user_id INTEGER NOT NULL, points INTEGER NOT NULL DEFAULT 0,
        correct INTEGER NOT NULL DEFAULT 0, wrong INTEGER NOT NULL DEFAULT 0, games INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (guild_id, user_id));
    CREATE TABLE real_items (id INTEGER PRIMARY KEY AUTOINCREMENT, guild_id INTEGER NOT NULL, kind TEXT NOT NULL,
        text TEXT, path TEXT, added_by INTEGER NOT NULL, created_at REAL NOT NULL);
    CREATE INDEX real_items_guild ON real_items(guild_id, kind);
    """,
    # 3: durable delivery. A finished job's result (or error) is posted by the presenter after the job's row
    # says it ended; `delivered_at` is stamped once its final message really is in Discord (or the bot was
    # told it never can be: `delivery` says which), so a start-up finds what a crash left undelivered.
    # `delivered_parts` keeps each message of a delivery in flight, so trying it again edits those messages
    # instead of posting them twice; its rows go when the delivery is settled. Rows finished before this
    # migration count as delivered: an upgrade does not post old results again.
    """
    ALTER TABLE jobs ADD COLUMN delivered_at REAL;
    ALTER TABLE jobs ADD COLUMN delivery TEXT;
    UPDATE jobs SET delivered_at = COALESCE(finished_at, created_at), delivery = 'before-upgrade'
        WHERE state IN ('done', 'failed', 'cancelled');
    CREATE INDEX jobs_undelivered ON jobs(seq) WHERE delivered_at IS NULL;
    CREATE TABLE delivered_parts (job_id TEXT NOT NULL, route TEXT NOT NULL, part INTEGER NOT NULL,
        message_id INTEGER NOT NULL, channel_id INTEGER, PRIMARY KEY (job_id, route, part));
    """,
]


@pytest.fixture(params=["sqlite", "postgres"])
async def storage(request, tmp_path):
    target = Path(tmp_path / "natty.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = Storage(target, tmp_path / "data")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def job(**fields) -> Job:
    return Job(**{"user_id": BIG, "guild_id": BIG - 1, "channel_id": BIG - 2, "task": "chat", "model": "m",
                  "prompt": "a prompt", **fields})


# --- the same behaviour on both databases --------------------------------------------------------------------

async def test_a_job_reads_back_as_it_was_written(storage):
    now = time.time()  # a float of full precision: a 32-bit REAL column would round it
    written = job(params={"seed": 7, "nested": {"a": [1, 2]}}, application_id=BIG, interaction_token="tok",
                  token_expires_at=now + 900.123456, ephemeral=True, locale="fr", message_id=BIG - 3,
                  parent_id="parent", created_at=now)
    await storage.insert_job(written)
    assert await storage.get_job(written.id) == written
    assert await storage.get_job("nope") is None
    written.state, written.started_at, written.attempts = JobState.DONE, now + 0.5, 2
    written.result, written.error, written.params = {"kind": "text", "text": "hi"}, "oops", {"seed": 8}
    await storage.update_job(written, "state", "started_at", "attempts", "result", "error", "params")
    assert await storage.get_job(written.id) == written
    written.result = None
    await storage.update_job(written, "result")
    assert (await storage.get_job(written.id)).result is None


async def test_job_lists_keep_their_order(storage):
    jobs = [job(user_id=5, state=state) for state in (JobState.QUEUED, JobState.RUNNING, JobState.QUEUED)]
    for j in jobs:
        await storage.insert_job(j)
    await storage.insert_job(job(user_id=6))
    assert [j.id for j in await storage.jobs_in_states(JobState.QUEUED, JobState.RUNNING)][:3] == [j.id for j in jobs]
    assert [j.id for j in await storage.jobs_in_states(JobState.RUNNING)] == [jobs[1].id]
    assert [j.id for j in await storage.recent_jobs(5, 2)] == [jobs[2].id, jobs[1].id]


async def test_delivery_is_settled_once_and_its_parts_forgotten(storage):
    pending, refused = job(), job(state=JobState.FAILED, finished_at=123.5, error="no")
    await storage.insert_job(pending)
    await storage.insert_job(refused)
    assert await storage.delivery_of(refused.id) == (123.5, "refused")  # a refusal was its own answer
    assert await storage.undelivered_jobs() == []  # the pending one has not finished
    pending.state = JobState.DONE
    await storage.update_job(pending, "state")
    assert [j.id for j in await storage.undelivered_jobs()] == [pending.id]
    await storage.record_part(pending.id, "interaction", 0, BIG, None)
    await storage.record_part(pending.id, "interaction", 1, 11, 12)
    await storage.record_part(pending.id, "interaction", 1, 13, 12)  # the part posted again replaces the first
    assert await storage.delivered_parts(pending.id, "interaction") == {0: (BIG, None), 1: (13, 12)}
    assert await storage.delivered_parts(pending.id, "channel") == {}
    assert await storage.mark_delivered(pending.id, "interaction", now=50.25) is True
    assert await storage.mark_delivered(pending.id, "channel") is False  # the first call won
    assert await storage.delivery_of(pending.id) == (50.25, "interaction")
    assert await storage.delivered_parts(pending.id, "interaction") == {}
    assert await storage.undelivered_jobs() == []
    assert await storage.delivery_of("nope") == (None, None)


async def test_tokens_expire_and_messages_lead_to_their_job(storage):
    old, fresh = job(interaction_token="old", token_expires_at=10.0), job(interaction_token="new",
                                                                           token_expires_at=1e10)
    for j in (old, fresh):
        await storage.insert_job(j)
    assert await storage.clear_expired_tokens(now=100.0) == 1
    assert (await storage.get_job(old.id)).interaction_token is None
    assert (await storage.get_job(fresh.id)).interaction_token == "new"
    await storage.link_message(BIG, old.id, None)
    assert (await storage.job_for_message(BIG)).id == old.id
    await storage.link_message(BIG, fresh.id, 3)  # a message re-linked follows the last job
    assert (await storage.job_for_message(BIG)).id == fresh.id
    assert await storage.job_for_message(1) is None


async def test_settings_and_user_state_upsert(storage):
    assert await storage.guild_settings(None) == {} and await storage.guild_settings(BIG) == {}
    await storage.save_guild_settings(BIG, {"nsfw": False})
    await storage.save_guild_settings(BIG, {"nsfw": True, "models": {"chat": "x"}})
    await storage.save_guild_settings(2, {})
    assert await storage.guild_settings(BIG) == {"nsfw": True, "models": {"chat": "x"}}
    assert await storage.all_guild_settings() == {BIG: {"nsfw": True, "models": {"chat": "x"}}, 2: {}}
    assert await storage.user_state(BIG, None) == {"last_job_at": None, "day": None, "jobs_today": 0, "data": {}}
    day = 1_700_000_000.25
    for now in (day, day + 60, day + 86_400):  # two jobs one day, then one the next day
        await storage.record_job_start(BIG, BIG, now)
    await storage.save_user_data(BIG, BIG, {"lang": "fr"})
    state = await storage.user_state(BIG, BIG)
    assert state == {"last_job_at": day + 86_400, "day": "2023-11-15", "jobs_today": 1, "data": {"lang": "fr"}}
    await storage.record_job_start(BIG, BIG, day + 86_500)
    assert (await storage.user_state(BIG, BIG))["jobs_today"] == 2
    await storage.record_job_start(BIG, None, day)  # no server: kept under 0, apart from the server's count
    assert (await storage.user_state(BIG, None))["jobs_today"] == 1


async def test_a_submitted_job_and_its_count_are_written_together(storage):
    day = 1_700_000_000.25
    submitted = job(id="sub1")
    await storage.insert_submitted(submitted, day)
    assert (await storage.get_job("sub1")).state is JobState.QUEUED
    assert (await storage.user_state(BIG, BIG - 1))["jobs_today"] == 1
    with pytest.raises((IntegrityError, sqlite3.IntegrityError)):  # the same id again: neither write stays
        await storage.insert_submitted(job(id="sub1"), day + 1)
    assert (await storage.user_state(BIG, BIG - 1))["jobs_today"] == 1


async def test_sessions_scores_and_the_real_pool(storage):
    await storage.save_session("g1", "game", BIG, 7, "open", 99.5, '{"round": 1}')
    await storage.save_session("g2", "game", 2, 8, "open", None, "{}")
    await storage.save_session("c1", "collab", BIG, 7, "open", None, "{}")
    await storage.save_session("g1", "game", BIG, 7, "voting", 100.5, '{"round": 2}')
    assert await storage.load_session("g1", "game") == '{"round": 2}'
    assert await storage.load_session("g1", "collab") is None
    assert await storage.open_session_ids("game") == ["g1", "g2"]  # oldest first: an update keeps its start
    assert await storage.open_session_ids("game", channel_id=8) == ["g2"]
    assert await storage.open_session_ids("game", guild_id=BIG) == ["g1"]
    assert await storage.open_session_ids("game", channel_id=7, guild_id=2) == []
    await storage.save_session("g2", "game", 2, 8, "done", None, "{}")
    assert await storage.open_session_ids("game") == ["g1"]

    await storage.add_scores(BIG, {1: 3, 2: 1}, {2: 2})
    await storage.add_scores(BIG, {1: 1, 3: 1}, {})
    await storage.add_scores(BIG, {}, {})
    await storage.count_game(BIG, [1, 2, 3])
    await storage.count_game(BIG, [])
    assert await storage.leaderboard(BIG) == [
        {"user_id": 1, "points": 4, "correct": 4, "wrong": 0, "games": 1},
        {"user_id": 2, "points": 1, "correct": 1, "wrong": 2, "games": 1},
        {"user_id": 3, "points": 1, "correct": 1, "wrong": 0, "games": 1}]
    assert len(await storage.leaderboard(BIG, limit=1)) == 1 and await storage.leaderboard(5) == []

    first = await storage.add_real_item(BIG, "image", BIG)
    second = await storage.add_real_item(BIG, "text", 1, text="a real sentence")
    assert second > first
    await storage.set_real_item_path(first, "real/1.png")
    assert await storage.real_item_counts(BIG) == {"image": 1, "text": 1}
    (image,) = await storage.real_items(BIG, "image")
    assert image["id"] == first and image["path"] == "real/1.png" and image["added_by"] == BIG


async def test_public_results_meta_and_raw_sql(storage):
    shown = job(state=JobState.DONE, result={"kind": "text", "text": "hello"})
    private = job(state=JobState.DONE, result={"kind": "text", "text": "secret"}, ephemeral=True)
    dm = job(guild_id=None, state=JobState.DONE, result={"kind": "text", "text": "dm"})
    for j in (shown, private, dm):
        await storage.insert_job(j)
    (row,) = await storage.public_text_results(BIG - 1, 10)
    assert row[0] == shown.id and json.loads(row[4])["text"] == "hello"
    assert [r[0] for r in await storage.public_text_results(None, 10)] == [dm.id]  # NULL matches NULL
    assert await storage.get_meta("k") is None
    await storage.set_meta("k", "v1")
    await storage.set_meta("k", "v2")
    assert await storage.get_meta("k") == "v2"
    async with storage.db.execute("SELECT COUNT(*) FROM jobs") as cur:
        assert (await cur.fetchone())[0] == 3


async def test_concurrent_calls_are_all_kept(storage):
    jobs = [job(user_id=i) for i in range(40)]
    await asyncio.gather(*(storage.insert_job(j) for j in jobs), *(storage.record_job_start(1, 1, 5.0)
                                                                    for _ in range(20)))
    assert len(await asyncio.gather(*(storage.get_job(j.id) for j in jobs))) == 40
    assert (await storage.user_state(1, 1))["jobs_today"] == 20


async def test_sqlite_runs_every_statement_as_compiled_once(tmp_path):
    """On SQLite no Storage statement takes SQLAlchemy's execution path (bot.jobs.database: it holds the
    interpreter lock on the database thread as long again as SQLite works)."""
    compiled = {}
    for n, check in enumerate((test_a_job_reads_back_as_it_was_written, test_job_lists_keep_their_order,
                               test_delivery_is_settled_once_and_its_parts_forgotten,
                               test_tokens_expire_and_messages_lead_to_their_job, test_settings_and_user_state_upsert,
                               test_sessions_scores_and_the_real_pool, test_public_results_meta_and_raw_sql)):
        store = Storage(tmp_path / f"{n}.db", tmp_path / "data")  # each check on a database of its own
        await store.open()
        try:
            await check(store)
            compiled.update(store.runner._conn._compiled)
        finally:
            await store.close()
    assert len(compiled) > 25
    assert [statement for (statement, _), lean in compiled.items() if lean is None] == []


def test_busy_databases_are_told_apart_from_broken_ones():
    from sqlalchemy.exc import DBAPIError

    class PgError(Exception):
        def __init__(self, sqlstate):
            self.sqlstate = sqlstate

    assert database.is_busy(sqlite3.OperationalError("database is locked"))
    assert database.is_busy(DBAPIError("UPDATE", {}, PgError("40P01")))  # a deadlock: try again
    assert not database.is_busy(DBAPIError("UPDATE", {}, PgError("23505")))  # a unique violation will not pass
    assert not database.is_busy(sqlite3.OperationalError("no such table: jobs"))


# --- one schema history ------------------------------------------------------------------------------------

def _differences(conn) -> list:
    found = compare_metadata(MigrationContext.configure(conn, opts={"compare_server_default": True}), metadata)

    def alembic_quirk(diff) -> bool:  # SQLite reflects DEFAULT '' as the text "('')", which Alembic calls a change
        change = diff[0] if isinstance(diff, list) else diff
        if change[0] != "modify_default":
            return False
        reflected, declared = change[5], change[6]
        return str(getattr(reflected.arg, "text", reflected.arg)).strip("()'") == declared.arg

    return [d for d in found if not alembic_quirk(d)]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_the_migrations_make_the_schema_the_statements_expect(kind, tmp_path, request):
    url = f"sqlite:///{tmp_path}/natty.db" if kind == "sqlite" else request.getfixturevalue("pg_url")
    assert await database.upgrade(url) == (None, HEAD)
    assert await database.upgrade(url) == (HEAD, HEAD)  # nothing more to do
    engine = database.make_engine(url)
    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(_differences) == []
            columns = await conn.run_sync(lambda c: {col["name"]: col for col in inspect(c).get_columns("jobs")})
            indexes = await conn.run_sync(lambda c: {i["name"]: i for i in inspect(c).get_indexes("jobs")})
    finally:
        await engine.dispose()
    if kind == "postgres":  # the traps: 64-bit ids, 64-bit floats
        assert str(columns["user_id"]["type"]) == "BIGINT" and str(columns["message_id"]["type"]) == "BIGINT"
        assert str(columns["created_at"]["type"]) == "DOUBLE PRECISION"
    assert "jobs_undelivered" in indexes


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_processes_starting_together_migrate_one_after_the_other(kind, tmp_path, request):
    url = f"sqlite:///{tmp_path}/natty.db" if kind == "sqlite" else request.getfixturevalue("pg_url")
    results = await asyncio.gather(*(database.upgrade(url) for _ in range(3)))
    assert sorted(results, key=lambda r: r[0] or "") == [(None, HEAD), (HEAD, HEAD), (HEAD, HEAD)]


async def test_a_process_starting_while_another_writes_a_new_file_waits_for_it(tmp_path):
    """Switching a file to WAL needs it alone, and SQLite refuses at once (no busy timeout) while another
    connection writes: the process starting second waits for the first instead of failing (CI saw it)."""
    path = tmp_path / "natty.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_program (x)")
    asyncio.get_running_loop().call_later(0.3, holder.execute, "COMMIT")
    try:
        assert await database.upgrade(f"sqlite:///{path}") == (None, HEAD)
    finally:
        holder.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


def _legacy_database(path: Path, version: int) -> None:
    """A database as the hand-written migrations left it at `version`, with rows of that time."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    for number, script in enumerate(LEGACY_MIGRATIONS[:version], start=1):
        db.executescript(f"BEGIN;\n{script}\nINSERT INTO schema_version VALUES ({number});\nCOMMIT;")
    columns = "id, user_id, guild_id, task, model, params, state, created_at, finished_at, result"
    db.execute(f"INSERT INTO jobs ({columns}) VALUES ('done1', ?, ?, 'chat', 'm', '{{}}', 'done', 10.5, 11.5, "
               "'{\"kind\": \"text\", \"text\": \"old\"}')", (BIG, BIG - 1))
    db.execute(f"INSERT INTO jobs ({columns}) VALUES ('queued1', 1, NULL, 'chat', 'm', '{{\"seed\": 3}}', "
               "'queued', 12.5, NULL, NULL)")
    db.execute("INSERT INTO guild_settings VALUES (?, '{\"nsfw\": true}', 1.0)", (BIG,))
    db.execute("INSERT INTO job_messages VALUES (?, 'done1', 5)", (BIG,))
    if version >= 2:
        db.execute("INSERT INTO game_scores (guild_id, user_id, points) VALUES (1, 2, 30)")
        db.execute("INSERT INTO real_items (guild_id, kind, added_by, created_at) VALUES (1, 'text', 2, 1.0)")
    if version >= 3:
        db.execute("INSERT INTO delivered_parts VALUES ('queued1', 'channel', 0, 77, 5)")
    db.commit()
    db.close()


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_a_database_from_the_hand_written_migrations_upgrades_with_its_rows(version, tmp_path):
    path = tmp_path / "natty.db"
    _legacy_database(path, version)
    store = Storage(path, tmp_path / "data")
    await store.open()
    try:
        done, queued = await store.get_job("done1"), await store.get_job("queued1")
        assert done.user_id == BIG and done.result == {"kind": "text", "text": "old"}
        assert queued.params == {"seed": 3} and queued.state is JobState.QUEUED
        # finished before the delivery columns existed: delivered already, never posted again
        expected = (11.5, "before-upgrade") if version < 3 else (None, None)
        assert await store.delivery_of("done1") == expected
        assert await store.guild_settings(BIG) == {"nsfw": True}
        assert (await store.job_for_message(BIG)).id == "done1"
        if version >= 2:
            assert (await store.leaderboard(1))[0]["points"] == 30
            assert await store.add_real_item(1, "text", 2, "next") == 2  # AUTOINCREMENT carries on
        if version >= 3:
            assert await store.delivered_parts("queued1", "channel") == {0: (77, 5)}
        await store.insert_job(job())  # and the upgraded schema takes new rows
    finally:
        await store.close()
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]
    db.close()
    assert "schema_version" not in tables and {t.name for t in metadata.sorted_tables} <= tables


async def test_a_failed_upgrade_changes_nothing(tmp_path):
    path = tmp_path / "natty.db"
    _legacy_database(path, 1)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_version VALUES (9)")  # newer than this natty knows
    db.commit()
    before = db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()
    db.close()
    with pytest.raises(RuntimeError, match="schema_version is 9"):
        await database.upgrade(f"sqlite:///{path}")
    db = sqlite3.connect(path)
    assert db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall() == before
    db.close()


# --- DATABASE_URL ------------------------------------------------------------------------------------------

def test_database_urls_and_their_problems():
    assert sqlalchemy_url("sqlite:///data/natty.db") == "sqlite+aiosqlite:///data/natty.db"
    assert sqlalchemy_url("postgres://u:p@db:5433/natty") == "postgresql+asyncpg://u:p@db:5433/natty"
    assert sqlalchemy_url("postgresql://u@/natty?host=/run/pg&sslmode=require") == \
        "postgresql+asyncpg://u@/natty?host=/run/pg&ssl=require"
    assert database_url_problem("postgresql://u:p@db/natty") is None
    for bad, says in [("mysql://u:p@db/natty", "got scheme 'mysql'"), ("sqlite://", "sqlite:///relative"),
                      ("postgresql://u:hunter22@db:port/natty", "not a valid Postgres URL"),
                      ("postgresql://u:hunter22@db", "names no database")]:
        problem = database_url_problem(bad)
        assert problem and says in problem and "hunter22" not in problem
    settings = load_settings({"DATABASE_URL": f"postgresql://natty:{PASSWORD}@db/natty"}, env_file=None,
                             require_token=False)
    assert PASSWORD in secrets_of(settings)  # the logs redact it like a token


# --- natty db upgrade / copy ---------------------------------------------------------------------------------

async def natty_db(*args: str, url: str, cwd: Path) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_KEY"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "db", *args, cwd=cwd, env={**env, "DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


async def test_natty_db_upgrade_migrates_postgres(pg_url, tmp_path):
    code, out, err = await natty_db("upgrade", url=pg_url, cwd=tmp_path)
    assert code == 0, err
    assert f"is at revision {HEAD} (upgraded from an empty database)" in out
    assert "Running upgrade 0002 -> 0003" in err and "Running upgrade 0003 -> 0004" in err  # what it did, in the log
    assert PASSWORD not in out + err and "postgresql://***@" in out
    assert await database.upgrade(pg_url) == (HEAD, HEAD)


async def _populate(store: Storage) -> list[Job]:
    jobs = [job(user_id=BIG - i, state=JobState.DONE if i % 2 else JobState.QUEUED,
                result={"kind": "text", "text": f"r{i}"} if i % 2 else None, created_at=1000.0 + i / 7)
            for i in range(25)]
    for j in jobs:
        await store.insert_job(j)
    await store.mark_delivered(jobs[2].id, "interaction", now=5.5)
    await store.record_part(jobs[3].id, "channel", 0, BIG, 4)
    await store.link_message(BIG - 9, jobs[0].id, 4)
    await store.save_guild_settings(BIG, {"nsfw": True})
    await store.record_job_start(BIG, BIG, 1_700_000_000.0)
    await store.save_user_data(BIG, BIG, {"lang": "de"})
    await store.save_session("s1", "collab", BIG, 4, "open", 12.5, '{"prompt": "x"}')
    await store.add_scores(BIG, {1: 5, 2: 3}, {2: 1})
    for n in range(3):
        await store.add_real_item(BIG, "text", 1, f"item {n}")
    await store.set_meta("commands_hash", "abc")
    return jobs


async def test_natty_db_copy_moves_a_sqlite_bot_to_postgres_with_nothing_lost(pg_url, tmp_path):
    source = Storage(tmp_path / "natty.db", tmp_path / "data")
    await source.open()
    jobs = await _populate(source)
    before = {j.id: await source.get_job(j.id) for j in jobs}
    await source.close()
    sqlite_url = f"sqlite:///{tmp_path}/natty.db"

    code, out, err = await natty_db("copy", "--to", pg_url, url=sqlite_url, cwd=tmp_path)
    assert code == 0, err
    assert PASSWORD not in out + err
    counts = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if not line.startswith("natty:")}
    assert counts["jobs"] == ["25", "25"] and counts["real_items"] == ["3", "3"]
    assert all(a == b for a, b in counts.values()) and set(counts) == {t.name for t in metadata.sorted_tables}

    target = Storage(pg_url, tmp_path / "data")
    await target.open()
    try:
        assert {j.id: await target.get_job(j.id) for j in jobs} == before
        assert [j.id for j in await target.recent_jobs(BIG, 1)] == [jobs[0].id]
        assert await target.delivery_of(jobs[2].id) == (5.5, "interaction")
        assert await target.delivered_parts(jobs[3].id, "channel") == {0: (BIG, 4)}
        assert (await target.job_for_message(BIG - 9)).id == jobs[0].id
        assert await target.user_state(BIG, BIG) == {"last_job_at": 1_700_000_000.0, "day": "2023-11-14",
                                                     "jobs_today": 1, "data": {"lang": "de"}}
        assert await target.load_session("s1", "collab") == '{"prompt": "x"}'
        assert (await target.leaderboard(BIG))[0] == {"user_id": 1, "points": 5, "correct": 5, "wrong": 0,
                                                      "games": 0}
        assert await target.get_meta("commands_hash") == "abc"
        assert await target.add_real_item(BIG, "text", 1) == 4  # the copied ids stay, new ones follow them
        await target.insert_job(job())
    finally:
        await target.close()

    with pytest.raises(database.CopyRefused, match="holds rows already"):  # a second copy would mix two bots
        await database.copy(sqlite_url, pg_url)
    counts_again = await database.copy(sqlite_url, pg_url, force=True)  # --force: the target becomes the source
    assert counts_again["jobs"] == (25, 25) and counts_again["real_items"] == (3, 3)
    with pytest.raises(database.CopyRefused, match="source database itself"):
        await database.copy(sqlite_url, f"sqlite:///{tmp_path}/../{tmp_path.name}/natty.db", force=True)


async def test_sqlite_calls_that_queue_up_are_answered_in_one_hand_off(tmp_path, monkeypatch):
    """While one call runs on the database thread, the calls queued behind it run next and their answers reach
    the event loop together, in order, each its own result or error: one wake-up of the loop, not one per call."""
    import threading

    store = Storage(tmp_path / "n.db", tmp_path / "data")
    await store.open()
    runner = store.runner
    assert isinstance(runner, database.ThreadRunner)
    hand_offs: list[int] = []
    real = database._settle_all
    monkeypatch.setattr(database, "_settle_all", lambda done: (hand_offs.append(len(done)), real(done)))
    gate = threading.Event()
    try:
        first = asyncio.ensure_future(runner.run(lambda conn: gate.wait(10)))
        await asyncio.sleep(0)

        def fails(conn):
            raise ValueError("no such thing")

        calls = [asyncio.ensure_future(runner.run(fails if i == 7 else (lambda conn, i=i: i))) for i in range(40)]
        await asyncio.sleep(0.05)  # all 40 are queued behind the first
        gate.set()
        assert await first is True
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert [r for i, r in enumerate(results) if i != 7] == [i for i in range(40) if i != 7]
        assert isinstance(results[7], ValueError)
        assert sum(hand_offs) == 41 and len(hand_offs) <= 3, hand_offs  # 1 + 32 + 8 at most
    finally:
        await store.close()
