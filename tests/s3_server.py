"""A real S3-compatible server for the tests: moto's server (`moto_server`, from the dev extra's moto[server]) as
a process on a free port of 127.0.0.1, started once per session. Every test that asks for `s3_bucket` gets an
empty bucket of its own and test credentials in the environment (never a developer's own).

    def test_something(s3_bucket):  # the fixtures come through tests/conftest.py
        store = S3Results(s3_bucket.url, s3_bucket.endpoint)
"""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_buckets = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The endpoint URL of a running moto_server."""
    binary = Path(sys.executable).with_name("moto_server")
    found = str(binary) if binary.exists() else shutil.which("moto_server")
    if found is None:
        pytest.skip("moto_server is not installed (pip install 'moto[server]', part of the dev extra)")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto_server.log"  # a file, not a pipe: it logs every request
    with log.open("wb") as out:
        proc = subprocess.Popen([found, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited: {log.read_text()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not answer within 30 s") from None
                time.sleep(0.05)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Bucket:
    name: str
    endpoint: str
    client: Any  # a boto3 S3 client of the test's own, to look at what the bot stored

    @property
    def url(self) -> str:
        return f"s3://{self.name}/results"

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Bucket:
    """A new, empty bucket on the moto server, with test credentials in the environment boto3 reads."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "natty-test-access-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "natty-test-secret-key")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    name = f"natty-test-{next(_buckets)}"
    client.create_bucket(Bucket=name)
    return Bucket(name, s3_server, client)
