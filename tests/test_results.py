"""The results store: result files in the data folder by default, or in an S3-compatible object store that every
process shares. The object store is a real S3-compatible server (moto_server, tests/s3_server.py), not a mock;
tests/test_e2e_results.py runs the bot on it."""

from __future__ import annotations

import pytest

from bot.jobs.results import LocalResults, S3Results, open_results, ref_of
from tests.s3_server import Bucket


def test_local_results_keep_files_where_records_always_pointed(tmp_path):
    store = open_results(None, None, tmp_path / "data")  # no NATTY_RESULTS_URL: the data folder
    assert isinstance(store, LocalResults)
    ref = store.put("job1", "image.png", b"png bytes")
    assert ref == str(tmp_path / "data" / "results" / "job1" / "image.png")
    assert store.get(ref) == b"png bytes"
    with pytest.raises(FileNotFoundError):
        store.get(str(tmp_path / "data" / "results" / "job1" / "gone.png"))
    with pytest.raises(FileNotFoundError, match="NATTY_RESULTS_URL"):
        store.get("s3://elsewhere/results/job1/image.png")
    assert ref_of({"path": ref, "filename": "image.png"}) == ref  # a record from before the store
    assert ref_of({"ref": "s3://b/k", "filename": "image.png"}) == "s3://b/k"


def test_s3_results_round_trip_through_a_real_s3_server(s3_bucket: Bucket, tmp_path):
    store = open_results(s3_bucket.url, s3_bucket.endpoint, tmp_path / "data")
    assert isinstance(store, S3Results)
    ref = store.put("job1", "image_2.png", b"\x89PNG bytes")
    assert ref == f"s3://{s3_bucket.name}/results/job1/image_2.png"
    assert s3_bucket.keys() == ["results/job1/image_2.png"]
    assert store.get(ref) == b"\x89PNG bytes"
    with pytest.raises(FileNotFoundError):
        store.get(f"s3://{s3_bucket.name}/results/job1/gone.png")
    old = tmp_path / "image.png"  # a record's file from before NATTY_RESULTS_URL was set
    old.write_bytes(b"kept locally")
    assert store.get(str(old)) == b"kept locally"
    # a bucket without a prefix keeps <job>/<name> at its top
    bare = S3Results(f"s3://{s3_bucket.name}", s3_bucket.endpoint)
    assert bare.put("job2", "audio.wav", b"RIFF") == f"s3://{s3_bucket.name}/job2/audio.wav"
