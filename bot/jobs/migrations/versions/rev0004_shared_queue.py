"""The queue across processes: lanes, their users' standing, workers and leases (issue 13).

A job published to the shared queue carries its `lane`; a worker that claims it writes its id in `worker` and
renews `lease_until` while the job runs (and while it delivers the result); `cancel_requested` tells the worker
that holds a job to stop it. `lanes` keeps each lane's concurrency and how many of its jobs run now, `lane_users`
each user's running and queued jobs in a lane and when they were last served: the fair rule's ranking, indexed,
so a claim reads one row instead of counting the queue. `workers` holds each worker's heartbeat and the models
it serves (what /jobs tells a user whose job waits for a worker).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lane", sa.Text))
    op.add_column("jobs", sa.Column("worker", sa.Text))
    op.add_column("jobs", sa.Column("lease_until", TIME))
    op.add_column("jobs", sa.Column("cancel_requested", sa.Integer, nullable=False, server_default=sa.text("0")))
    queued = sa.text("state = 'queued'")
    op.create_index("jobs_lane_queue", "jobs", ["lane", "user_id", "seq"], sqlite_where=queued,
                    postgresql_where=queued)
    held = sa.text("worker IS NOT NULL")
    op.create_index("jobs_leases", "jobs", ["lease_until"], sqlite_where=held, postgresql_where=held)
    op.create_table(
        "lanes",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("running", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("seq", SEQ, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "lane_users",
        sa.Column("lane", sa.Text, primary_key=True),
        sa.Column("user_id", ID, primary_key=True, autoincrement=False),
        sa.Column("running", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("queued", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("served", SEQ, nullable=False),
    )
    waiting = sa.text("queued > 0")
    op.create_index("lane_users_rank", "lane_users", ["lane", "running", "served", "user_id"],
                    sqlite_where=waiting, postgresql_where=waiting)
    op.create_table(
        "workers",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("models", sa.Text, nullable=False, server_default="[]"),
        sa.Column("started_at", TIME, nullable=False),
        sa.Column("heartbeat_at", TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_index("lane_users_rank", "lane_users")
    op.drop_table("lane_users")
    op.drop_table("lanes")
    op.drop_index("jobs_leases", "jobs")
    op.drop_index("jobs_lane_queue", "jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cancel_requested")
        batch.drop_column("lease_until")
        batch.drop_column("worker")
        batch.drop_column("lane")
