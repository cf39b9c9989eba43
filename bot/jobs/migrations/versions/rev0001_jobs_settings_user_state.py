"""Jobs, server settings, per-user state and the meta table.

The schema of the first hand-written migration (schema_version 1).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # 64-bit Discord ids; in SQLite, INTEGER is 64-bit
TIME: sa.Double[float] = sa.Double()  # float seconds: DOUBLE PRECISION (Postgres' REAL is 32-bit)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("seq", ID, primary_key=True, autoincrement=True),
        sa.Column("id", sa.Text, nullable=False, unique=True),
        sa.Column("user_id", ID, nullable=False),
        sa.Column("guild_id", ID),
        sa.Column("channel_id", ID),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False, server_default=""),
        sa.Column("params", sa.Text, nullable=False, server_default="{}"),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME),
        sa.Column("finished_at", TIME),
        sa.Column("application_id", ID),
        sa.Column("interaction_token", sa.Text),
        sa.Column("token_expires_at", TIME),
        sa.Column("ephemeral", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("locale", sa.Text),
        sa.Column("message_id", ID),
        sa.Column("parent_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sqlite_autoincrement=True,
    )
    op.create_index("jobs_state", "jobs", ["state"])
    op.create_index("jobs_user", "jobs", ["user_id", "created_at"])
    op.create_index("jobs_message", "jobs", ["message_id"])
    op.create_table(
        "job_messages",
        sa.Column("message_id", ID, primary_key=True, autoincrement=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("channel_id", ID),
    )
    op.create_table(
        "guild_settings",
        sa.Column("guild_id", ID, primary_key=True, autoincrement=False),
        sa.Column("settings", sa.Text, nullable=False, server_default="{}"),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_table(
        "user_state",
        sa.Column("user_id", ID, primary_key=True, autoincrement=False),
        sa.Column("guild_id", ID, primary_key=True, autoincrement=False, server_default=sa.text("0")),
        sa.Column("last_job_at", TIME),
        sa.Column("day", sa.Text),
        sa.Column("jobs_today", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("meta", "user_state", "guild_settings", "job_messages", "jobs"):
        op.drop_table(table)
