"""Alembic's entry point. bot.jobs.database.upgrade hands over an open connection in a transaction (the
whole upgrade commits or none of it does); run with a URL alone (`sqlalchemy.url` in the config), it connects
itself, or writes the SQL out in offline (--sql) mode."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from bot.jobs.schema import metadata


def run(connection: Connection) -> None:
    # transactional_ddl: on SQLite too, where bot.jobs.database.make_engine(migrating=True) begins for real
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_server_default=True, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_on_url(url: str) -> None:
    from bot.jobs.database import make_engine

    engine = make_engine(url, migrating=True)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
elif context.is_offline_mode():
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_on_url(context.config.get_main_option("sqlalchemy.url") or ""))
