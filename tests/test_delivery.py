"""Results fit Discord: text splits cleanly, files shrink to the upload limit, embeds are clamped."""

from __future__ import annotations

import io
import random
import re

import discord
import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from bot.ui import delivery
from bot.ui.delivery import (
    NO_MENTIONS,
    clamp_embed,
    clamp_embeds,
    human_size,
    plan_text_messages,
    requester_only,
    split_text,
)
from bot.ui.provenance import Provenance, read, stamp
from bot.ui.uploads import Fitted, TooLarge, audio_duration, fit_file, fit_files, to_discord_audio

# ------------------------------------------------------------------------------------------ helpers

FENCE = re.compile(r"^ {0,3}(`{3,})([^`]*)$")
CLOSE = re.compile(r"^ {0,3}(`{3,})\s*$")


def fence_state(text: str) -> str | None:
    """The fence still open at the end of text (its backticks), or None: CommonMark's rule."""
    open_ticks: str | None = None
    for line in text.split("\n"):
        if open_ticks is None and (m := FENCE.match(line)):
            open_ticks = m.group(1)
        elif open_ticks is not None and (m := CLOSE.match(line)) and len(m.group(1)) >= len(open_ticks):
            open_ticks = None
    return open_ticks


def content_lines(text: str) -> list[str]:
    """Non-fence lines, without surrounding whitespace: what a reader sees as content."""
    return [line.strip() for line in text.split("\n") if line.strip() and not line.lstrip().startswith("```")]


WORDS = ["cat", "naïve", "日本語", "👍🏽", "👨‍👩‍👧", "🇫🇷", "e\u0301", "@everyone", "**bold**", "`x`", "a" * 30]


