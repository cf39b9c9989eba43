"""A real PostgreSQL server for the tests, started once per session: initdb and pg_ctl in a temporary folder, on a
Unix socket in that folder only (no TCP port), with password login so the tests handle a real password. Under
root the server runs as the unprivileged `postgres` user (initdb refuses root).

    async def test_something(pg_url):  # a new, empty database of the test's own
        storage = Storage(pg_url, tmp_path / "data")

The tests skip (with the reason) only when the server's binaries are not installed; under CI a skip fails the
run (tests/conftest.py), so there the server must start.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "natty"
PASSWORD = "pg-Secr3t-" + "natty" * 3  # long enough that the logs' redaction must catch it (bot.config.secrets_of)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
    return versions[-1] if versions else None


@dataclass
class PostgresServer:
    folder: Path  # holds the data directory, the socket and the log

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@/{database}?host={self.folder}"

    def create_database(self, name: str) -> str:
        """A new empty database; its DATABASE_URL."""

        async def create() -> None:
            import asyncpg

            conn = await asyncpg.connect(host=str(self.folder), user=USER, password=PASSWORD, database="postgres")
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        _run_apart(create())
        return self.url(name)


def _run_apart(coro) -> None:
    """Run a coroutine to its end on a loop of its own (a test's loop may be running in this thread)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(coro)
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def _as_server_user() -> tuple[list[str], str | None]:
    """The command prefix that runs the server unprivileged, and who owns its folder."""
    if os.geteuid() != 0:
        return [], None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"], name
    pytest.fail("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")


class ServerError(RuntimeError):
    """initdb or pg_ctl failed; the message holds their output and the server's log."""


def binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl, or None when PostgreSQL is not installed."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


@contextlib.contextmanager
def running_server(initdb: str, pg_ctl: str, max_connections: int = 60) -> Iterator[PostgresServer]:
    """A server in a new temporary folder, stopped and removed on leaving (bench/scale.py starts one too)."""
    prefix, owner = _as_server_user()
    folder = Path(tempfile.mkdtemp(prefix="natty-pg-"))
    folder.chmod(0o755)
    (folder / "pw").write_text(PASSWORD + "\n")
    if owner:
        shutil.chown(folder, owner)
        shutil.chown(folder / "pw", owner)
    data, log = folder / "data", folder / "server.log"

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            server_log = log.read_text() if log.exists() else ""
            raise ServerError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
                              f"{server_log}")

    try:
        run(initdb, "-D", str(data), "-U", USER, "--auth=scram-sha-256", f"--pwfile={folder / 'pw'}",
            "-E", "UTF8", "--locale=C", "--no-sync")
        # a socket in the folder and no TCP at all; durability off: these databases live for one test run
        options = (f"-k {folder} -c listen_addresses='' -F -c full_page_writes=off "
                   f"-c synchronous_commit=off -c max_connections={max_connections}")
        run(pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options, "start")
        yield PostgresServer(folder)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True,
                           timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    found = binaries()
    if found is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed (Debian: apt install postgresql); "
                    "the Postgres tests need a real server")
    server = running_server(*found)
    try:
        started = server.__enter__()
    except ServerError as exc:
        pytest.fail(str(exc))
    try:
        yield started
    finally:
        server.__exit__(None, None, None)


_numbers = itertools.count(1)


@pytest.fixture
def pg_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> str:
    """The DATABASE_URL of a new, empty database for this test alone."""
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40]
    return postgres_server.create_database(f"t{next(_numbers)}_{name}")
