"""Durable delivery: jobs.delivered_at and jobs.delivery, the delivered_parts table.

Schema_version 3. A finished job's result (or error) is posted by the presenter after the job's row says it
ended; `delivered_at` is stamped once its final message really is in Discord (or the bot was told it never can
be: `delivery` says which), so a start-up finds what a crash left undelivered. `delivered_parts` keeps each
message of a delivery in flight, so trying it again edits those messages instead of posting them twice; its rows
go when the delivery is settled. Rows finished before this revision count as delivered: an upgrade does not post
old results again.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.add_column("jobs", sa.Column("delivered_at", TIME))
    op.add_column("jobs", sa.Column("delivery", sa.Text))
    jobs = sa.table("jobs", sa.column("state"), sa.column("finished_at"), sa.column("created_at"),
                    sa.column("delivered_at"), sa.column("delivery"))
    op.execute(jobs.update().where(jobs.c.state.in_(["done", "failed", "cancelled"])).values(
        delivered_at=sa.func.coalesce(jobs.c.finished_at, jobs.c.created_at), delivery="before-upgrade"))
    undelivered = sa.text("delivered_at IS NULL")
    op.create_index("jobs_undelivered", "jobs", ["seq"], sqlite_where=undelivered, postgresql_where=undelivered)
    op.create_table(
        "delivered_parts",
        sa.Column("job_id", sa.Text, primary_key=True),
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("channel_id", ID),
    )


def downgrade() -> None:
    op.drop_table("delivered_parts")
    op.drop_index("jobs_undelivered", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("delivery")
        batch.drop_column("delivered_at")
