"""The real `python -m bot` process on Postgres (DATABASE_URL=postgresql://..., a real server: tests/postgres.py):
the migrations run at start, a job killed mid-run with SIGKILL is run again and delivered after the restart, and
the database's password never reaches the logs."""

import signal

from tests.fakediscord import FakeDiscord
from tests.harness import TOKEN, catalog_for
from tests.hf_server import HFTestServer
from tests.postgres import PASSWORD
from tests.test_e2e_restart import bot_env, start_bot, stop_bots


async def test_a_job_survives_a_crash_on_postgres(tmp_path, pg_url):
    async with FakeDiscord(token=TOKEN) as server, HFTestServer(token_delay=0.15) as hf:
        models = tmp_path / "models.toml"
        models.write_text(catalog_for(hf))
        guild = server.add_guild()
        chan = server.add_channel(guild)
        alice = server.add_user("alice", guilds=[guild])
        env = bot_env(server, tmp_path, models, pg_url)
        log = tmp_path / "bot.log"
        proc = await start_bot(env, log)
        try:
            await server.ready(timeout=60)
            words = " ".join(f"w{i}" for i in range(25))
            ix = await server.slash(alice, chan, "chat", prompt=f"on postgres {words}")
            await server.wait_for(lambda: ix.original and "You said" in ix.original.content, timeout=30)
            proc.send_signal(signal.SIGKILL)  # mid-stream: the job's row says running
            await proc.wait()
            proc = await start_bot(env, log)
            await ix.wait_final(lambda ix: ix.original and ix.original.content.startswith("You said")
                                and "AI-generated" in ix.original.content, timeout=60)
            assert ix.original.content.split("\n")[0] == f"You said: on postgres {words}"
            assert server.violations == []
        finally:
            await stop_bots(proc)
    text = log.read_text()
    assert "Running upgrade 0002 -> 0003" in text  # the first start migrated the empty database
    assert "recovered into the queue" in text and "running it again" in text
    assert PASSWORD not in text and TOKEN not in text
