"""Which model a job uses when nobody names one, as operators and members meet it: the operator's
`default = true` beats the bundled defaults whether or not those can run (HF_TOKEN set or unset), a server's
/settings default beats the operator's, and /imagine, /chat, /help and `natty generate` all say and do the same."""

from __future__ import annotations

import pytest

from bot.generate import generate_once
from bot.ui.provenance import read as read_provenance
from tests.harness import Natty
from tests.test_e2e_settings import admin

FAKE_TOKEN = "hf_" + "k" * 34


def marked_default(help_reply) -> list[str]:
    """The models /help marks as the ones a job uses when nobody names one."""
    field = next(f for f in help_reply.embeds[0]["fields"] if f["name"] == "Models on this server")
    return [part.split("__")[1] for part in field["value"].replace("\n", ", ").split(", ")
            if "(used when you name none)" in part]


@pytest.mark.parametrize("token", [None, FAKE_TOKEN], ids=["no-hf-token", "hf-token"])
async def test_the_operators_default_is_what_every_door_uses_until_a_server_chooses(
        tmp_path, monkeypatch, capsys, token):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
    async with Natty.running(tmp_path) as n:
        # with a token the bundled defaults (hosted on Hugging Face) could run too; they must not be chosen
        assert n.bot.policy.can_run("flux-schnell")[0] is bool(token)
        assert n.bot.policy.can_run("llama-3.3-70b")[0] is bool(token)
        await admin(n, "nsfw", classifier="test-image-classification")  # the bundled one would need the network

        image = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a kite"))
        assert read_provenance(image.attachments[0].data)["natty"].model == "test-text-to-image"
        chat = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="hello"))
        assert chat.content.startswith("You said: hello")
        shown = marked_default(await (await n.server.slash(n.alice, n.general, "help")).response())
        assert "test-text-to-image" in shown and "test-chat" in shown

        out = tmp_path / "generated.png"
        assert await generate_once(n.bot.settings, n.bot.catalog, "text-to-image", "a kite", out=out) == 0
        assert "queued" in capsys.readouterr().err.split(" on test-text-to-image")[0]  # what /imagine picked

        await admin(n, "model", task="text-to-image", model="natty-pixelcnn")
        again = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a seven"))
        assert read_provenance(again.attachments[0].data)["natty"].model == "natty-pixelcnn"
        shown = marked_default(await (await n.server.slash(n.alice, n.general, "help")).response())
        assert "natty-pixelcnn" in shown and "test-text-to-image" not in shown
        assert n.server.violations == []
