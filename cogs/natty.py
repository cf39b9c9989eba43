"""/natty: play Natty or Not, the leaderboard, the pool of real items, and /natty check.

The game's logic lives in bot/community/game.py; this cog posts rounds, takes votes (buttons whose custom_id carries
the game, round, item and choice, so they work after a restart) and runs one timer task per open game. The
timer's deadline is in the database: on load the cog resumes every open game, and a round whose deadline
passed while the bot was down is revealed at once.

Languages: everything a game posts for the whole channel (the announcement, rounds, vote buttons, reveals,
final scores) is in the server's language, kept in the game when it starts (`Game.locale`); the leaderboard is
in the server's language too. Replies to one person (a vote's confirmation, a refusal, `/natty check`'s
findings) are in that person's language.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.community import check as proof
from bot.community import game as g
from bot.community.sessions import Sessions
from bot.i18n import t
from bot.jobs.job import JobState
from bot.jobs.results import ref_of
from bot.policy import Origin, may_manage, require_configure
from bot.ui import delivery
from bot.ui.provenance import MAX_PIXELS, MAX_TEXT_MEMORY, TooLargeToRead
from bot.ui.provenance import read as read_provenance
from cogs.common import lang, makes, natty, server_lang

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.game")

PIXELCNN = ("natty-pixelcnn",)
DETECTOR = "ai-image-detector"
STRENGTH_COLOURS = {"none": 0x99AAB5, "weak": 0xF1C40F, "strong": 0x2ECC71}


def _too_large(filename: str, loc: str) -> str:
    return t("check.too_large", loc, filename=filename, pixels=f"{MAX_PIXELS // 1_000_000}",
             text=MAX_TEXT_MEMORY >> 20)


def kind_name(kind: str, locale: str | None) -> str:
    """What a round's items are, in words ("handwritten digits")."""
    return t(f"game.kind.{kind}", locale) if kind in g.KINDS else kind


def _choice_label(n_items: int, item: int, choice: str, locale: str | None = None) -> str:
    word = t("game.button_natural" if choice == g.NATURAL else "game.button_ai", locale)
    return word if n_items == 1 else f"{item + 1}: {word}"


class VoteButton(discord.ui.DynamicItem[discord.ui.Button], template=r"nn:(?P<game>[a-z0-9]+):(?P<round>[0-9]+):"
                                                                        r"(?P<item>[0-9]+):(?P<choice>natural|ai|end)"):
    """A vote on one item of one round, or the host's "End round"."""

    def __init__(self, game_id: str, rnd: int, item: int, choice: str, n_items: int = 1,
                 locale: str | None = None) -> None:
        button: discord.ui.Button[discord.ui.View]
        if choice == "end":
            button = discord.ui.Button(label=t("game.button_end", locale), style=discord.ButtonStyle.secondary,
                                       emoji="⏱️", custom_id=f"nn:{game_id}:{rnd}:0:end")
        else:
            style = discord.ButtonStyle.success if choice == g.NATURAL else discord.ButtonStyle.primary
            button = discord.ui.Button(label=_choice_label(n_items, item, choice, locale), style=style,
                                       emoji="🌿" if choice == g.NATURAL else "🤖",
                                       custom_id=f"nn:{game_id}:{rnd}:{item}:{choice}")
        super().__init__(button)
        self.game_id, self.rnd, self.index, self.choice = game_id, rnd, item, choice

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str], /) -> VoteButton:
        return cls(match["game"], int(match["round"]), int(match["item"]), match["choice"])

    async def callback(self, interaction: discord.Interaction) -> None:
        interaction = natty(interaction)
        cog = interaction.client.get_cog("NattyGame")
        if not isinstance(cog, NattyGame):  # not loaded
            await interaction.response.send_message(t("game.not_running", await lang(interaction)), ephemeral=True)
            return
        if self.choice == "end":
            await cog.on_end_round(interaction, self.game_id, self.rnd)
        else:
            await cog.on_vote(interaction, self.game_id, self.rnd, self.index, self.choice)


