"""A model's availability follows its backend while the bot runs: down at boot and up later, it comes back
without a restart; up at boot and down later, the first failed job makes the bot say so to the next users at
once, and the backoff brings it back."""

import asyncio
import contextlib
import logging
import socket

from tests.harness import Natty

DOOR_CHAT = """
[[model]]
name = "door-chat"
task = "chat"
backend = "hf"
model = "http://127.0.0.1:{port}"
"""


class Door:
    """A TCP forwarder to the HF test server on a port of its own, opened and closed by the test: the model
    server going up and down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        with socket.socket() as s:  # a free port; nothing listens on it until open()
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:  # kept-alive connections die with the server
                writer.close()
            self.writers.clear()
            await self.server.wait_closed()
            self.server = None


async def test_a_model_down_at_boot_comes_back_and_one_that_goes_down_is_reported_at_once(tmp_path, caplog):
    async with Natty.running(tmp_path, recheck_seconds=300.0, recheck_min_seconds=0.2) as n:
        door = Door(n.hf.port)
        (tmp_path / "models.toml").write_text((tmp_path / "models.toml").read_text()
                                              + DOOR_CHAT.format(port=door.port))
        caplog.set_level(logging.INFO, "natty.availability")
        bot = await n.restart()  # the model server is down while the bot starts
        try:
            assert bot.availability["door-chat"][0] is False
            ix = await n.server.slash(n.alice, n.general, "chat", prompt="anyone there?", model="door-chat")
            refusal = await n.final(ix)
            assert "**door-chat** cannot run right now" in refusal.content

            await door.open()  # it comes up: no restart, and no five-minute wait (interval is 300 s)
            await n.wait(lambda: bot.availability["door-chat"][0], timeout=20)
            assert "model door-chat can run again" in caplog.text
            ix = await n.server.slash(n.alice, n.general, "chat", prompt="hello door", model="door-chat")
            assert (await n.final(ix)).content.startswith("You said: hello door")

            await door.close()  # it goes down again: the first job fails, and the bot re-checks at once
            ix = await n.server.slash(n.alice, n.general, "chat", prompt="still there?", model="door-chat")
            failed = await n.final(ix)
            assert "You said" not in failed.content and failed.content.startswith("⚠️")
            await n.wait(lambda: not bot.availability["door-chat"][0], timeout=20)
            assert "model door-chat cannot run now" in caplog.text
            ix = await n.server.slash(n.bob, n.general, "chat", prompt="hello?", model="door-chat")
            assert "**door-chat** cannot run right now" in (await n.final(ix)).content

            checks = bot.models_watch.checks
            await door.open()  # and back once more, by the backoff
            await n.wait(lambda: bot.availability["door-chat"][0], timeout=20)
            assert bot.models_watch.checks > checks
            # the other models were not probed again meanwhile: their next check is minutes away
            assert bot.availability["test-chat"][0]
        finally:
            await door.close()
        assert n.server.violations == []
