"""Results in an S3-compatible object store (NATTY_RESULTS_URL, NATTY_S3_ENDPOINT) as members see them: /show and
buttons work whichever process or machine handles them, and results recorded before the store still deliver. The
store is a real S3-compatible server (moto_server, tests/s3_server.py)."""

from __future__ import annotations

import io
import time
from dataclasses import replace

import pytest
from PIL import Image, ImageChops

from bot.config import ConfigError, load_settings, secrets_of
from bot.jobs.job import Job, JobState
from tests.harness import TOKEN, Natty
from tests.hf_server import draw_png
from tests.s3_server import Bucket


def same_pixels(a: bytes, b: bytes) -> bool:
    x, y = Image.open(io.BytesIO(a)).convert("RGB"), Image.open(io.BytesIO(b)).convert("RGB")
    return x.size == y.size and ImageChops.difference(x, y).getbbox() is None


def test_results_url_and_endpoint_are_checked_one_line_each():
    env = {"DISCORD_TOKEN": TOKEN}
    ok = load_settings({**env, "NATTY_RESULTS_URL": "s3://natty-results/prod",
                        "NATTY_S3_ENDPOINT": "http://minio:9000"}, env_file=None)
    assert (ok.results_url, ok.s3_endpoint) == ("s3://natty-results/prod", "http://minio:9000")
    for bad, expected in [
        ({"NATTY_RESULTS_URL": "https://natty-results/x"}, "NATTY_RESULTS_URL='https://natty-results/x' must be s3://"),
        ({"NATTY_RESULTS_URL": "s3://Natty_Results"}, "the bucket 3 to 63 lowercase letters"),
        ({"NATTY_RESULTS_URL": "s3://ok-bucket", "NATTY_S3_ENDPOINT": "minio:9000"},
         "NATTY_S3_ENDPOINT='minio:9000' must start with http:// or https://"),
        ({"NATTY_S3_ENDPOINT": "http://minio:9000"}, "NATTY_S3_ENDPOINT is set but NATTY_RESULTS_URL is not"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_settings({**env, **bad}, env_file=None)
        (problem,) = caught.value.problems
        assert expected in problem and "\n" not in problem


def test_the_object_stores_keys_never_reach_the_logs():
    settings = load_settings({"DISCORD_TOKEN": TOKEN, "AWS_ACCESS_KEY_ID": "AKIANATTYTESTKEY01",
                              "AWS_SECRET_ACCESS_KEY": "natty/secret+access/key"}, env_file=None)
    assert {"AKIANATTYTESTKEY01", "natty/secret+access/key"} <= set(secrets_of(settings))


async def test_results_in_the_object_store_are_shown_and_varied_by_another_machine(s3_bucket: Bucket, tmp_path):
    async with Natty.running(tmp_path, results_url=s3_bucket.url, s3_endpoint=s3_bucket.endpoint) as n:
        msg = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse"))
        (made,) = msg.attachments
        (job,) = await n.bot.storage.recent_jobs(n.alice.id)
        assert s3_bucket.keys() == [f"results/{job.id}/image.png"]
        assert job.result is not None and job.result["files"] == [
            {"ref": f"s3://{s3_bucket.name}/results/{job.id}/image.png", "filename": "image.png"}]
        assert not (tmp_path / "data" / "results").exists()  # nothing only this machine could read

        # another machine: the same database and bucket, a data folder of its own
        n.settings = replace(n.settings, data_dir=tmp_path / "other-machine")
        await n.restart()
        shown = await (await n.server.slash(n.alice, n.general, "show", job=job.id)).response()
        (again,) = shown.attachments
        assert again.filename == "image.png" and same_pixels(again.data, made.data)
        varied = await n.final(await n.server.press(n.alice, msg, label="Vary"))
        assert varied.attachments and "a lighthouse" in varied.content
        varied_job = next(j for j in await n.bot.storage.recent_jobs(n.alice.id) if j.task == "image-to-image")
        assert f"results/{varied_job.id}/image.png" in s3_bucket.keys()
        assert not (tmp_path / "other-machine" / "results").exists()
        assert n.server.violations == []


async def test_a_result_recorded_before_the_store_still_delivers(s3_bucket: Bucket, tmp_path):
    async with Natty.running(tmp_path, results_url=s3_bucket.url, s3_endpoint=s3_bucket.endpoint) as n:
        old = tmp_path / "data" / "results" / "oldjob000001" / "image.png"
        old.parent.mkdir(parents=True)
        old.write_bytes(draw_png("an old result", 64, 64, 3))
        record = Job(id="oldjob000001", user_id=n.alice.id, guild_id=n.guild.id, channel_id=n.general.id,
                     task="text-to-image", model="test-text-to-image", prompt="an old result", state=JobState.DONE,
                     finished_at=time.time(),
                     result={"kind": "image", "meta": {}, "files": [{"path": str(old), "filename": "image.png"}]})
        await n.bot.storage.insert_job(record)
        shown = await (await n.server.slash(n.alice, n.general, "show", job=record.id)).response()
        (att,) = shown.attachments
        assert att.filename == "image.png" and same_pixels(att.data, old.read_bytes())
        assert n.server.violations == []