def round_view(game: g.Game, rnd: g.Round) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for i in range(len(rnd.items)):
        for choice in g.CHOICES:
            view.add_item(VoteButton(game.id, rnd.index, i, choice, len(rnd.items), game.locale))
    view.add_item(VoteButton(game.id, rnd.index, 0, "end", locale=game.locale))
    return view


@app_commands.guild_only()
class NattyGame(commands.GroupCog, group_name="natty", group_description="Natty or Not: spot the AI"):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        self.sessions = Sessions("game")  # each running game's timer task, lock and wakeup
        super().__init__()

    @property
    def storage(self):  # noqa: ANN201
        return self.bot.storage

    async def cog_load(self) -> None:
        if self.bot.role == "worker":  # gateways hold the sessions
            return
        for game_id in await g.SessionStore(self.storage, "game").open_ids():
            self.sessions.spawn(game_id, self._drive)
        if self.sessions.tasks:
            log.info("resuming %d open game(s)", len(self.sessions.tasks))

    async def cog_unload(self) -> None:
        self.sessions.cancel_all()

    # --- commands -------------------------------------------------------------------------------------------

    @app_commands.command(name="play", description="Natural or AI? Vote on each item before the timer ends")
    @app_commands.describe(rounds="How many rounds", kind="What the items are",
                           seconds="Seconds to vote in each round")
    async def play(self, interaction: discord.Interaction[NattyBot], rounds: app_commands.Range[int, 1, 10] = 3,
                   kind: Literal["digits", "text", "images", "mixed"] = "digits",
                   seconds: app_commands.Range[int, 1, 600] = 30) -> None:
        open_here = await g.SessionStore(self.storage, "game").open_ids(channel_id=interaction.channel_id)
        if open_here:
            await interaction.response.send_message(t("game.already_running", await lang(interaction)),
                                                    ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        pool = await g.RealPool(self.storage).counts(interaction.guild_id or 0)
        if kind == "digits" and not g.digits_available():
            await interaction.edit_original_response(content=t("game.no_digits", await lang(interaction)))
            return
        if kind == "images" and not pool.get("image"):
            await interaction.edit_original_response(content=t("game.no_images", await lang(interaction)))
            return
        game = g.Game(id=secrets.token_hex(5), guild_id=interaction.guild_id, channel_id=interaction.channel_id or 0,
                      host_id=interaction.user.id, kind=kind, rounds_total=rounds, seconds=float(seconds),
                      seed=secrets.randbelow(2**31), locale=await server_lang(interaction))
        await g.save_game(self.storage, game)
        loc = game.locale
        await interaction.edit_original_response(
            content=t("game.intro", loc, rounds=g.count("game.n_rounds", rounds, loc), kind=kind_name(kind, loc),
                      seconds=seconds, host=interaction.user.mention, id=game.id))
        log.info("game %s started by %s: %d rounds of %s", game.id, interaction.user.id, rounds, kind)
        self.sessions.spawn(game.id, self._drive)

    @app_commands.command(name="leaderboard", description="This server's best Natty or Not players")
    async def leaderboard_cmd(self, interaction: discord.Interaction[NattyBot]) -> None:
        rows = await g.leaderboard(self.storage, interaction.guild_id or 0)
        loc = await server_lang(interaction)  # a public post: the server's language
        if not rows:
            await interaction.response.send_message(t("game.no_scores", loc))
            return
        lines = []
        for rank, r in enumerate(rows):
            calls = r["correct"] + r["wrong"]
            accuracy = t("game.board_accuracy", loc, pct=f"{r['correct'] / calls:.0%}") if calls else ""
            lines.append(t("game.board_line", loc, rank=rank + 1, user=f"<@{r['user_id']}>", points=r["points"],
                           points_word=t("game.point_word.one" if r["points"] == 1 else "game.point_word.other", loc),
                           right=r["correct"], wrong=r["wrong"], accuracy=accuracy,
                           games=g.count("game.n_games", r["games"], loc)))
        embed = discord.Embed(title=t("game.board_title", loc), description="\n".join(lines), colour=0xF1C40F)
        await interaction.response.send_message(embed=embed)

    @app_commands.command(name="add-real", description="Add a real image or text to this server's Natty or Not pool")
    @app_commands.describe(image="A real photo or drawing (not AI-made)", text="A real text written by a person")
    @app_commands.check(require_configure)
    async def add_real(self, interaction: discord.Interaction[NattyBot], image: discord.Attachment | None = None,
                       text: app_commands.Range[str, 20, 1000] | None = None) -> None:
        if image is None and text is None:
            await interaction.response.send_message(t("game.add_real_nothing", await lang(interaction)),
                                                    ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        loc = await lang(interaction)
        pool = g.RealPool(self.storage)
        guild = interaction.guild_id or 0
        added = []
        if image is not None:
            data, problem = await self.bot.read_attachment(interaction, image, ("image",))
            if data is None:
                await self.bot.send_error(interaction, problem or "")
                return
            try:
                prov = await asyncio.to_thread(read_provenance, data)  # bounded, but CPU work: off the loop
            except TooLargeToRead:
                await interaction.edit_original_response(content=_too_large(image.filename, loc))
                return
            if prov["natty"] or prov["c2pa"] or prov["generator_hints"]:
                await interaction.edit_original_response(
                    content=t("game.real_has_ai_metadata", loc, filename=image.filename))
                return
            try:
                await pool.add(guild, "image", interaction.user.id, image=data)
            except (OSError, ValueError):
                await interaction.edit_original_response(
                    content=t("game.real_unreadable", loc, filename=image.filename))
                return
            added.append(t("game.real_an_image", loc))
        if text is not None:
            await pool.add(guild, "text", interaction.user.id, text=" ".join(text.split()))
            added.append(t("game.real_a_text", loc))
        counts = await pool.counts(guild)
        await interaction.edit_original_response(
            content=t("game.real_added", loc, added=t("settings.and", loc).join(added),
                      images=counts.get("image", 0), texts=counts.get("text", 0)))

    @app_commands.command(name="check",
                          description="What a file's metadata says about AI generation, and what it proves",
                          extras=makes({"image-classification": ()}))  # its detector's jobs
    @app_commands.describe(file="An image, audio or video file", text="A text to look up in natty's records")
    async def check(self, interaction: discord.Interaction[NattyBot], file: discord.Attachment | None = None,
                    text: str | None = None) -> None:
        if file is None and not (text or "").strip():
            await interaction.response.send_message(t("game.check_nothing", await lang(interaction)), ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        loc = await lang(interaction)  # the findings answer one person: their language
        if file is not None:
            data, problem = await self.bot.read_attachment(
                interaction, file, ("image", "audio", "video"))
            if data is None:
                await self.bot.send_error(interaction, problem or "")
                return
            try:
                finding = await self._check_file(interaction, file, data, loc)
            except TooLargeToRead:
                await interaction.edit_original_response(content=_too_large(file.filename, loc))
                return
            description = t("check.description_file", loc, filename=file.filename)
        else:
            match = await proof.natty_text_job(self.storage, text or "", interaction.guild_id)
            finding = proof.assess_text(match, loc)
            description = t("check.description_text", loc)
        embed = discord.Embed(title=f"🔍 {finding.title}", colour=STRENGTH_COLOURS[finding.strength],
                              description=description)
        embed.add_field(name=t("check.found", loc), value="\n".join(f"• {x}" for x in finding.found), inline=False)
        embed.add_field(name=t("check.proves", loc), value="\n".join(f"• {x}" for x in finding.proves),
                        inline=False)
        embed.set_footer(text=t("check.footer", loc))
        await interaction.edit_original_response(embed=delivery.clamp_embed(embed))

    async def _check_file(self, interaction: discord.Interaction[NattyBot], file: discord.Attachment, data: bytes,
                          loc: str) -> proof.Finding:
        prov = await asyncio.to_thread(read_provenance, data)  # bounded, but CPU work: off the loop
        mime = (file.content_type or mimetypes.guess_type(file.filename)[0] or "").split(";")[0]
        c2pa_report = await asyncio.to_thread(proof.verify_c2pa, data, mime) if prov["c2pa"] else None
        natty_match = None
        label = prov["natty"]
        if label is not None and label.job_id:
            job = await self.storage.get_job(label.job_id)
            visible = job is not None and (not job.ephemeral or job.user_id == interaction.user.id)
            if visible and job.state is JobState.DONE:
                for item in (job.result or {}).get("files", []):
                    if await asyncio.to_thread(self._same_pixels, data, item):
                        natty_match = t("check.pixels_match", loc, id=job.id, model=job.model,
                                        when=f"<t:{int(job.created_at)}:f>")
                        break
        detector, note = None, None
        if mime.startswith("image/"):
            detector, note = await self._detect(interaction, data, loc)
        return proof.assess_file(prov, c2pa_report, natty_match, detector, note, loc)

    async def _detect(self, interaction: discord.Interaction[NattyBot], data: bytes,
                      loc: str) -> tuple[tuple[str, list[tuple[str, float]]] | None, str | None]:
        """The AI-image detector's labels, when the catalog has one that can run here."""
        gs = await self.bot.guild_settings(interaction.guild_id)
        entry = next((e for e in self.bot.policy.models_for("image-classification", gs)
                      if e.name == DETECTOR), None)
        if entry is None or not self.bot.policy.can_run(entry.name)[0]:
            return None, None
        try:
            png = await asyncio.to_thread(g.normalize_image, data, 1024)
            # the detector is a job like any other: metered, recorded, under the server's rules
            job = await g.run_silent_job(self.bot, self.bot.origin_of(interaction, loc),
                                         task="image-classification", model=entry.name, image=png)
        except (g.GenerationFailed, OSError, ValueError) as exc:
            return None, t("check.detector_failed", loc, model=entry.name, error=exc)
        labels = [(str(label), float(score)) for label, score in (job.result or {}).get("labels", [])]
        return (entry.name, sorted(labels, key=lambda x: -x[1])), None

    # --- votes ------------------------------------------------------------------------------------------------

    async def on_vote(self, interaction: discord.Interaction[NattyBot], game_id: str, index: int, item: int,
                      choice: str) -> None:
        try:
            await self._vote(interaction, game_id, index, item, choice)
        finally:
            self.sessions.forget(game_id)

    async def _vote(self, interaction: discord.Interaction[NattyBot], game_id: str, index: int, item: int,
                    choice: str) -> None:
        async with self.sessions.lock(game_id):
            game = await g.load_game(self.storage, game_id)
            rnd = game.rounds[index] if game and index < len(game.rounds) else None
            if game is None or rnd is None or rnd.phase != "voting" or time.time() >= (rnd.deadline or 0):
                await interaction.response.send_message(t("game.round_over", await lang(interaction)), ephemeral=True)
                return
            if item >= len(rnd.items):
                await interaction.response.send_message(t("game.no_such_item", await lang(interaction)), ephemeral=True)
                return
            previous = g.cast_vote(rnd, interaction.user.id, item, choice)
            await g.save_game(self.storage, game)
        loc = await lang(interaction)
        word = t("game.word_natural" if choice == g.NATURAL else "game.word_ai", loc)
        which = t("game.the_item", loc) if len(rnd.items) == 1 else t("game.item_n", loc, n=item + 1)
        changed = t("game.changed_from", loc, was=t("game.short_natural" if previous == g.NATURAL else "game.short_ai",
                                                     loc)) if previous and previous != choice else ""
        await interaction.response.send_message(
            t("game.your_call", loc, which=which, word=word, changed=changed, until=f"<t:{int(rnd.deadline or 0)}:T>"),
            ephemeral=True)

    async def on_end_round(self, interaction: discord.Interaction[NattyBot], game_id: str, index: int) -> None:
        try:
            await self._end_round(interaction, game_id, index)
        finally:
            self.sessions.forget(game_id)

    async def _end_round(self, interaction: discord.Interaction[NattyBot], game_id: str, index: int) -> None:
        async with self.sessions.lock(game_id):
            game = await g.load_game(self.storage, game_id)
            if game is None or index >= len(game.rounds) or game.rounds[index].phase != "voting":
                await interaction.response.send_message(t("game.round_already_over", await lang(interaction)),
                                                        ephemeral=True)
                return
            if not may_manage(interaction.user.id, game.host_id, getattr(interaction, "permissions", None)):
                await interaction.response.send_message(t("game.not_host", await lang(interaction)), ephemeral=True)
                return
            game.rounds[index].deadline = time.time()
            await g.save_game(self.storage, game)
        await interaction.response.send_message(t("game.ending", await lang(interaction)), ephemeral=True)
        self.sessions.wake(game_id)

    # --- the game's timer task ---------------------------------------------------------------------------------

    async def _drive(self, game_id: str) -> None:
        """Play a game to its end: make each round, wait for its deadline, reveal, and finish."""
        await self.bot.wait_until_ready()  # the engine starts after the cogs load
        try:
            while True:
                async with self.sessions.lock(game_id):
                    game = await g.load_game(self.storage, game_id)
                    if game is None or game.state != "running":
                        return
                    rnd = game.current
                    if rnd is None or rnd.phase == "revealed":
                        if len(game.rounds) >= game.rounds_total:
                            await self._finish(game)
                            return
                        rnd = g.Round(index=len(game.rounds))
                        game.rounds.append(rnd)
                        await g.save_game(self.storage, game)
                if rnd.phase == "generating":
                    await self._open_round(game, rnd)
                    continue
                await self.sessions.wait_until(game_id, rnd.deadline or 0)
                async with self.sessions.lock(game_id):
                    game = await g.load_game(self.storage, game_id)
                    assert game is not None
                    rnd = game.rounds[rnd.index]
                    if rnd.phase == "voting" and time.time() >= (rnd.deadline or 0):
                        await self._reveal(game, rnd)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("game %s stopped on an error", game_id)
            with contextlib.suppress(Exception):
                game = await g.load_game(self.storage, game_id)
                if game is not None:
                    game.state = "failed"
                    await g.save_game(self.storage, game)
                    await self._channel(game).send(t("game.stopped", game.locale))
        finally:
            self.sessions.forget(game_id)

    def _channel(self, game: g.Game) -> discord.PartialMessageable:
        return self.bot.get_partial_messageable(game.channel_id)

    async def _open_round(self, game: g.Game, rnd: g.Round) -> None:
        """Make the round's items, then post them with the vote buttons and start its timer."""
        pool = await g.RealPool(self.storage).counts(game.guild_id or 0)
        kinds = (["digits"] if g.digits_available() else []) + ["text"] + (["images"] if pool.get("image") else [])
        rnd.kind = g.round_kind(game, rnd.index, kinds)
        rng = game.rng(rnd.index)
        truths = g.plan_truths(rng)
        try:
            rnd.items = await self._make_items(game, rnd, truths, rng)
        except g.GenerationFailed as exc:
            log.warning("game %s round %d: AI item failed: %s", game.id, rnd.index, exc)
            rnd.items = await self._make_items(game, rnd, [g.NATURAL], rng)
            rnd.note = t("game.one_item_note", game.locale, error=str(exc)[:150])
        rnd.phase, rnd.deadline = "voting", time.time() + game.seconds
        async with self.sessions.lock(game.id):
            await g.save_game(self.storage, game)
        loc = game.locale
        files, content = [], [t("game.round_title", loc, n=rnd.index + 1, total=game.rounds_total,
                                kind=kind_name(rnd.kind, loc))]
        for i, item in enumerate(rnd.items):
            name = g.item_label(rnd, i, loc)
            if item.kind == "image":
                files.append(discord.File(item.path or "", filename=f"item{i + 1}.png"))
                content.append(t("game.item_image", loc, name=name, filename=f"item{i + 1}.png"))
            else:
                quoted = "\n".join(f"> {line}" for line in (item.text or "").splitlines() or [""])
                content.append(f"**{name}**:\n{discord.utils.escape_mentions(quoted)}")
        if rnd.note:
            content.append(f"-# {rnd.note}")
        content.append(t("game.vote_prompt", loc, when=f"<t:{int(rnd.deadline) + 1}:R>"))
        *before, last = delivery.split_text("\n".join(content)) or [""]
        for text in before:
            await self._channel(game).send(text)
        message = await self._channel(game).send(last, files=files, view=round_view(game, rnd))
        async with self.sessions.lock(game.id):
            fresh = await g.load_game(self.storage, game.id)
            if fresh is not None:
                fresh.rounds[rnd.index].message_id = message.id
                await g.save_game(self.storage, fresh)

    async def _make_items(self, game: g.Game, rnd: g.Round, truths: list[str], rng) -> list[g.Item]:  # noqa: ANN001
        folder = self.storage.data_dir / "games" / game.id
        folder.mkdir(parents=True, exist_ok=True)
        loc = game.locale  # the reveal shows each item's source in the game's language
        items: list[g.Item] = []
        real_row = None
        digit = rng.randrange(10)
        real_text = None
        if rnd.kind == "images":
            real_row = await g.RealPool(self.storage).pick(game.guild_id, "image", rng)
        elif rnd.kind == "text":
            row = await g.RealPool(self.storage).pick(game.guild_id, "text", rng)
            if row:
                real_text = (g.excerpt(row["text"]), t("game.source_pool_text", loc))
            else:  # the person's side to match the model that writes the other (see _generate_text)
                try:
                    chat = g.pick_model(self.bot, "chat", await self.bot.guild_settings(game.guild_id), locale=loc)
                except g.GenerationFailed:
                    chat = None  # the round fails on the generated side, with its message
                real_text = g.offline_real_text(chat, rng, loc)
        for n, truth in enumerate(truths):
            path = folder / f"r{rnd.index}_{n}.png"
            if rnd.kind == "digits":
                if truth == g.NATURAL:
                    png, digit = await asyncio.to_thread(g.real_digit, rng, digit)
                    path.write_bytes(png)
                    items.append(g.Item(truth, "image", t("game.source_real_digit", loc, digit=digit), path=str(path)))
                else:
                    job = await self._generate(game, "text-to-image", f"a handwritten digit {digit}, dark ink on white",
                                               prefer=PIXELCNN)
                    path.write_bytes(await asyncio.to_thread(self._image_of, job, None, loc))
                    items.append(g.Item(truth, "image", t("game.source_drawn", loc, model=job.model, id=job.id),
                                        path=str(path), job_id=job.id))
            elif rnd.kind == "images":
                assert real_row is not None
                if truth == g.NATURAL:
                    path.write_bytes(Path(real_row["path"]).read_bytes())
                    items.append(g.Item(truth, "image", t("game.source_real_image", loc), path=str(path)))
                else:
                    caption_job = await self._generate(game, "image-to-text", "",
                                                       image=Path(real_row["path"]).read_bytes())
                    caption = ((caption_job.result or {}).get("text") or "a photograph").strip()[:300]
                    # the same shape as the real image (multiples of 64, as image models want), then its exact size
                    width, height = g.image_size(Path(real_row["path"]).read_bytes())
                    shape = {"width": 512, "height": max(64, round(512 * height / width / 64) * 64)}
                    job = await self._generate(game, "text-to-image", caption, shape=shape)
                    path.write_bytes(await asyncio.to_thread(self._image_of, job, (width, height), loc))
                    items.append(g.Item(truth, "image", t("game.source_caption", loc, model=job.model, caption=caption,
                                                          id=job.id), path=str(path), job_id=job.id))
            else:
                assert real_text is not None
                if truth == g.NATURAL:
                    items.append(g.Item(truth, "text", real_text[1], text=real_text[0]))
                else:
                    start = g.opening(real_text[0])
                    job = await self._generate_text(game, start)
                    text = g.clean_generated_text((job.result or {}).get("text") or "", start)
                    items.append(g.Item(truth, "text", t("game.source_written", loc, model=job.model, start=start,
                                                         id=job.id), text=text, job_id=job.id))
        return items

    def _image_of(self, job, size: tuple[int, int] | None = None, locale: str | None = None) -> bytes:  # noqa: ANN001
        """The job's first image, normalized for a round (blocks: the results store is read)."""
        files = (job.result or {}).get("files") or []
        if not files:
            raise g.GenerationFailed(t("game.fail_no_image", locale))
        return g.normalize_image(self.storage.results.get(ref_of(files[0])), size=size)

    def _same_pixels(self, data: bytes, item: dict[str, Any]) -> bool:
        """Whether `data` shows the pixels of one of natty's result files (blocks: the results store is read)."""
        try:
            stored = self.storage.results.get(ref_of(item))
        except FileNotFoundError:
            return False
        return proof.same_pixels(data, stored)

    async def _generate(self, game: g.Game, task: str, prompt: str, *, prefer: tuple[str, ...] = (),
                        image: bytes | None = None, shape: dict | None = None):  # noqa: ANN202
        gs = await self.bot.guild_settings(game.guild_id)
        entry = g.pick_model(self.bot, task, gs, prefer, game.locale)
        params: dict = {"seed": game.seed % 100_000 + len(game.rounds)}
        if task == "text-to-image":  # natty's PixelCNN takes a size; hosted models a width and height
            params["model_params"] = {"size": 128} if entry.model.startswith("natty:") else \
                (shape or {"width": 512, "height": 512})
        return await g.run_silent_job(self.bot, self._origin(game), task=task, prompt=prompt, params=params,
                                      model=entry.name, image=image)

    async def _generate_text(self, game: g.Game, start: str):  # noqa: ANN202
        """A passage from the chat model: natty's char-RNN continues the opening; a language model is asked to."""
        gs = await self.bot.guild_settings(game.guild_id)
        entry = g.pick_model(self.bot, "chat", gs, locale=game.locale)
        params: dict[str, Any]
        if entry.backend == "local":
            prompt, params = start, {"model_params": {"max_new_tokens": 220}}
        else:
            prompt = (f"Write two or three sentences of plain prose that begin exactly with: \"{start}\". "
                      "Reply with the passage only.")
            params = {"model_params": {"max_tokens": 120}}
        params["seed"] = game.seed % 100_000
        return await g.run_silent_job(self.bot, self._origin(game), task="chat", prompt=prompt, params=params,
                                      model=entry.name)

    def _origin(self, game: g.Game) -> Origin:
        """A game's items are the host's jobs, made in the game's channel under /natty's switch."""
        return Origin.in_channel(self.bot.get_channel(game.channel_id), user_id=game.host_id, guild_id=game.guild_id,
                                 channel_id=game.channel_id, command="natty", locale=game.locale)

    async def _reveal(self, game: g.Game, rnd: g.Round) -> None:
        """Close the round (called with the game's lock held): score it, keep the scores, tell everyone."""
        result = g.score_round(rnd)
        for user, pts in result.points.items():
            game.points[str(user)] = game.points.get(str(user), 0) + pts
        rnd.phase = "revealed"
        await g.save_game(self.storage, game)
        if game.guild_id:
            await g.add_scores(self.storage, game.guild_id, result)
        channel = self._channel(game)
        if rnd.message_id:
            with contextlib.suppress(discord.HTTPException):
                await channel.get_partial_message(rnd.message_id).edit(view=None)
        await channel.send(g.reveal_text(game, rnd, result))

    async def _finish(self, game: g.Game) -> None:
        game.state = "done"
        await g.save_game(self.storage, game)
        players = sorted({int(u) for r in game.rounds for u in r.votes})
        if game.guild_id and players:
            await g.count_game(self.storage, game.guild_id, players)
        await self._channel(game).send(g.final_text(game))
        log.info("game %s finished: %s", game.id, game.points)


async def setup(bot: NattyBot) -> None:
    bot.add_dynamic_items(VoteButton)
    await bot.add_cog(NattyGame(bot))


async def teardown(bot: NattyBot) -> None:
    bot.remove_dynamic_items(VoteButton)