def random_document(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.45:
            lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(rng.randint(1, 6))]
            parts.append("\n".join(lines))
        elif kind < 0.55:
            parts.append("x" * rng.randint(100, 3000))  # a line with nowhere to break
        elif kind < 0.95:
            lang = rng.choice(["python", "js", "", "c++", "rust"])
            ticks = rng.choice(["```", "```", "````"])
            body = []
            for _ in range(rng.randint(1, 60)):
                indent = " " * rng.choice([0, 4, 8])
                body.append(indent + " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 12))))
            if ticks == "````":
                body.insert(len(body) // 2, "```")  # a fence line inside a longer fence is content
            parts.append(f"{ticks}{lang}\n" + "\n".join(body) + f"\n{ticks}")
        else:
            parts.append("```python\nunterminated = True\n" + "y = 1\n" * rng.randint(0, 200))
            break
    sep = rng.choice(["\n\n", "\n", "\r\n\r\n"])
    return sep.join(parts)


# --------------------------------------------------------------------------------------- split_text


@pytest.mark.parametrize("seed", range(250))
def test_split_text_properties_hold_for_generated_documents(seed: int) -> None:
    rng = random.Random(seed)
    text = random_document(rng)
    limit = rng.choice([60, 120, 400, 2000])
    chunks = split_text(text, limit)

    assert chunks, "non-blank text gives at least one message"
    for chunk in chunks:
        assert len(chunk) <= limit
        assert chunk.strip()
        assert fence_state(chunk) is None, f"unbalanced fence in {chunk!r}"
    # Nothing lost, duplicated or reordered: the content reads the same, whitespace aside.
    joined = "".join(content_lines("\n".join(chunks)))
    original = "".join(content_lines(text.replace("\r\n", "\n")))
    assert re.sub(r"\s+", "", joined) == re.sub(r"\s+", "", original)


def test_long_python_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"    value_{i} = compute({i})  # step {i}" for i in range(160))
    text = "Here is the code:\n\n```python\n" + code + "\n```\n\nThat is all."
    assert len(code) > 5000
    chunks = split_text(text, 2000)

    assert len(chunks) >= 3
    assert all(len(c) <= 2000 for c in chunks)
    assert chunks[0].startswith("Here is the code:")
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n") and chunk.endswith("\n```")
    assert chunks[-1].endswith("That is all.")
    # Indentation survives the reopening.
    assert all(line.startswith("    value_") for c in chunks[1:-1] for line in c.split("\n")[1:-1])


def test_line_longer_than_the_limit_is_cut_hard() -> None:
    line = "".join(random.Random(1).choice("abcdef0123456789") for _ in range(4500))
    chunks = split_text(line, 2000)
    assert [len(c) for c in chunks] == [2000, 2000, 500]
    assert "".join(chunks) == line


def test_words_are_kept_whole_when_a_paragraph_is_too_long() -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    chunks = split_text(text, 2000)
    assert all(len(c) <= 2000 for c in chunks)
    assert " ".join(chunks).split() == text.split()


def test_prefers_paragraph_breaks() -> None:
    paragraphs = [f"Paragraph {i}. " + "text " * 60 for i in range(10)]
    chunks = split_text("\n\n".join(paragraphs), 2000)
    assert all(c.startswith("Paragraph") and c.rstrip().endswith("text") for c in chunks)


def test_crlf_becomes_lf() -> None:
    text = "line one\r\nline two\r\n\r\n```py\r\nx = 1\r\n```\r\n"
    assert split_text(text) == ["line one\nline two\n\n```py\nx = 1\n```"]


def test_emoji_sequences_are_never_split() -> None:
    family, flag = "👨‍👩‍👧‍👦", "🇫🇷"
    text = (family + flag) * 400  # no spaces anywhere: only hard cuts are possible
    chunks = split_text(text, 2000)
    assert "".join(chunks) == text
    for chunk in chunks:
        assert chunk.startswith(family) and not chunk.endswith("\u200d")
        assert chunk.count("🇫") == chunk.count("🇷")  # every flag whole
        assert len(chunk) <= 2000


def test_blank_text_gives_no_messages() -> None:
    assert split_text("") == []
    assert split_text(" \n\n\t ") == []


def test_short_text_is_one_message_unchanged() -> None:
    assert split_text("hello **world**") == ["hello **world**"]


def test_unterminated_fence_is_closed() -> None:
    chunks = split_text("```python\nprint(1)\n" + "x = 2\n" * 500, 500)
    assert all(fence_state(c) is None and len(c) <= 500 for c in chunks)
    assert chunks[-1].endswith("\n```")


# ------------------------------------------------------------------------------- plan_text_messages


def test_short_text_is_sent_without_attachment() -> None:
    plan = plan_text_messages("hi there")
    assert plan.chunks == ["hi there"] and plan.attachment is None and not plan.truncated


def test_very_long_text_is_attached_and_the_messages_point_to_it() -> None:
    text = "\n\n".join(f"Paragraph {i}: " + "lorem ipsum " * 40 for i in range(40))
    plan = plan_text_messages(text, max_messages=4)

    assert plan.attachment == ("response.md", text.encode("utf-8"))
    assert len(plan.chunks) == 4 and plan.truncated
    assert plan.chunks[-1].endswith("… (continued in response.md)")
    assert all(len(c) <= 2000 for c in plan.chunks)


def test_notice_fits_even_when_the_last_message_is_full() -> None:
    text = "```\n" + "0123456789 " * 2000 + "\n```"
    plan = plan_text_messages(text, max_messages=2)
    assert len(plan.chunks) == 2
    assert all(len(c) <= 2000 and fence_state(c) is None for c in plan.chunks)
    assert plan.chunks[-1].endswith("(continued in response.md)")


def test_text_over_the_character_threshold_is_also_attached() -> None:
    text = "word " * 300
    plan = plan_text_messages(text, attach_over=1000)
    assert plan.attachment is not None and not plan.truncated and plan.chunks == split_text(text)


def test_empty_text_plans_nothing() -> None:
    plan = plan_text_messages("   ")
    assert plan.chunks == [] and plan.attachment is None


# -------------------------------------------------------------------------------------------- files


def noise_png(side: int, seed: int = 0, alpha: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (side, side, 4 if alpha else 3), dtype=np.uint8)
    if alpha:
        pixels[..., 3] = 128
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


def tone_wav(seconds: float, sr: int = 48000, channels: int = 2) -> bytes:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    cols = [0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t)) for f in (440, 660)[:channels]]
    out = io.BytesIO()
    sf.write(out, np.stack(cols, axis=1).astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return out.getvalue()


def test_file_under_the_limit_is_returned_unchanged() -> None:
    data = noise_png(32)
    fitted = fit_file(data, "a.png", 10 * 1024 * 1024)
    assert fitted == Fitted(data, "a.png", None, "image/png")


def test_oversized_noise_png_is_reencoded_and_downscaled_to_fit() -> None:
    data = noise_png(2048)  # about 12 MB
    limit = 2 * 1024 * 1024
    fitted = fit_file(data, "art.png", limit)

    assert len(fitted.data) <= limit
    assert fitted.note and fitted.note.startswith("Re-encoded from PNG (12 MB) to ")
    assert "this server's 2 MB limit" in fitted.note
    image = Image.open(io.BytesIO(fitted.data))
    image.load()
    assert fitted.filename == f"art.{'jpg' if image.format == 'JPEG' else 'webp'}"
    assert fitted.content_type == Image.MIME[image.format]


def test_format_is_read_from_the_bytes_not_the_name() -> None:
    fitted = fit_file(noise_png(512), "misnamed.jpg", 300_000)
    assert fitted.note and fitted.note.startswith("Re-encoded from PNG")


def test_transparent_png_stays_transparent() -> None:
    fitted = fit_file(noise_png(512, alpha=True), "sticker.png", 200_000)
    image = Image.open(io.BytesIO(fitted.data))
    assert image.format == "WEBP" and image.mode == "RGBA" and len(fitted.data) <= 200_000


def test_image_that_cannot_fit_raises_too_large_with_a_clear_message() -> None:
    data = noise_png(512)
    with pytest.raises(TooLarge) as caught:
        fit_file(data, "art.png", 1000)
    err = caught.value
    assert (err.size, err.limit, err.filename) == (len(data), 1000, "art.png")
    assert err.user_message.startswith(f"art.png is {human_size(len(data))}, over this server's 1000 B upload limit")


@pytest.mark.parametrize("locale, words", [("en-US", "could not be read as an image"),
                                           ("pt-BR", "não foi possível lê-lo como imagem")])
def test_an_oversized_unreadable_image_is_too_large_with_a_reason_not_a_crash(locale: str, words: str) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20  # a PNG signature, then garbage
    with pytest.raises(TooLarge) as caught:
        fit_file(broken, "art.png", 1000)
    assert caught.value.message(locale).startswith("art.png ") and words in caught.value.message(locale)
    notes = fit_files([("art.png", broken)], 1000, locale=locale).skipped
    assert len(notes) == 1 and words in notes[0]


def test_video_and_unknown_files_are_never_reencoded() -> None:
    mp4 = b"\0\0\0\x18ftypisom" + b"\0" * 5000
    with pytest.raises(TooLarge, match="videos are not re-encoded"):
        fit_file(mp4, "clip.mp4", 1000)
    with pytest.raises(TooLarge, match=r"^blob.bin is 4.9 KB, over this server's 1000 B upload limit\.$"):
        fit_file(b"\1" * 5000, "blob.bin", 1000)


def test_oversized_wav_becomes_compressed_audio_of_the_same_length() -> None:
    data = tone_wav(40.0)  # about 7.3 MB, long enough to be projected from an excerpt
    limit = 400_000
    fitted = fit_file(data, "song.wav", limit)

    assert len(fitted.data) <= limit
    assert fitted.filename in ("song.ogg", "song.mp3")
    assert fitted.note and fitted.note.startswith("Re-encoded from WAV (7.3 MB) to ")
    decoded, sr = sf.read(io.BytesIO(fitted.data))
    assert len(decoded) / sr == pytest.approx(40.0, rel=0.01)


def test_tiny_limit_forces_mono_low_bitrate() -> None:
    fitted = fit_file(tone_wav(10.0), "voice.wav", 20_000)
    assert len(fitted.data) <= 20_000 and fitted.note and "mono" in fitted.note
    assert audio_duration(fitted.data) == pytest.approx(10.0, rel=0.01)


def test_audio_that_cannot_fit_raises_too_large() -> None:
    with pytest.raises(TooLarge, match="low-bitrate mono audio"):
        fit_file(tone_wav(10.0), "voice.wav", 2_000)


def test_fit_files_caps_the_count_and_reports_what_was_left_out() -> None:
    small = noise_png(8)
    files = [(f"{i}.png", small) for i in range(12)] + [("huge.bin", b"\0" * 5000)]
    result = fit_files(files, limit=4000, max_files=10)
    assert len(result.files) == 10
    assert result.skipped == ["3 more files not attached: a message holds 10."]


def test_fit_files_turns_too_large_files_into_notes() -> None:
    result = fit_files([("a.png", noise_png(8)), ("huge.bin", b"\0" * 5000)], limit=4000)
    assert [f.filename for f in result.files] == ["a.png"]
    assert result.notes == ["huge.bin is 4.9 KB, over this server's 3.9 KB upload limit."]


def test_natty_label_survives_reencoding() -> None:
    prov = Provenance.for_prompt("a red fox", model="tiny-sd", backend="local", task="image")
    stamped = stamp(noise_png(512), "png", prov)
    fitted = fit_file(stamped, "fox.png", 300_000)
    assert fitted.note and read(fitted.data)["natty"] == prov


def test_wav_becomes_opus_for_inline_playback() -> None:
    data, ext, seconds = to_discord_audio(tone_wav(3.0, sr=44100))
    assert ext == "ogg" and b"OpusHead" in data[:100]
    assert seconds == pytest.approx(3.0)
    decoded, sr = sf.read(io.BytesIO(data))
    assert len(decoded) / sr == pytest.approx(3.0, rel=0.01)


def test_ogg_passes_through_to_discord_audio() -> None:
    ogg, _, _ = to_discord_audio(tone_wav(1.0))
    assert to_discord_audio(ogg)[:2] == (ogg, "ogg")


def test_audio_duration_of_wav() -> None:
    assert audio_duration(tone_wav(2.5, sr=16000, channels=1)) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        audio_duration(b"not audio")


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (512, "512 B"), (1536, "1.5 KB"), (10 * 1024 * 1024, "10 MB"), (12_897_485, "12.3 MB")],
)
def test_human_size(n: int, text: str) -> None:
    assert human_size(n) == text


