"""The tables as the migrations leave them (bot/jobs/migrations), for bot.jobs.storage to build its statements on.

The migrations make the schema; this module only describes the result. tests/test_storage.py checks that the
two agree (Alembic's compare_metadata finds no difference on SQLite or Postgres), so a new migration comes with
its change here.

Types that both databases keep alike: Discord ids are 64-bit (BIGINT in Postgres, SQLite's INTEGER, which is 64-bit
and, as a primary key, the rowid), times are float seconds (DOUBLE PRECISION: Postgres' REAL is 32-bit), JSON is
TEXT, flags are 0/1 integers.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, Index, Integer, MetaData, Table, Text, text

# A 64-bit integer: BIGINT in Postgres, INTEGER in SQLite (64-bit there, and a primary key's rowid).
ID = BigInteger().with_variant(Integer(), "sqlite")
TIME: Double[float] = Double()

metadata = MetaData()

jobs = Table(
    "jobs", metadata,
    Column("seq", ID, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("user_id", ID, nullable=False),
    Column("guild_id", ID),
    Column("channel_id", ID),
    Column("task", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("prompt", Text, nullable=False, server_default=""),
    Column("params", Text, nullable=False, server_default="{}"),
    Column("state", Text, nullable=False),
    Column("created_at", TIME, nullable=False),
    Column("started_at", TIME),
    Column("finished_at", TIME),
    Column("application_id", ID),
    Column("interaction_token", Text),
    Column("token_expires_at", TIME),
    Column("ephemeral", Integer, nullable=False, server_default=text("0")),
    Column("locale", Text),
    Column("message_id", ID),
    Column("parent_id", Text),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("result", Text),
    Column("error", Text),
    Column("delivered_at", TIME),
    Column("delivery", Text),
    Column("lane", Text),  # the shared queue (bot.jobs.shared): the lane a published job waits in
    Column("worker", Text),  # the worker holding the job (running, or delivering its result)
    Column("lease_until", TIME),  # until when that worker's hold lasts unless renewed
    Column("cancel_requested", Integer, nullable=False, server_default=text("0")),
    Index("jobs_state", "state"),
    Index("jobs_user", "user_id", "created_at"),
    Index("jobs_message", "message_id"),
    Index("jobs_undelivered", "seq", sqlite_where=text("delivered_at IS NULL"),
          postgresql_where=text("delivered_at IS NULL")),
    Index("jobs_lane_queue", "lane", "user_id", "seq", sqlite_where=text("state = 'queued'"),
          postgresql_where=text("state = 'queued'")),
    Index("jobs_leases", "lease_until", sqlite_where=text("worker IS NOT NULL"),
          postgresql_where=text("worker IS NOT NULL")),
    sqlite_autoincrement=True,
)

job_messages = Table(
    "job_messages", metadata,
    Column("message_id", ID, primary_key=True, autoincrement=False),
    Column("job_id", Text, nullable=False),
    Column("channel_id", ID),
)

guild_settings = Table(
    "guild_settings", metadata,
    Column("guild_id", ID, primary_key=True, autoincrement=False),
    Column("settings", Text, nullable=False, server_default="{}"),
    Column("updated_at", TIME, nullable=False),
)

user_state = Table(
    "user_state", metadata,
    Column("user_id", ID, primary_key=True, autoincrement=False),
    Column("guild_id", ID, primary_key=True, autoincrement=False, server_default=text("0")),
    Column("last_job_at", TIME),
    Column("day", Text),
    Column("jobs_today", Integer, nullable=False, server_default=text("0")),
    Column("data", Text, nullable=False, server_default="{}"),
)

meta = Table(
    "meta", metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
)

play_sessions = Table(
    "play_sessions", metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("guild_id", ID),
    Column("channel_id", ID),
    Column("state", Text, nullable=False),
    Column("deadline", TIME),
    Column("data", Text, nullable=False, server_default="{}"),
    Column("created_at", TIME, nullable=False),
    Column("updated_at", TIME, nullable=False),
    Index("play_sessions_open", "kind", "state"),
)

game_scores = Table(
    "game_scores", metadata,
    Column("guild_id", ID, primary_key=True, autoincrement=False),
    Column("user_id", ID, primary_key=True, autoincrement=False),
    Column("points", Integer, nullable=False, server_default=text("0")),
    Column("correct", Integer, nullable=False, server_default=text("0")),
    Column("wrong", Integer, nullable=False, server_default=text("0")),
    Column("games", Integer, nullable=False, server_default=text("0")),
)

real_items = Table(
    "real_items", metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("guild_id", ID, nullable=False),
    Column("kind", Text, nullable=False),
    Column("text", Text),
    Column("path", Text),
    Column("added_by", ID, nullable=False),
    Column("created_at", TIME, nullable=False),
    Index("real_items_guild", "guild_id", "kind"),
    sqlite_autoincrement=True,
)

delivered_parts = Table(
    "delivered_parts", metadata,
    Column("job_id", Text, primary_key=True),
    Column("route", Text, primary_key=True),
    Column("part", Integer, primary_key=True, autoincrement=False),
    Column("message_id", ID, nullable=False),
    Column("channel_id", ID),
)

# --- the queue across processes (bot.jobs.shared) ---------------------------------------------------------

lanes = Table(
    "lanes", metadata,
    Column("key", Text, primary_key=True),
    Column("concurrency", Integer, nullable=False),
    Column("running", Integer, nullable=False, server_default=text("0")),
    Column("seq", ID, nullable=False, server_default=text("0")),  # arrivals and starts, in order
)

lane_users = Table(
    "lane_users", metadata,
    Column("lane", Text, primary_key=True),
    Column("user_id", ID, primary_key=True, autoincrement=False),
    Column("running", Integer, nullable=False, server_default=text("0")),
    Column("queued", Integer, nullable=False, server_default=text("0")),
    Column("served", ID, nullable=False),  # lane seq of the last start, or NEVER + arrival while not served
    Index("lane_users_rank", "lane", "running", "served", "user_id", sqlite_where=text("queued > 0"),
          postgresql_where=text("queued > 0")),
)

workers = Table(
    "workers", metadata,
    Column("id", Text, primary_key=True),
    Column("models", Text, nullable=False, server_default="[]"),
    Column("started_at", TIME, nullable=False),
    Column("heartbeat_at", TIME, nullable=False),
)
