"""Where result files live: one store that every process reads and writes, so any process answers /show and buttons.

A job's record keeps a `ref` per file (a string the store wrote); reading it back goes through the same store.
`LocalResults` (the default) keeps files under the data folder, as natty always has: refs are file paths. With
NATTY_RESULTS_URL=s3://bucket/prefix, `S3Results` keeps them in an S3-compatible object store (AWS S3, MinIO,
Ceph, R2, ...; NATTY_S3_ENDPOINT names a non-AWS one) through boto3, which is imported only then.

The calls block (disk or network): callers run them in a thread, never on the event loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

S3_SCHEME = "s3://"


class Results(Protocol):
    def put(self, job_id: str, name: str, data: bytes) -> str:
        """Keep `data` as the file `name` of job `job_id`; returns the ref a record keeps to read it back."""
        ...

    def get(self, ref: str) -> bytes:
        """The bytes of a ref `put` returned. Raises FileNotFoundError when they are gone."""
        ...


def ref_of(item: dict[str, Any]) -> str:
    """The ref of one file of a job's result; records made before the store kept a local `path` instead."""
    return str(item.get("ref") or item["path"])


def _read_local(ref: str) -> bytes:
    if ref.startswith(S3_SCHEME):
        raise FileNotFoundError(f"{ref} is in an object store, and NATTY_RESULTS_URL is not set here")
    return Path(ref).read_bytes()


class LocalResults:
    """Files under `data_dir`/results/<job id>/<name>; a ref is the file's path. Only one machine sees them."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "results"

    def put(self, job_id: str, name: str, data: bytes) -> str:
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return str(folder / name)

    def get(self, ref: str) -> bytes:
        return _read_local(ref)


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix"); the prefix may be empty."""
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")


class S3Results:
    """Objects s3://bucket/prefix/<job id>/<name> in an S3-compatible store; a ref is the object's s3:// URL.

    Credentials and region come from boto3's usual places (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_REGION, a profile, an instance role). Refs to local files (records from before the store was set) are
    still read from this machine's disk."""

    def __init__(self, url: str, endpoint: str | None = None) -> None:
        import boto3  # only a bot with NATTY_RESULTS_URL needs it (the `s3` extra)
        from botocore.config import Config

        self.bucket, self.prefix = parse_s3_url(url)
        # one client for every thread: boto3 clients are thread-safe (sessions are not, so make it here, once)
        self._client = boto3.client("s3", endpoint_url=endpoint,
                                    config=Config(retries={"max_attempts": 5, "mode": "standard"}))
        self._missing = (self._client.exceptions.NoSuchKey, self._client.exceptions.NoSuchBucket)

    def put(self, job_id: str, name: str, data: bytes) -> str:
        key = "/".join(p for p in (self.prefix, job_id, name) if p)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"{S3_SCHEME}{self.bucket}/{key}"

    def get(self, ref: str) -> bytes:
        if not ref.startswith(S3_SCHEME):
            return _read_local(ref)
        bucket, key = parse_s3_url(ref)
        try:
            body = self._client.get_object(Bucket=bucket, Key=key)["Body"]
        except self._missing as exc:
            raise FileNotFoundError(f"{ref}: {exc}") from exc
        with body:
            data: bytes = body.read()
        return data


def open_results(url: str | None, endpoint: str | None, data_dir: Path) -> Results:
    """The store the settings name: the object store of NATTY_RESULTS_URL (`url`, at NATTY_S3_ENDPOINT), else the
    data folder."""
    return S3Results(url, endpoint) if url else LocalResults(data_dir)