# ------------------------------------------------------------------------------------------- embeds


def embed_size(e: dict) -> int:
    return delivery._embed_size(e)


def big_embed() -> dict:
    return {
        "title": "T" * 300,
        "description": "D" * 5000,
        "fields": [{"name": "N" * 300, "value": "V" * 2000, "inline": False} for _ in range(30)],
        "footer": {"text": "F" * 3000},
        "author": {"name": "A" * 300},
        "color": 0x5865F2,
    }


def test_clamp_embed_respects_every_limit() -> None:
    e = clamp_embed(big_embed())
    assert len(e["title"]) == 256 and e["title"].endswith("…")
    assert len(e["footer"]["text"]) == 2048 and len(e["author"]["name"]) == 256
    assert len(e["fields"]) <= 25
    assert all(len(f["name"]) <= 256 and len(f["value"]) <= 1024 for f in e["fields"])
    assert embed_size(e) <= 6000
    assert e["color"] == 0x5865F2


def test_clamp_embed_trims_description_before_fields() -> None:
    e = clamp_embed({"description": "D" * 4096, "fields": [{"name": "n", "value": "v" * 1000}] * 3})
    assert embed_size(e) == 6000
    assert len(e["fields"]) == 3 and e["description"].endswith("…")


def test_clamp_embed_drops_fields_from_the_end_when_description_is_not_enough() -> None:
    e = clamp_embed({"description": "d", "fields": [{"name": f"n{i}", "value": "v" * 1024} for i in range(7)]})
    assert embed_size(e) <= 6000 and "description" not in e
    assert [f["name"] for f in e["fields"][:5]] == ["n0", "n1", "n2", "n3", "n4"]


