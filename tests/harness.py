"""End-to-end harness: the real natty bot against the Discord-compatible server and the Hugging Face one.

    async with Natty.running(tmp_path) as n:
        ix = await n.server.slash(n.alice, n.general, "imagine", prompt="a cat")
        msg = await n.final(ix)

`n.catalog_toml` points every task at the tests' Hugging Face-compatible server (names `test-<task>`), next
to the bundled catalog with natty's own local models. `restart()` stops the bot the way a crash would (the
job engine is not told) and starts a new one on the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.client import NattyBot, make_bot
from bot.config import Settings
from models.catalog import load_catalog
from tests.fakediscord import FakeChannel, FakeDiscord, FakeInteraction, FakeMessage, FakeUser, run_bot
from tests.hf_server import HFTestServer

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.natty.test-token-0123456789abcdef"

HF_TASKS = ("text-to-image", "image-to-image", "text-to-speech", "image-to-text", "speech-to-text",
            "image-classification")
VIDEO_MODEL = "acme/tiny-t2v"  # video cannot target a URL: it goes through a provider route to the test server
VIDEO_KEY = "hf_testkeyforvideo1234567890"
ANIMATE_MODEL = "acme/tiny-i2v"  # image-to-video, through the WaveSpeed provider route


def catalog_for(hf: HFTestServer, extra: str = "") -> str:
    """A catalog file serving every task from the HF test server, each entry the default for its task."""
    lines = [f"""
[[model]]
name = "test-chat"
task = "chat"
backend = "hf"
model = "{hf.url}"
default = true
accepts_images = true
"""]
    for task in HF_TASKS:
        lines.append(f"""
[[model]]
name = "test-{task}"
task = "{task}"
backend = "hf"
model = "{hf.endpoint(task)}"
default = true
""")
    # video goes through a provider route (tests/hf_server.py): novita for text, WaveSpeed for a picture
    for task, model, provider, frames in (("text-to-video", VIDEO_MODEL, "novita", 6),
                                          ("image-to-video", ANIMATE_MODEL, "wavespeed", 5)):
        lines.append(f"""
[[model]]
name = "test-{task}"
task = "{task}"
backend = "hf"
model = "{model}"
provider = "{provider}"
api_key_env = "TEST_VIDEO_KEY"
default = true
[model.params]
num_frames = {frames}
""")
    lines.append(f"""
[[model]]
name = "test-music"
task = "text-to-audio"
backend = "hf"
model = "{hf.endpoint('text-to-speech')}"
default = true
""")
    return "\n".join(lines) + extra


@contextlib.contextmanager
def provider_route(hf: HFTestServer):
    """Route the novita provider's requests for VIDEO_MODEL to the test server, as the router would."""
    import os

    from huggingface_hub import constants
    from huggingface_hub.hf_api import InferenceProviderMapping
    from huggingface_hub.inference._providers import _common

    mapping = InferenceProviderMapping(provider="novita", hf_model_id=VIDEO_MODEL, providerId=VIDEO_MODEL,
                                       status="live", task="text-to-video")
    animate = InferenceProviderMapping(provider="wavespeed", hf_model_id=ANIMATE_MODEL, providerId=ANIMATE_MODEL,
                                       status="live", task="image-to-video")
    saved = constants.INFERENCE_PROXY_TEMPLATE, _common.HARDCODED_MODEL_INFERENCE_MAPPING.get("novita")
    saved_wavespeed = _common.HARDCODED_MODEL_INFERENCE_MAPPING.get("wavespeed")
    constants.INFERENCE_PROXY_TEMPLATE = hf.router_template
    _common.HARDCODED_MODEL_INFERENCE_MAPPING["novita"] = {VIDEO_MODEL: mapping}
    _common.HARDCODED_MODEL_INFERENCE_MAPPING["wavespeed"] = {ANIMATE_MODEL: animate}
    os.environ["TEST_VIDEO_KEY"] = VIDEO_KEY
    try:
        yield
    finally:
        constants.INFERENCE_PROXY_TEMPLATE = saved[0]
        for provider, kept in (("novita", saved[1]), ("wavespeed", saved_wavespeed)):
            if kept is None:
                _common.HARDCODED_MODEL_INFERENCE_MAPPING.pop(provider, None)
            else:
                _common.HARDCODED_MODEL_INFERENCE_MAPPING[provider] = kept
        os.environ.pop("TEST_VIDEO_KEY", None)


@dataclass
class Natty:
    server: FakeDiscord
    hf: HFTestServer
    settings: Settings
    bot: NattyBot | None = None
    users: dict[str, FakeUser] = field(default_factory=dict)
    _stack: contextlib.AsyncExitStack | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, tmp: Path, *, catalog_extra: str = "", shards: int = 1,
                      **settings: Any) -> AsyncIterator[Natty]:
        tmp.mkdir(parents=True, exist_ok=True)
        async with FakeDiscord(token=TOKEN, shards=shards) as server, HFTestServer() as hf:
            models = tmp / "models.toml"
            models.write_text(catalog_for(hf, catalog_extra))
            base = Settings(discord_token=TOKEN, database_url=f"sqlite:///{tmp}/natty.db", data_dir=tmp / "data",
                            models_file=models, api_base=server.api_base, gateway_url=server.gateway_url,
                            guild_ready_timeout=0.05, sharded=shards > 1, shard_count=shards if shards > 1 else None)
            n = cls(server, hf, replace(base, **settings))
            n.guild = server.add_guild(name="Natty Test")
            n.general = server.add_channel(n.guild, name="general")
            n.nsfw = server.add_channel(n.guild, name="after-dark", nsfw=True)
            n.alice = server.add_user("alice", guilds=[n.guild])
            n.bob = server.add_user("bob", guilds=[n.guild])
            n.mod = server.add_user("mod", guilds=[n.guild], manage_messages=True, manage_guild=True)
            try:
                with provider_route(hf):
                    await n.start()
                    yield n
            finally:
                await n.stop()

    async def start(self) -> NattyBot:
        catalog = load_catalog(self.settings.models_file)
        self.bot = make_bot(self.settings, catalog)
        self._stack = contextlib.AsyncExitStack()
        await self._stack.enter_async_context(run_bot(self.bot, self.server))
        return self.bot

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def restart(self) -> NattyBot:
        """Stop the bot without letting jobs finish (as a crash would leave them) and start a new one."""
        await self.stop()
        return await self.start()

    # --- reading what users see -------------------------------------------------------------------------

    async def final(self, ix: FakeInteraction, timeout: float = 60) -> FakeMessage:
        """The interaction's first message once the job is over (no Cancel button, not loading)."""

        def done(ix: FakeInteraction) -> bool:
            msg = ix.original
            return bool(msg and msg.has_body and not msg.loading
                        and not any(b.label == "Cancel" for b in msg.buttons)
                        and not msg.content.startswith(("⏳", "⚙️")))

        await ix.wait_final(done, timeout=timeout)
        assert ix.original is not None
        return ix.original

    async def wait(self, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        return await self.server.wait_for(predicate, timeout=timeout)

    def channel_messages(self, channel: FakeChannel) -> list[FakeMessage]:
        return [m for m in channel.messages if not m.deleted]


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)
