"""Games and collab sessions, game scores, the real-item pool.

Sessions keep their JSON state and the deadline a timer waits for (schema_version 2).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "play_sessions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("guild_id", ID),
        sa.Column("channel_id", ID),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("deadline", TIME),
        sa.Column("data", sa.Text, nullable=False, server_default="{}"),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("play_sessions_open", "play_sessions", ["kind", "state"])
    op.create_table(
        "game_scores",
        sa.Column("guild_id", ID, primary_key=True, autoincrement=False),
        sa.Column("user_id", ID, primary_key=True, autoincrement=False),
        sa.Column("points", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("correct", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("wrong", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("games", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "real_items",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("guild_id", ID, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("text", sa.Text),
        sa.Column("path", sa.Text),
        sa.Column("added_by", ID, nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("real_items_guild", "real_items", ["guild_id", "kind"])


def downgrade() -> None:
    for table in ("real_items", "game_scores", "play_sessions"):
        op.drop_table(table)