def test_small_embed_is_untouched() -> None:
    small = {"title": "Done", "description": "A cat.", "fields": [{"name": "Model", "value": "sdxl"}]}
    assert clamp_embed(small) == small


def test_clamp_discord_embed() -> None:
    embed = discord.Embed(title="x" * 400, description="y" * 5000)
    clamped = clamp_embed(embed)
    assert isinstance(clamped, discord.Embed)
    assert len(clamped.title or "") == 256 and len(clamped.description or "") == 4096


def test_clamp_embeds_caps_count_and_shared_total() -> None:
    embeds = [{"description": "z" * 4000} for _ in range(12)]
    out = clamp_embeds(embeds)
    assert len(out) <= 10
    assert sum(embed_size(e) for e in out) <= 6000


# ----------------------------------------------------------------------------------------- mentions


def test_no_mentions_pings_nobody() -> None:
    assert NO_MENTIONS.to_dict() == {"parse": []}


def test_requester_only_allows_just_that_user() -> None:
    assert requester_only(1234).to_dict() == {"parse": [], "users": [1234]}


def test_a_labelled_file_fits_with_its_label_on_at_any_limit():
    """The natty label carried onto a re-encoding counts against the limit (it uploads with the file)."""
    from bot.ui.provenance import Provenance, read, stamp

    prov = Provenance.for_prompt("a noisy sky", model="m", backend="hf", task="text-to-image", seed=1, job_id="j")
    rng = np.random.default_rng(7)
    pixels = (rng.random((160, 160, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    labelled = stamp(buf.getvalue(), "png", prov)
    for limit in range(12_000, 40_000, 613):
        fitted = fit_file(labelled, "sky.png", limit)
        assert len(fitted.data) <= limit, limit
        assert read(fitted.data)["natty"] is not None


def test_a_body_too_long_for_one_message_goes_on_in_the_next_each_with_its_footer() -> None:
    from bot.ui.delivery import with_footer

    body = "\n\n".join(f"Paragraph {i}. " + "The sea was grey and the boats were small. " * 12 for i in range(8))
    footer = "-# `abc123` · AI-generated"
    parts = with_footer(body, footer)
    assert len(parts) >= 3
    assert all(len(p) <= 2000 and p.endswith("\n" + footer) for p in parts)
    shown = "".join(p.removesuffix("\n" + footer) for p in parts)
    assert all(shown.count(f"Paragraph {i}.") == 1 for i in range(8))  # nothing cut off, nothing twice
    assert with_footer("short", footer) == ["short\n" + footer]
