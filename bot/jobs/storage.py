"""Storage, owned by this module alone: every statement the bot makes, on SQLite or Postgres alike.

bot.jobs.database makes the connection (a Runner) and applies the migrations at open(); bot.jobs.schema
describes the tables. The statements are SQLAlchemy Core constructs built once, at import (or once per dialect,
for the upserts: their ON CONFLICT is spelled per dialect), so each call reuses its compiled form; none is built
or reflected per call. Each call is one trip to the database's Runner, which commits it (calls of several
statements ask for one transaction: `atomic`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Executable, Row, bindparam, case, delete, func, insert, literal, select, update

from bot.jobs import database
from bot.jobs.database import SQLConnection
from bot.jobs.job import Job, JobState
from bot.jobs.results import LocalResults, Results
from bot.jobs.schema import (
    ID,
    delivered_parts,
    game_scores,
    guild_settings,
    job_messages,
    jobs,
    meta,
    play_sessions,
    real_items,
    user_state,
)
from bot.shards import ALL_SHARDS, ShardSet

T = TypeVar("T")
AnyRow = Row[*tuple[Any, ...]]  # a row of any columns

FINISHED_STATES = tuple(s.value for s in JobState if s.finished)

_JOB_COLUMNS = (
    "id", "user_id", "guild_id", "channel_id", "task", "model", "prompt", "params", "state", "created_at",
    "started_at", "finished_at", "application_id", "interaction_token", "token_expires_at", "ephemeral",
    "locale", "message_id", "parent_id", "attempts", "result", "error",
)
# how a Job field is kept in its column
_TO_COLUMN: dict[str, Callable[[Any], Any]] = {
    "params": json.dumps,
    "result": lambda v: json.dumps(v) if v is not None else None,
    "state": lambda v: v.value,
    "ephemeral": int,
}


def _row_to_job(row: AnyRow) -> Job:
    return Job(
        id=row.id, user_id=row.user_id, guild_id=row.guild_id, channel_id=row.channel_id,
        task=row.task, model=row.model, prompt=row.prompt, params=json.loads(row.params),
        state=JobState(row.state), created_at=row.created_at, started_at=row.started_at,
        finished_at=row.finished_at, application_id=row.application_id,
        interaction_token=row.interaction_token, token_expires_at=row.token_expires_at,
        ephemeral=bool(row.ephemeral), locale=row.locale, message_id=row.message_id,
        parent_id=row.parent_id, attempts=row.attempts,
        result=json.loads(row.result) if row.result else None, error=row.error,
    )


# --- the statements ----------------------------------------------------------------------------------------
# Values come at execution by name; an UPDATE without .values() sets the columns named by its parameters. No
# expanding IN: on SQLite each statement runs as compiled once (bot.jobs.database), and one with an expanding IN
# would take SQLAlchemy's slower path.

_job_by_id = select(jobs).where(jobs.c.id == bindparam("job_id"))
_insert_job = insert(jobs)
_update_job = update(jobs).where(jobs.c.id == bindparam("job_id"))


@cache
def _jobs_in_states(count: int) -> Executable:
    """Jobs in any of `count` states (state0, state1, ...): a statement per count, no expanding IN."""
    return select(jobs).where(jobs.c.state.in_([bindparam(f"state{i}") for i in range(count)])).order_by(jobs.c.seq)


_undelivered = (select(jobs).where(jobs.c.delivered_at.is_(None),
                                   jobs.c.state.in_([literal(state) for state in FINISHED_STATES]))
                .order_by(jobs.c.seq))
_settle_delivery = update(jobs).where(jobs.c.id == bindparam("job_id"), jobs.c.delivered_at.is_(None))
_forget_parts = delete(delivered_parts).where(delivered_parts.c.job_id == bindparam("job_id"))
_delivery_of = select(jobs.c.delivered_at, jobs.c.delivery).where(jobs.c.id == bindparam("job_id"))
_parts_of = select(delivered_parts.c.part, delivered_parts.c.message_id, delivered_parts.c.channel_id).where(
    delivered_parts.c.job_id == bindparam("job_id"), delivered_parts.c.route == bindparam("route"))
_recent_jobs = (select(jobs).where(jobs.c.user_id == bindparam("user_id")).order_by(jobs.c.seq.desc())
                .limit(bindparam("limit")))
_clear_tokens = update(jobs).where(jobs.c.interaction_token.is_not(None),
                                   jobs.c.token_expires_at < bindparam("now")).values(interaction_token=None)
_job_for_message = (select(jobs).join(job_messages, job_messages.c.job_id == jobs.c.id)
                    .where(job_messages.c.message_id == bindparam("message_id")))
_guild_settings = select(guild_settings.c.settings).where(guild_settings.c.guild_id == bindparam("guild_id"))
_all_guild_settings = select(guild_settings.c.guild_id, guild_settings.c.settings)
_OPEN = [literal(JobState.QUEUED.value), literal(JobState.RUNNING.value)]
_open_of_user = select(func.count()).select_from(jobs).where(jobs.c.user_id == bindparam("user_id"),
                                                            jobs.c.state.in_(_OPEN))
_open_in_guild = select(func.count()).select_from(jobs).where(jobs.c.guild_id == bindparam("guild_id"),
                                                             jobs.c.state.in_(_OPEN))
_user_state = select(user_state).where(user_state.c.user_id == bindparam("user_id"),
                                       user_state.c.guild_id == bindparam("guild_id"))
_load_session = select(play_sessions.c.data).where(play_sessions.c.id == bindparam("sid"),
                                                   play_sessions.c.kind == bindparam("kind"))
_open_sessions = {  # (in one channel, in one server) -> the statement
    (channel, guild): select(play_sessions.c.id, play_sessions.c.guild_id).where(
        play_sessions.c.kind == bindparam("kind"), play_sessions.c.state.not_in([literal("done"), literal("failed")]),
        *([play_sessions.c.channel_id == bindparam("channel_id")] if channel else []),
        *([play_sessions.c.guild_id == bindparam("guild_id")] if guild else []),
    ).order_by(play_sessions.c.created_at)
    for channel in (False, True) for guild in (False, True)
}
_leaderboard = (select(game_scores.c.user_id, game_scores.c.points, game_scores.c.correct, game_scores.c.wrong,
                       game_scores.c.games)
                .where(game_scores.c.guild_id == bindparam("guild_id"))
                .order_by(game_scores.c.points.desc(), game_scores.c.correct.desc(), game_scores.c.user_id)
                .limit(bindparam("limit")))
_add_real_item = insert(real_items)
_set_real_item_path = update(real_items).where(real_items.c.id == bindparam("item_id"))
_real_item_counts = (select(real_items.c.kind, func.count()).where(real_items.c.guild_id == bindparam("guild_id"))
                     .group_by(real_items.c.kind))
_real_items = select(real_items).where(real_items.c.guild_id == bindparam("guild_id"),
                                       real_items.c.kind == bindparam("kind")).order_by(real_items.c.id)
_public_text_results = (
    select(jobs.c.id, jobs.c.model, jobs.c.task, jobs.c.created_at, jobs.c.result)
    .where(jobs.c.state == "done", jobs.c.guild_id.is_not_distinct_from(bindparam("guild_id", type_=ID)),
           jobs.c.ephemeral == 0, jobs.c.result.is_not(None))
    .order_by(jobs.c.seq.desc()).limit(bindparam("limit")))
_get_meta = select(meta.c.value).where(meta.c.key == bindparam("key"))


class _Upserts:
    """The INSERT ... ON CONFLICT statements of one dialect (SQLAlchemy spells ON CONFLICT per dialect)."""

    def __init__(self, dialect: str) -> None:
        insert_ = database.DIALECTS[dialect].insert

        def upsert(table: Any, *keys: str, **set_: Any) -> Executable:
            stmt = insert_(table)
            columns = {name: value(stmt.excluded, table.c) if callable(value) else getattr(stmt.excluded, name)
                       for name, value in set_.items()}
            return stmt.on_conflict_do_update(index_elements=[table.c[k] for k in keys], set_=columns)

        new = True  # the value the insert brings (excluded.<column>)
        self.record_part = upsert(delivered_parts, "job_id", "route", "part", message_id=new, channel_id=new)
        self.link_message = upsert(job_messages, "message_id", job_id=new, channel_id=new)
        self.save_guild_settings = upsert(guild_settings, "guild_id", settings=new, updated_at=new)
        self.record_job_start = upsert(
            user_state, "user_id", "guild_id", last_job_at=new, day=new,
            jobs_today=lambda excluded, c: case((c.day == excluded.day, c.jobs_today + 1), else_=1))
        self.save_user_data = upsert(user_state, "user_id", "guild_id", data=new)
        self.save_session = upsert(play_sessions, "id", state=new, deadline=new, data=new, updated_at=new)
        self.add_scores = upsert(game_scores, "guild_id", "user_id",
                                 points=lambda excluded, c: c.points + excluded.points,
                                 correct=lambda excluded, c: c.correct + excluded.correct,
                                 wrong=lambda excluded, c: c.wrong + excluded.wrong)
        self.count_game = upsert(game_scores, "guild_id", "user_id", games=lambda _excluded, c: c.games + 1)
        self.set_meta = upsert(meta, "key", value=new)


@cache
def _upserts(dialect: str) -> _Upserts:
    return _Upserts(dialect)


def _job_row(job: Job) -> dict[str, Any]:
    """A job as its row's values. A finished one is the record of a request refused before it could queue: the
    refusal was the answer to it, so it counts as delivered from the start."""
    row = {c: getattr(job, c) for c in _JOB_COLUMNS}
    row["params"] = json.dumps(job.params)
    row["state"] = job.state.value
    row["result"] = json.dumps(job.result) if job.result else None
    row["ephemeral"] = int(job.ephemeral)
    if job.state.finished:
        row["delivered_at"], row["delivery"] = job.finished_at or time.time(), "refused"
    else:
        row["delivered_at"] = row["delivery"] = None
    return row


def _jobs(rows: Any) -> list[Job]:
    return [_row_to_job(r) for r in rows]


def _job(row: AnyRow | None) -> Job | None:
    return _row_to_job(row) if row is not None else None


class Storage:
    """The database and the results store."""

    def __init__(self, db: Path | str, data_dir: Path, shards: ShardSet = ALL_SHARDS,
                 results: Results | None = None) -> None:
        """`db`: a SQLite file, or a DATABASE_URL (sqlite:///..., postgresql://..., postgres://...). `shards`: this
        process's shards; the scans a start makes (jobs by state, undelivered jobs, open sessions) return only
        the servers of these shards when several processes share the database. `results`: where result files
        live (bot.jobs.results); by default under `data_dir`."""
        self.shards = shards
        self.results: Results = results or LocalResults(data_dir)
        self.url = f"sqlite:///{db}" if isinstance(db, Path) else db
        self.db_path = db if isinstance(db, Path) else None
        self.data_dir = data_dir
        self._runner: database.Runner | None = None
        self._upsert: _Upserts | None = None

    @property
    def runner(self) -> database.Runner:
        if self._runner is None:
            raise RuntimeError("storage is not open")
        return self._runner

    @property
    def db(self) -> RawSQL:
        """SQL as the driver takes it (SQLite: `?` marks), for tests and a look at the data by hand; the bot's
        own statements are the methods below."""
        return RawSQL(self.runner)

    @property
    def upsert(self) -> _Upserts:
        if self._upsert is None:
            raise RuntimeError("storage is not open")
        return self._upsert

    async def open(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        await self.migrate()
        self._runner = await database.connect(self.url)
        self._upsert = _upserts(self._runner.dialect)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.close()

    async def migrate(self) -> str:
        """Apply the migrations not applied yet (bot.jobs.database.upgrade); returns the schema's revision."""
        return (await database.upgrade(self.url))[1]

    async def _run(self, work: Callable[[SQLConnection], T], *, atomic: bool = False) -> T:
        return await self.runner.run(work, atomic=atomic)

    async def _write(self, statement: Executable, params: dict[str, Any]) -> int:
        """One statement that changes rows; how many it changed."""
        return await self._run(lambda c: c.execute(statement, params).rowcount)

    async def _first(self, statement: Executable, params: dict[str, Any]) -> AnyRow | None:
        return await self._run(lambda c: c.execute(statement, params).first())

    async def _scalar(self, statement: Executable, params: dict[str, Any]) -> Any:
        return await self._run(lambda c: c.execute(statement, params).scalar())

    async def _all(self, statement: Executable, params: dict[str, Any] | None = None) -> Sequence[AnyRow]:
        return await self._run(lambda c: c.execute(statement, params).all())

    # --- jobs ---------------------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> None:
        """Keep a new job. One that is already finished is the record of a request refused before it could
        queue: the refusal was the answer to it, so it counts as delivered from the start."""
        await self._write(_insert_job, _job_row(job))

    async def insert_submitted(self, job: Job, now: float) -> None:
        """Keep a newly queued job and count it for its user's cooldown and daily quota: one trip, one
        transaction (the submission path makes both writes for every job)."""
        row, start = _job_row(job), self._job_start(job.user_id, job.guild_id, now)

        def work(conn: SQLConnection) -> None:
            conn.execute(_insert_job, row)
            conn.execute(self.upsert.record_job_start, start)

        await self._run(work, atomic=True)

    async def update_job(self, job: Job, *fields: str) -> None:
        """Write the named fields of `job` back."""
        values: dict[str, Any] = {"job_id": job.id}
        for f in fields:
            v = getattr(job, f)
            convert = _TO_COLUMN.get(f)
            values[f] = convert(v) if convert is not None else v
        await self._write(_update_job, values)

    async def get_job(self, job_id: str) -> Job | None:
        return await self._run(lambda c: _job(c.execute(_job_by_id, {"job_id": job_id}).first()))

    async def jobs_in_states(self, *states: JobState) -> list[Job]:
        """The jobs of this process's shards in any of `states`, oldest first."""
        params = {f"state{i}": s.value for i, s in enumerate(states)}
        statement = _jobs_in_states(len(states))
        return self._own(await self._run(lambda c: _jobs(c.execute(statement, params))))

    async def undelivered_jobs(self) -> list[Job]:
        """Finished jobs whose final message never reached Discord (the bot stopped first), oldest first."""
        return self._own(await self._run(lambda c: _jobs(c.execute(_undelivered))))

    def _own(self, found: list[Job]) -> list[Job]:
        # after the query, which already narrows by state: the other processes' jobs are few next to a scan
        return found if self.shards.ids is None else [job for job in found if self.shards.owns(job.guild_id)]

    async def mark_delivered(self, job_id: str, how: str, now: float | None = None) -> bool:
        """Settle a job's delivery (the first call wins) and forget its parts; False when it was settled already."""
        settle = {"job_id": job_id, "delivered_at": time.time() if now is None else now, "delivery": how}

        def work(conn: SQLConnection) -> bool:
            settled = conn.execute(_settle_delivery, settle).rowcount > 0
            conn.execute(_forget_parts, {"job_id": job_id})
            return settled

        return await self._run(work, atomic=True)

    async def delivery_of(self, job_id: str) -> tuple[float | None, str | None]:
        """When and how a job's delivery was settled; (None, None) while it is not."""
        row = await self._first(_delivery_of, {"job_id": job_id})
        return (row[0], row[1]) if row else (None, None)

    async def record_part(self, job_id: str, route: str, part: int, message_id: int, channel_id: int | None) -> None:
        """One message of a delivery in flight is in Discord (`route`: "interaction" or "channel")."""
        await self._write(self.upsert.record_part, {"job_id": job_id, "route": route, "part": part,
                                                    "message_id": message_id, "channel_id": channel_id})

    async def delivered_parts(self, job_id: str, route: str) -> dict[int, tuple[int, int | None]]:
        """The messages an unsettled delivery posted already: part -> (message id, channel id)."""
        rows = await self._all(_parts_of, {"job_id": job_id, "route": route})
        return {row[0]: (row[1], row[2]) for row in rows}

    async def recent_jobs(self, user_id: int, limit: int = 10) -> list[Job]:
        params = {"user_id": user_id, "limit": limit}
        return await self._run(lambda c: _jobs(c.execute(_recent_jobs, params)))

    async def clear_expired_tokens(self, now: float | None = None) -> int:
        """Forget interaction tokens past their expiry (a token is a credential: keep none longer than it
        works). Returns how many were cleared."""
        return await self._write(_clear_tokens, {"now": time.time() if now is None else now})

    async def link_message(self, message_id: int, job_id: str, channel_id: int | None) -> None:
        await self._write(self.upsert.link_message,
                          {"message_id": message_id, "job_id": job_id, "channel_id": channel_id})

    async def job_for_message(self, message_id: int) -> Job | None:
        return await self._run(lambda c: _job(c.execute(_job_for_message, {"message_id": message_id}).first()))

    # --- guild settings and per-user state -----------------------------------------------------------

    async def guild_settings(self, guild_id: int | None) -> dict[str, Any]:
        if guild_id is None:
            return {}
        settings = await self._scalar(_guild_settings, {"guild_id": guild_id})
        return json.loads(settings) if settings is not None else {}

    async def all_guild_settings(self) -> dict[int, dict[str, Any]]:
        return {row[0]: json.loads(row[1]) for row in await self._all(_all_guild_settings)}

    async def save_guild_settings(self, guild_id: int, settings: dict[str, Any]) -> None:
        await self._write(self.upsert.save_guild_settings,
                          {"guild_id": guild_id, "settings": json.dumps(settings), "updated_at": time.time()})

    async def user_state(self, user_id: int, guild_id: int | None) -> dict[str, Any]:
        row = await self._first(_user_state, {"user_id": user_id, "guild_id": guild_id or 0})
        if row is None:
            return {"last_job_at": None, "day": None, "jobs_today": 0, "data": {}}
        return {"last_job_at": row.last_job_at, "day": row.day, "jobs_today": row.jobs_today,
                "data": json.loads(row.data)}

    async def open_jobs(self, user_id: int, guild_id: int | None) -> tuple[int, int]:
        """Queued and running jobs of a user, and of a server (0 outside one), in every process on this
        database: what the caps count where several gateways admit jobs (bot.jobs.roles)."""
        def work(conn: SQLConnection) -> tuple[int, int]:
            mine = conn.execute(_open_of_user, {"user_id": user_id}).scalar()
            theirs = conn.execute(_open_in_guild, {"guild_id": guild_id}).scalar() if guild_id else 0
            return int(mine), int(theirs)

        return await self._run(work)

    async def record_job_start(self, user_id: int, guild_id: int | None, now: float) -> None:
        """Count a submitted job for cooldowns and daily quotas."""
        await self._write(self.upsert.record_job_start, self._job_start(user_id, guild_id, now))

    @staticmethod
    def _job_start(user_id: int, guild_id: int | None, now: float) -> dict[str, Any]:
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        return {"user_id": user_id, "guild_id": guild_id or 0, "last_job_at": now, "day": day, "jobs_today": 1}

    async def save_user_data(self, user_id: int, guild_id: int | None, data: dict[str, Any]) -> None:
        await self._write(self.upsert.save_user_data,
                          {"user_id": user_id, "guild_id": guild_id or 0, "data": json.dumps(data)})

    # --- games, collab sessions and the real-item pool (bot/community) ---------------------------------------

    async def save_session(self, sid: str, kind: str, guild_id: int | None, channel_id: int | None, state: str,
                           deadline: float | None, data: str) -> None:
        """A game or collab session's JSON state and the deadline its timer waits for."""
        now = time.time()
        await self._write(self.upsert.save_session, {
            "id": sid, "kind": kind, "guild_id": guild_id, "channel_id": channel_id, "state": state,
            "deadline": deadline, "data": data, "created_at": now, "updated_at": now})

    async def load_session(self, sid: str, kind: str) -> str | None:
        return await self._scalar(_load_session, {"sid": sid, "kind": kind})

    async def open_session_ids(self, kind: str, channel_id: int | None = None,
                               guild_id: int | None = None) -> list[str]:
        """Sessions of `kind` not yet done or failed, oldest first (a start resumes their timers), in one channel
        or one server when asked; only those of this process's shards' servers."""
        statement = _open_sessions[channel_id is not None, guild_id is not None]
        rows = await self._all(statement, {"kind": kind, "channel_id": channel_id, "guild_id": guild_id})
        return [r[0] for r in rows if self.shards.owns(r[1])]

    async def add_scores(self, guild_id: int, points: dict[int, int], misses: dict[int, int]) -> None:
        """Add a round's points to the server's lasting scores (per server, per user)."""
        rows = [{"guild_id": guild_id, "user_id": user, "points": pts, "correct": pts, "wrong": misses.get(user, 0),
                 "games": 0} for user, pts in points.items()]
        await self._many(self.upsert.add_scores, rows)

    async def count_game(self, guild_id: int, players: list[int]) -> None:
        await self._many(self.upsert.count_game, [{"guild_id": guild_id, "user_id": u, "games": 1} for u in players])

    async def _many(self, statement: Executable, rows: list[dict[str, Any]]) -> None:
        """The statement once for each row, all in one transaction."""
        if rows:
            await self._run(lambda c: c.execute(statement, rows).rowcount, atomic=True)

    async def leaderboard(self, guild_id: int, limit: int = 10) -> list[dict[str, int]]:
        rows = await self._all(_leaderboard, {"guild_id": guild_id, "limit": limit})
        return [dict(r._mapping) for r in rows]

    async def add_real_item(self, guild_id: int, kind: str, added_by: int, text: str | None = None) -> int:
        """A real item for the server's Natty or Not pool; an image's file path is set after (set_real_item_path)."""
        row = {"guild_id": guild_id, "kind": kind, "text": text, "path": None, "added_by": added_by,
               "created_at": time.time()}

        def work(conn: SQLConnection) -> int:
            key = conn.execute(_add_real_item, row).inserted_primary_key
            assert key is not None  # a single-row INSERT
            return int(key[0])

        return await self._run(work)

    async def set_real_item_path(self, item_id: int, path: str) -> None:
        await self._write(_set_real_item_path, {"item_id": item_id, "path": path})

    async def real_item_counts(self, guild_id: int) -> dict[str, int]:
        return {r[0]: r[1] for r in await self._all(_real_item_counts, {"guild_id": guild_id})}

    async def real_items(self, guild_id: int, kind: str) -> list[dict[str, Any]]:
        return [dict(r._mapping) for r in await self._all(_real_items, {"guild_id": guild_id, "kind": kind})]

    async def public_text_results(self, guild_id: int | None, limit: int) -> list[tuple[Any, ...]]:
        """(id, model, task, created_at, result JSON) of this server's finished, public jobs, newest first."""
        rows = await self._all(_public_text_results, {"guild_id": guild_id, "limit": limit})
        return [tuple(row) for row in rows]

    async def get_meta(self, key: str) -> str | None:
        return await self._scalar(_get_meta, {"key": key})

    async def set_meta(self, key: str, value: str) -> None:
        await self._write(self.upsert.set_meta, {"key": key, "value": value})


class RawSQL:
    """`storage.db.execute(sql, params)`, awaited or as `async with ... as cur` (then `await cur.fetchone()`)."""

    def __init__(self, runner: database.Runner) -> None:
        self.runner = runner

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _RawCall:
        return _RawCall(self.runner, sql, tuple(params))


class _RawCall:
    def __init__(self, runner: database.Runner, sql: str, params: tuple[Any, ...]) -> None:
        self.runner, self.sql, self.params = runner, sql, params

    async def _run(self) -> _RawCursor:
        def work(conn: SQLConnection) -> _RawCursor:
            result = conn.exec_driver_sql(self.sql, self.params)
            return _RawCursor(result.rowcount, list(result) if result.returns_rows else [])

        return await self.runner.run(work)

    def __await__(self) -> Generator[Any, None, _RawCursor]:
        return self._run().__await__()

    async def __aenter__(self) -> _RawCursor:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        return None


class _RawCursor:
    def __init__(self, rowcount: int, rows: list[AnyRow]) -> None:
        self.rowcount = rowcount
        self._rows = rows

    async def fetchone(self) -> AnyRow | None:
        return self._rows.pop(0) if self._rows else None

    async def fetchall(self) -> list[AnyRow]:
        rows, self._rows = self._rows, []
        return rows
