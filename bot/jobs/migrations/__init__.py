"""The database's one schema history, for SQLite and Postgres alike: Alembic revisions in versions/.

bot.jobs.database applies them (at every start, and by `natty db upgrade`); bot.jobs.schema describes the
tables they leave, for the statements bot.jobs.storage builds. A schema change is a new revision here plus the
same change in bot.jobs.schema (tests/test_storage.py compares the two on both databases). To write one:

    python -c "from alembic import command; from bot.jobs.database import alembic_config; \\
               command.revision(alembic_config(), 'what changes and why')"

Revisions use SQLAlchemy's types and operations only (no SQL of one database), and keep to what both
databases do: 64-bit ids, DOUBLE PRECISION times, JSON as TEXT; SQLite cannot alter columns, so a change to
one goes through `op.batch_alter_table`.

Databases made before Alembic (a `schema_version` table at 1, 2 or 3) are recognised and stamped at the
revision their version matches, then upgraded: revisions 0001 to 0003 are those three versions.
"""
