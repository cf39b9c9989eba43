"""The commands on the local backend: natty's own models (bundled checkpoints) and transformers pipelines
(tiny models built here), served through the job engine with progress, in the worker process."""

import io

import pytest
import soundfile
from PIL import Image

from bot.ui.provenance import read as read_provenance
from tests.harness import Natty
from tests.hf_server import draw_png, tone
from tests.tiny_pipelines import build_tiny_captioner, build_tiny_gpt2, build_tiny_vits, build_tiny_whisper


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("tiny")
    folders = {
        "chat": build_tiny_gpt2(root / "gpt2"),
        "image-to-text": build_tiny_captioner(root / "captioner"),
        "speech-to-text": build_tiny_whisper(root / "whisper"),
        "text-to-speech": build_tiny_vits(root / "vits"),
    }
    return "".join(f"""
[[model]]
name = "tiny-{task}"
task = "{task}"
backend = "local"
model = "{folder}"
[model.params]
max_new_tokens = 8
""" for task, folder in folders.items())


def progress_edits(msg) -> list[str]:
    return [payload.get("content") or "" for _, payload in msg.edits]


async def test_own_models_draw_continue_and_play_with_progress(tmp_path):
    async with Natty.running(tmp_path, edit_interval=0.1) as n:
        digit = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="7",
                                                   model="natty-pixelcnn", seed=3), timeout=120)
        (png,) = digit.attachments
        assert Image.open(io.BytesIO(png.data)).size == (256, 256)
        assert read_provenance(png.data)["natty"].model == "natty-pixelcnn"
        previews = [p for _, p in digit.edits if "row" in (p.get("content") or "")
                    and any(a.get("filename") == "preview.png" for a in p.get("attachments", []))]
        # the first local job starts the worker process, so "starting" is shown well before the rows arrive
        assert previews  # the rows drawn so far, shown while it samples
        tune = await n.final(await n.server.slash(n.alice, n.general, "music", prompt="C major chord",
                                                  model="natty-wavenet", seconds=1), timeout=120)
        (ogg,) = tune.attachments
        assert abs(soundfile.info(io.BytesIO(ogg.data)).duration - 1.0) < 0.05
        assert any("%" in c for c in progress_edits(tune))
        for model in ("natty-gpt", "natty-rnn"):
            text = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="The lighthouse",
                                                      model=model), timeout=120)
            # the sample is unseeded, so its first line may be short: count the whole answer above the footer
            body = "\n".join(line for line in text.content.split("\n") if not line.startswith("-#"))
            assert len(body.strip()) > 20 and model in text.content
            assert text.content.startswith("**The lighthouse**")  # the reply reads on from the member's words
            # the reply says what made it: a continuation in Shakespeare's manner, not an assistant's answer
            assert "-# natty's own offline model continued your words in the style of Shakespeare" in text.content
        help_embed = (await (await n.server.slash(n.alice, n.general, "help")).response()).embeds[0]
        names = [f["name"] for f in help_embed["fields"]]
        start = names.index("natty's own offline models")  # then continuation fields, as many as the lines need
        fields = [f["value"] for f in help_embed["fields"][start:]]
        offline = "\n".join(fields)
        assert "**natty-gpt**: natty's own small GPT" in offline and "hosted models" in offline
        for name in ("natty-rnn", "natty-pixelcnn", "natty-scenes", "natty-wavenet", "natty-tunes"):
            assert f"**{name}**: natty's own" in offline  # every offline model, with what it can do
        assert all(len(v) <= 1024 for v in fields)
        no_digit = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a cat",
                                                      model="natty-pixelcnn"))
        assert "prompt a digit" in no_digit.content.lower() or "digit" in no_digit.content
        assert n.server.violations == []


async def test_transformers_pipelines_serve_the_commands(tmp_path, tiny_models):
    async with Natty.running(tmp_path, catalog_extra=tiny_models) as n:
        chat = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="hi", model="tiny-chat"),
                             timeout=120)
        assert "tiny-chat" in chat.content
        spoken = await n.final(await n.server.slash(n.alice, n.general, "speak", text="hello",
                                                    model="tiny-text-to-speech"), timeout=120)
        assert soundfile.info(io.BytesIO(spoken.attachments[0].data)).duration > 0
        caption = await n.final(await n.server.slash(n.alice, n.general, "describe",
                                                     image=("x.png", draw_png("x", 64, 64, 1), "image/png"),
                                                     model="tiny-image-to-text"), timeout=120)
        assert "**Caption:**" in caption.content
        heard = await n.final(await n.server.slash(n.alice, n.general, "transcribe",
                                                   audio=("a.wav", tone(1.0), "audio/wav"),
                                                   model="tiny-speech-to-text"), timeout=120)
        assert "tiny-speech-to-text" in heard.content
        assert n.server.violations == []
