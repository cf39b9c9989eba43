"""Shared fixtures and two rules for every test run. The end-to-end harness lives in tests/harness.py.

- Discord's rules hold in every test: after a test passes, each ``FakeDiscord`` it started must have
  recorded no violation the test did not ``tolerate`` (mark a test ``discord_violations`` when it provokes
  and inspects violations itself). So no end-to-end test can forget ``assert server.violations == []``.
- Under CI (``CI=true``, set by CI services and by ``.ci/run``) a skipped test fails the run: a skip there
  means a check silently did not happen. ``-rs`` (pyproject's addopts) lists every skip with its reason.
"""

from __future__ import annotations

import os
import sys

import pytest

from tests.postgres import pg_url, postgres_server  # noqa: F401 - fixtures: a real PostgreSQL for any test
from tests.s3_server import s3_bucket, s3_server  # noqa: F401 - fixtures: a real S3-compatible server for any test


@pytest.fixture(autouse=True)
def _no_real_keys(monkeypatch):
    """Tests never see a developer's real keys, and never rely on them."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "DISCORD_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def _servers() -> list | None:
    module = sys.modules.get("tests.fakediscord")  # only tests that use the fake server import it
    return None if module is None else module.SERVERS


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    servers = _servers()
    if servers is not None:
        servers.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    result = yield  # a failing test raises here and is reported as it is
    servers = _servers()
    if servers and item.get_closest_marker("discord_violations") is None:
        broken = [f"  {v}" for server in servers for v in server.unexpected_violations]
        if broken:
            raise AssertionError("the bot broke Discord's rules (FakeDiscord.violations):\n" + "\n".join(broken))
    return result


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # an xfail is reported as skipped with ``wasxfail``: that one is a known defect, not a missing check
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _under_ci() and _SKIPPED and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _under_ci() and _SKIPPED:
        terminalreporter.write_line(
            f"CI=true: {len(_SKIPPED)} test(s) skipped, and a skip fails the run under CI: "
            + ", ".join(_SKIPPED), red=True)
