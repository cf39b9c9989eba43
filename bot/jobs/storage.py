"""Storage, owned by this module alone: SQLite through aiosqlite, WAL mode, versioned migrations.

The SQL sticks to types and statements that Postgres also accepts (TEXT, INTEGER, REAL, JSON kept as
TEXT), so another driver can take SQLite's place behind the same methods later.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiosqlite

from bot.jobs.job import Job, JobState

MIGRATIONS: list[str] = [
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

FINISHED_STATES = tuple(s.value for s in JobState if s.finished)

_JOB_COLUMNS = (
    "id", "user_id", "guild_id", "channel_id", "task", "model", "prompt", "params", "state", "created_at",
    "started_at", "finished_at", "application_id", "interaction_token", "token_expires_at", "ephemeral",
    "locale", "message_id", "parent_id", "attempts", "result", "error",
)


def _row_to_job(row: aiosqlite.Row) -> Job:
    return Job(
        id=row["id"], user_id=row["user_id"], guild_id=row["guild_id"], channel_id=row["channel_id"],
        task=row["task"], model=row["model"], prompt=row["prompt"], params=json.loads(row["params"]),
        state=JobState(row["state"]), created_at=row["created_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], application_id=row["application_id"],
        interaction_token=row["interaction_token"], token_expires_at=row["token_expires_at"],
        ephemeral=bool(row["ephemeral"]), locale=row["locale"], message_id=row["message_id"],
        parent_id=row["parent_id"], attempts=row["attempts"],
        result=json.loads(row["result"]) if row["result"] else None, error=row["error"],
    )


class Storage:
    """The database and the results folder."""

    def __init__(self, db_path: Path, data_dir: Path) -> None:
        self.db_path = db_path
        self.data_dir = data_dir
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("storage is not open")
        return self._db

    async def open(self) -> None:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.db_path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=NORMAL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self.migrate()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def migrate(self) -> int:
        """Apply the migrations not applied yet; returns the schema version."""
        await self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        async with self.db.execute("SELECT MAX(version) FROM schema_version") as cur:
            row = await cur.fetchone()
            assert row is not None  # MAX() gives one row, NULL on an empty table
            current = row[0] or 0
        for version, script in enumerate(MIGRATIONS[current:], start=current + 1):
            await self.db.executescript(f"BEGIN;\n{script}\nINSERT INTO schema_version VALUES ({version});\nCOMMIT;")
        return len(MIGRATIONS)

    # --- jobs ---------------------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> None:
        """Keep a new job. One that is already finished is the record of a request refused before it could
        queue: the refusal was the answer to it, so it counts as delivered from the start."""
        values = [getattr(job, c) for c in _JOB_COLUMNS]
        values[_JOB_COLUMNS.index("params")] = json.dumps(job.params)
        values[_JOB_COLUMNS.index("state")] = job.state.value
        values[_JOB_COLUMNS.index("result")] = json.dumps(job.result) if job.result else None
        columns = [*_JOB_COLUMNS, "delivered_at", "delivery"]
        if job.state.finished:
            values += [job.finished_at or time.time(), "refused"]
        else:
            values += [None, None]
        await self.db.execute(
            f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", values
        )
        await self.db.commit()

    async def update_job(self, job: Job, *fields: str) -> None:
        """Write the named fields of `job` back."""
        values: list[Any] = []
        for f in fields:
            v = getattr(job, f)
            if f in ("params", "result"):
                v = json.dumps(v) if v is not None else None
            elif f == "state":
                v = v.value
            values.append(v)
        await self.db.execute(f"UPDATE jobs SET {', '.join(f'{f} = ?' for f in fields)} WHERE id = ?",
                              [*values, job.id])
        await self.db.commit()

    async def get_job(self, job_id: str) -> Job | None:
        async with self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return _row_to_job(row) if row else None

    async def jobs_in_states(self, *states: JobState) -> list[Job]:
        marks = ", ".join("?" * len(states))
        async with self.db.execute(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq",
                                   [s.value for s in states]) as cur:
            return [_row_to_job(r) for r in await cur.fetchall()]

    async def undelivered_jobs(self) -> list[Job]:
        """Finished jobs whose final message never reached Discord (the bot stopped first), oldest first."""
        marks = ", ".join("?" * len(FINISHED_STATES))
        async with self.db.execute(f"SELECT * FROM jobs WHERE delivered_at IS NULL AND state IN ({marks}) "
                                   "ORDER BY seq", FINISHED_STATES) as cur:
            return [_row_to_job(r) for r in await cur.fetchall()]

    async def mark_delivered(self, job_id: str, how: str, now: float | None = None) -> bool:
        """Settle a job's delivery (the first call wins) and forget its parts; False when it was settled already."""
        cur = await self.db.execute(
            "UPDATE jobs SET delivered_at = ?, delivery = ? WHERE id = ? AND delivered_at IS NULL",
            (time.time() if now is None else now, how, job_id))
        await self.db.execute("DELETE FROM delivered_parts WHERE job_id = ?", (job_id,))
        await self.db.commit()
        return cur.rowcount > 0

    async def delivery_of(self, job_id: str) -> tuple[float | None, str | None]:
        """When and how a job's delivery was settled; (None, None) while it is not."""
        async with self.db.execute("SELECT delivered_at, delivery FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return (row[0], row[1]) if row else (None, None)

    async def record_part(self, job_id: str, route: str, part: int, message_id: int, channel_id: int | None) -> None:
        """One message of a delivery in flight is in Discord (`route`: "interaction" or "channel")."""
        await self.db.execute("INSERT OR REPLACE INTO delivered_parts VALUES (?, ?, ?, ?, ?)",
                              (job_id, route, part, message_id, channel_id))
        await self.db.commit()

    async def delivered_parts(self, job_id: str, route: str) -> dict[int, tuple[int, int | None]]:
        """The messages an unsettled delivery posted already: part -> (message id, channel id)."""
        async with self.db.execute("SELECT part, message_id, channel_id FROM delivered_parts "
                                   "WHERE job_id = ? AND route = ?", (job_id, route)) as cur:
            return {row[0]: (row[1], row[2]) for row in await cur.fetchall()}

    async def recent_jobs(self, user_id: int, limit: int = 10) -> list[Job]:
        async with self.db.execute("SELECT * FROM jobs WHERE user_id = ? ORDER BY seq DESC LIMIT ?",
                                   (user_id, limit)) as cur:
            return [_row_to_job(r) for r in await cur.fetchall()]

    async def clear_expired_tokens(self, now: float | None = None) -> int:
        """Forget interaction tokens past their expiry (a token is a credential: keep none longer than it
        works). Returns how many were cleared."""
        cur = await self.db.execute(
            "UPDATE jobs SET interaction_token = NULL WHERE interaction_token IS NOT NULL AND token_expires_at < ?",
            (time.time() if now is None else now,))
        await self.db.commit()
        return cur.rowcount

    async def link_message(self, message_id: int, job_id: str, channel_id: int | None) -> None:
        await self.db.execute("INSERT OR REPLACE INTO job_messages VALUES (?, ?, ?)", (message_id, job_id, channel_id))
        await self.db.commit()

    async def job_for_message(self, message_id: int) -> Job | None:
        async with self.db.execute("SELECT job_id FROM job_messages WHERE message_id = ?", (message_id,)) as cur:
            row = await cur.fetchone()
        return await self.get_job(row[0]) if row else None

    def result_dir(self, job_id: str) -> Path:
        path = self.data_dir / "results" / job_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- guild settings and per-user state -----------------------------------------------------------

    async def guild_settings(self, guild_id: int | None) -> dict[str, Any]:
        if guild_id is None:
            return {}
        async with self.db.execute("SELECT settings FROM guild_settings WHERE guild_id = ?", (guild_id,)) as cur:
            row = await cur.fetchone()
        return json.loads(row[0]) if row else {}

    async def all_guild_settings(self) -> dict[int, dict[str, Any]]:
        async with self.db.execute("SELECT guild_id, settings FROM guild_settings") as cur:
            return {row[0]: json.loads(row[1]) for row in await cur.fetchall()}

    async def save_guild_settings(self, guild_id: int, settings: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO guild_settings VALUES (?, ?, ?) ON CONFLICT(guild_id) DO UPDATE SET "
            "settings = excluded.settings, updated_at = excluded.updated_at",
            (guild_id, json.dumps(settings), time.time()),
        )
        await self.db.commit()

    async def user_state(self, user_id: int, guild_id: int | None) -> dict[str, Any]:
        async with self.db.execute("SELECT * FROM user_state WHERE user_id = ? AND guild_id = ?",
                                   (user_id, guild_id or 0)) as cur:
            row = await cur.fetchone()
        if row is None:
            return {"last_job_at": None, "day": None, "jobs_today": 0, "data": {}}
        return {"last_job_at": row["last_job_at"], "day": row["day"], "jobs_today": row["jobs_today"],
                "data": json.loads(row["data"])}

    async def record_job_start(self, user_id: int, guild_id: int | None, now: float) -> None:
        """Count a submitted job for cooldowns and daily quotas."""
        day = time.strftime("%Y-%m-%d", time.gmtime(now))
        await self.db.execute(
            "INSERT INTO user_state (user_id, guild_id, last_job_at, day, jobs_today) VALUES (?, ?, ?, ?, 1) "
            "ON CONFLICT(user_id, guild_id) DO UPDATE SET last_job_at = excluded.last_job_at, "
            "jobs_today = CASE WHEN user_state.day = excluded.day THEN user_state.jobs_today + 1 ELSE 1 END, "
            "day = excluded.day",
            (user_id, guild_id or 0, now, day),
        )
        await self.db.commit()

    async def save_user_data(self, user_id: int, guild_id: int | None, data: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO user_state (user_id, guild_id, data) VALUES (?, ?, ?) "
            "ON CONFLICT(user_id, guild_id) DO UPDATE SET data = excluded.data",
            (user_id, guild_id or 0, json.dumps(data)),
        )
        await self.db.commit()

    # --- games, collab sessions and the real-item pool (bot/community) ---------------------------------------

    async def save_session(self, sid: str, kind: str, guild_id: int | None, channel_id: int | None, state: str,
                           deadline: float | None, data: str) -> None:
        """A game or collab session's JSON state and the deadline its timer waits for."""
        now = time.time()
        await self.db.execute(
            "INSERT INTO play_sessions (id, kind, guild_id, channel_id, state, deadline, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
            "deadline = excluded.deadline, data = excluded.data, updated_at = excluded.updated_at",
            (sid, kind, guild_id, channel_id, state, deadline, data, now, now))
        await self.db.commit()

    async def load_session(self, sid: str, kind: str) -> str | None:
        async with self.db.execute("SELECT data FROM play_sessions WHERE id = ? AND kind = ?", (sid, kind)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def open_session_ids(self, kind: str, channel_id: int | None = None,
                               guild_id: int | None = None) -> list[str]:
        """Sessions of `kind` not yet done or failed, oldest first (a start resumes their timers), in one channel
        or one server when asked."""
        sql = "SELECT id FROM play_sessions WHERE kind = ? AND state NOT IN ('done', 'failed')"
        args: list[Any] = [kind]
        for column, value in (("channel_id", channel_id), ("guild_id", guild_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        async with self.db.execute(sql + " ORDER BY created_at", args) as cur:
            return [r[0] for r in await cur.fetchall()]

    async def add_scores(self, guild_id: int, points: dict[int, int], misses: dict[int, int]) -> None:
        """Add a round's points to the server's lasting scores (per server, per user)."""
        for user, pts in points.items():
            await self.db.execute(
                "INSERT INTO game_scores (guild_id, user_id, points, correct, wrong, games) VALUES (?, ?, ?, ?, ?, 0) "
                "ON CONFLICT(guild_id, user_id) DO UPDATE SET points = points + excluded.points, "
                "correct = correct + excluded.correct, wrong = wrong + excluded.wrong",
                (guild_id, user, pts, pts, misses.get(user, 0)))
        await self.db.commit()

    async def count_game(self, guild_id: int, players: list[int]) -> None:
        for user in players:
            await self.db.execute(
                "INSERT INTO game_scores (guild_id, user_id, games) VALUES (?, ?, 1) "
                "ON CONFLICT(guild_id, user_id) DO UPDATE SET games = games + 1", (guild_id, user))
        await self.db.commit()

    async def leaderboard(self, guild_id: int, limit: int = 10) -> list[dict[str, int]]:
        async with self.db.execute(
                "SELECT user_id, points, correct, wrong, games FROM game_scores WHERE guild_id = ? "
                "ORDER BY points DESC, correct DESC, user_id LIMIT ?", (guild_id, limit)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def add_real_item(self, guild_id: int, kind: str, added_by: int, text: str | None = None) -> int:
        """A real item for the server's Natty or Not pool; an image's file path is set after (set_real_item_path)."""
        cur = await self.db.execute(
            "INSERT INTO real_items (guild_id, kind, text, path, added_by, created_at) VALUES (?, ?, ?, NULL, ?, ?)",
            (guild_id, kind, text, added_by, time.time()))
        await self.db.commit()
        return int(cur.lastrowid or 0)

    async def set_real_item_path(self, item_id: int, path: str) -> None:
        await self.db.execute("UPDATE real_items SET path = ? WHERE id = ?", (path, item_id))
        await self.db.commit()

    async def real_item_counts(self, guild_id: int) -> dict[str, int]:
        async with self.db.execute("SELECT kind, COUNT(*) FROM real_items WHERE guild_id = ? GROUP BY kind",
                                   (guild_id,)) as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def real_items(self, guild_id: int, kind: str) -> list[dict[str, Any]]:
        async with self.db.execute("SELECT * FROM real_items WHERE guild_id = ? AND kind = ? ORDER BY id",
                                   (guild_id, kind)) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def public_text_results(self, guild_id: int | None, limit: int) -> list[tuple[Any, ...]]:
        """(id, model, task, created_at, result JSON) of this server's finished, public jobs, newest first."""
        async with self.db.execute(
                "SELECT id, model, task, created_at, result FROM jobs WHERE state = 'done' AND guild_id IS ? "
                "AND ephemeral = 0 AND result IS NOT NULL ORDER BY seq DESC LIMIT ?", (guild_id, limit)) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def get_meta(self, key: str) -> str | None:
        async with self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        await self.db.commit()
