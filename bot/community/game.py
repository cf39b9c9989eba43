"""Natty or Not, without Discord: rounds, votes, scoring and the real-item pool (`/natty check` is check.py).

A game is a list of rounds; each round shows one or two items, each either natural (made by a person or a
camera, or a real handwritten digit) or AI-generated. Players call every item "natural" or "AI" before the
round's deadline; each right call is worth a point. Game state lives in the `play_sessions` table as JSON with
its deadline, so a restart resumes the timer where it was (see cogs/natty.py).

A game's public messages (rounds, buttons, reveals, final scores) are in `Game.locale`, the server's language
when the game started; `/natty check` findings are in the requester's language.
"""

from __future__ import annotations

import functools
import io
import json
import random
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bot.i18n import DEFAULT, t
from bot.jobs.storage import Storage
from bot.ui.provenance import open_image

if TYPE_CHECKING:
    from bot.client import NattyBot
    from bot.jobs.job import Job
    from bot.policy import Origin
    from models.catalog import ModelEntry

NATURAL, AI = "natural", "ai"
CHOICES = (NATURAL, AI)
KINDS = ("digits", "text", "images", "mixed")
ITEM_SIDE = 256  # every image item is shown at this size, so size never gives an item away


# --- state ----------------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One thing to judge. `source` says, for the reveal only, where it came from."""

    truth: str  # NATURAL or AI
    kind: str  # "image" or "text"
    source: str
    text: str | None = None
    path: str | None = None
    job_id: str | None = None


@dataclass
class Round:
    index: int
    items: list[Item] = field(default_factory=list)
    votes: dict[str, dict[str, str]] = field(default_factory=dict)  # user id -> item index -> choice
    phase: str = "generating"  # generating -> voting -> revealed
    deadline: float | None = None
    message_id: int | None = None
    kind: str = "digits"
    note: str = ""


@dataclass
class Game:
    id: str
    guild_id: int | None
    channel_id: int
    host_id: int
    kind: str
    rounds_total: int
    seconds: float
    seed: int
    state: str = "running"  # running -> done
    rounds: list[Round] = field(default_factory=list)
    points: dict[str, int] = field(default_factory=dict)  # user id -> points in this game
    created_at: float = field(default_factory=time.time)
    locale: str = DEFAULT  # the language of the game's public messages (the server's, picked at the start)

    @property
    def current(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    def rng(self, salt: int = 0) -> random.Random:
        """The game's random source for round `salt`: the same after a restart."""
        return random.Random(self.seed * 1000 + salt)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Game:
        raw = json.loads(text)
        rounds = [Round(**{**r, "items": [Item(**i) for i in r["items"]]}) for r in raw.pop("rounds")]
        return cls(**raw, rounds=rounds)


def plan_truths(rng: random.Random) -> list[str]:
    """Half the rounds pair a natural item with an AI one (in random order); the rest show one of either."""
    if rng.random() < 0.5:
        pair = [NATURAL, AI]
        rng.shuffle(pair)
        return pair
    return [rng.choice(CHOICES)]


def round_kind(game: Game, index: int, available: list[str]) -> str:
    """What round `index` shows: the game's kind, or for "mixed" a random kind that can be made here."""
    if game.kind != "mixed":
        return game.kind
    return game.rng(index + 500).choice(available or ["digits"])


def cast_vote(rnd: Round, user_id: int, item: int, choice: str) -> str | None:
    """Record a call (a later call on the same item replaces it); the previous choice, if any."""
    if choice not in CHOICES or not 0 <= item < len(rnd.items):
        raise ValueError(f"bad vote {item}:{choice}")
    mine = rnd.votes.setdefault(str(user_id), {})
    previous = mine.get(str(item))
    mine[str(item)] = choice
    return previous


@dataclass
class RoundResult:
    right: dict[int, list[int]]  # item index -> users who called it right
    wrong: dict[int, list[int]]
    points: dict[int, int]  # user -> points this round
    misses: dict[int, int]  # user -> wrong calls this round


def score_round(rnd: Round) -> RoundResult:
    """Who was right about each item; one point per right call, nothing for a wrong or missing one."""
    result = RoundResult({i: [] for i in range(len(rnd.items))}, {i: [] for i in range(len(rnd.items))}, {}, {})
    for uid, calls in rnd.votes.items():
        user = int(uid)
        result.points.setdefault(user, 0)
        result.misses.setdefault(user, 0)
        for idx, choice in calls.items():
            i = int(idx)
            if choice == rnd.items[i].truth:
                result.right[i].append(user)
                result.points[user] += 1
            else:
                result.wrong[i].append(user)
                result.misses[user] += 1
    return result


def standings(points: dict[str, int]) -> list[tuple[int, int]]:
    """(user, points), best first; ties keep the order players first scored."""
    return sorted(((int(u), p) for u, p in points.items()), key=lambda up: -up[1])


def mention(user: int) -> str:
    return f"<@{user}>"


def count(key: str, n: int, locale: str | None) -> str:
    """`n` with its word, singular or plural ("1 round", "3 rodadas"): the keys `key.one` and `key.other`."""
    return t(f"{key}.{'one' if n == 1 else 'other'}", locale, n=n)


def item_label(rnd: Round, i: int, locale: str | None) -> str:
    """How a round names its item `i`: "Item 2", or "The item" when it has only one."""
    return t("game.item_label", locale, n=i + 1) if len(rnd.items) > 1 else t("game.the_item_label", locale)


def reveal_text(game: Game, rnd: Round, result: RoundResult) -> str:
    loc = game.locale
    lines = [t("game.reveal_title", loc, n=rnd.index + 1, total=game.rounds_total)]
    for i, item in enumerate(rnd.items):
        icon, word = ("🌿", t("game.word_natural", loc)) if item.truth == NATURAL else ("🤖", t("game.word_ai", loc))
        right = ", ".join(mention(u) for u in result.right[i]) or t("game.nobody", loc)
        wrong = ", ".join(mention(u) for u in result.wrong[i]) or t("game.nobody", loc)
        lines.append(t("game.reveal_item", loc, icon=icon, label=item_label(rnd, i, loc), word=word, source=item.source)
                     + (t("game.reveal_calls", loc, right=right, wrong=wrong) if rnd.votes else ""))
    if not rnd.votes:
        lines.append(t("game.nobody_voted", loc))
    return "\n".join(lines)


def final_text(game: Game) -> str:
    loc = game.locale
    table = standings(game.points)
    rounds = count("game.n_rounds", game.rounds_total, loc)
    if not table:
        return t("game.over_no_votes", loc, rounds=rounds)
    medals = ["🥇", "🥈", "🥉"]
    lines = [t("game.over", loc, rounds=rounds)]
    for rank, (user, pts) in enumerate(table):
        place = medals[rank] if rank < 3 else f"{rank + 1}."
        lines.append(f"{place} {mention(user)}: {count('game.n_points', pts, loc)}")
    lines.append(t("game.scores_count", loc))
    return "\n".join(lines)


# --- persistence ------------------------------------------------------------------------------------------------

class SessionStore:
    """Games and collab sessions of one kind, through bot.jobs.storage (JSON state plus the timer's deadline)."""

    def __init__(self, storage: Storage, kind: str) -> None:
        self.storage, self.kind = storage, kind

    async def save(self, sid: str, guild_id: int | None, channel_id: int | None, state: str,
                   deadline: float | None, data: str) -> None:
        await self.storage.save_session(sid, self.kind, guild_id, channel_id, state, deadline, data)

    async def load(self, sid: str) -> str | None:
        return await self.storage.load_session(sid, self.kind)

    async def open_ids(self, channel_id: int | None = None, guild_id: int | None = None) -> list[str]:
        return await self.storage.open_session_ids(self.kind, channel_id, guild_id)


async def save_game(storage: Storage, game: Game) -> None:
    rnd = game.current
    deadline = rnd.deadline if rnd and rnd.phase == "voting" else None
    await SessionStore(storage, "game").save(game.id, game.guild_id, game.channel_id, game.state, deadline,
                                             game.to_json())


async def load_game(storage: Storage, game_id: str) -> Game | None:
    raw = await SessionStore(storage, "game").load(game_id)
    return Game.from_json(raw) if raw else None


async def add_scores(storage: Storage, guild_id: int, result: RoundResult) -> None:
    """Add a round's points to the server's lasting scores (kept per server, per user)."""
    await storage.add_scores(guild_id, result.points, result.misses)


async def count_game(storage: Storage, guild_id: int, players: list[int]) -> None:
    await storage.count_game(guild_id, players)


async def leaderboard(storage: Storage, guild_id: int, limit: int = 10) -> list[dict[str, int]]:
    return await storage.leaderboard(guild_id, limit)


# --- the pool of real items -------------------------------------------------------------------------------------

class RealPool:
    """Real items the server's admins added with /natty add-real: images (kept as files) and texts."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def add(self, guild_id: int, kind: str, added_by: int, *, text: str | None = None,
                  image: bytes | None = None) -> int:
        item_id = await self.storage.add_real_item(guild_id, kind, added_by, text)
        if image is not None:
            folder = self.storage.data_dir / "real" / str(guild_id)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{item_id}.png"
            path.write_bytes(normalize_image(image))
            await self.storage.set_real_item_path(item_id, str(path))
        return item_id

    async def counts(self, guild_id: int) -> dict[str, int]:
        return await self.storage.real_item_counts(guild_id)

    async def pick(self, guild_id: int | None, kind: str, rng: random.Random,
                   exclude: set[int] | None = None) -> dict[str, Any] | None:
        rows = await self.storage.real_items(guild_id or 0, kind)
        fresh = [r for r in rows if r["id"] not in (exclude or set())] or rows
        return rng.choice(fresh) if fresh else None


# --- items --------------------------------------------------------------------------------------------------------

def digits_available() -> bool:
    """Real digits need scikit-learn (the `local` extra)."""
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


@functools.cache
def _digits() -> tuple[Any, Any]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    return d.images, d.target


def real_digit(rng: random.Random, digit: int | None = None) -> tuple[bytes, int]:
    """A real handwritten digit (`digit`, or any) from scikit-learn's copy of the UCI digits (8x8, 17 grey
    levels), drawn like natty's PixelCNN draws its own: dark ink on white, upscaled without smoothing."""
    import numpy as np

    from models.own import digits_png

    images, targets = _digits()
    choices = [i for i in range(len(targets)) if digit is None or targets[i] == digit]
    i = rng.choice(choices)
    png, _, _ = digits_png(np.asarray(images[i], dtype=np.int64)[None], 17, scale=16)
    return normalize_image(png), int(targets[i])


def image_size(data: bytes) -> tuple[int, int]:
    return open_image(data).size


def normalize_image(data: bytes, side: int = ITEM_SIDE, size: tuple[int, int] | None = None) -> bytes:
    """The image as a plain RGB PNG whose longest side is `side` (or exactly `size`), with no metadata at all.

    Real and AI items then look alike apart from their pixels: no size, format or provenance tag to peek at.
    """
    from PIL import Image

    img = open_image(data)  # refuses more than MAX_PIXELS before decoding any
    img.load()
    img = img.convert("RGB")
    if size is None:
        scale = side / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    small = max(img.size) <= side // 2
    img = img.resize(size, Image.Resampling.NEAREST if small else Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def hand_written_passages() -> list[str]:
    """Prose and verse written by people for natty's corpus (models/own/data.py), as the offline pool of real text."""
    from models.own.data import _PASSAGES, _POEMS  # the hand-written part; the rest of corpus.txt is grammar-made

    return [" ".join(p.split()) for p in _PASSAGES + _POEMS]


SHAKESPEARE_MODELS = frozenset({"natty:gpt", "natty:charrnn"})  # natty's own text models, trained on his works
WORK_TITLES = {"hamlet": "Hamlet", "macbeth": "Macbeth", "tempest": "The Tempest", "sonnets": "the Sonnets"}


@functools.cache
def shakespeare_passages() -> list[tuple[str, str]]:
    """(work, passage): speeches and quatrains from the works natty's text models never trained on (the test
    split of models.own.texts), bundled in models/own/data/shakespeare_passages.jsonl."""
    from pathlib import Path

    import models

    path = Path(models.__file__).parent / "own" / "data" / "shakespeare_passages.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["work"], row["text"]) for row in rows]


def offline_real_text(chat_model: ModelEntry | None, rng: random.Random, locale: str | None) -> tuple[str, str]:
    """(text, its source for the reveal): the person's side of a text round when the server's pool has none. Against
    natty's own Shakespeare models it is Shakespeare, from works they never saw, so that a round is not told apart
    by style alone; otherwise the passages people wrote for natty."""
    if chat_model is not None and chat_model.backend == "local" and chat_model.model in SHAKESPEARE_MODELS:
        work, passage = rng.choice(shakespeare_passages())
        return excerpt(passage), t("game.source_shakespeare", locale, work=WORK_TITLES.get(work, work))
    return excerpt(rng.choice(hand_written_passages())), t("game.source_corpus_text", locale)


def excerpt(text: str, limit: int = 280) -> str:
    """The first sentences of `text` that fit in `limit` characters (at least one cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = max(text.rfind(". ", 0, limit), text.rfind("? ", 0, limit), text.rfind("! ", 0, limit))
    return text[: cut + 1] if cut > limit // 3 else text[: limit - 1].rstrip() + "…"


def opening(text: str, words: int = 8) -> str:
    """The first words of a text: what a model is asked to continue."""
    return " ".join(text.split()[:words])


def clean_generated_text(text: str, start: str, limit: int = 280) -> str:
    """A model's passage as an item: starting with `start` (the char-RNN returns only the continuation)."""
    text = " ".join((text or "").split()).strip("\"' ")
    if not text.lower().startswith(start.lower()[:20]):  # a continuation: after the start, a comma kept close
        text = f"{start}{'' if text[:1] in ',.;:!?' else ' '}{text}".strip()
    return excerpt(text, limit)


# --- generation through the job engine ----------------------------------------------------------------------------

class GenerationFailed(Exception):
    """An item or a collab result could not be generated; the message is for users."""


def pick_model(bot: NattyBot, task: str, guild_settings: dict[str, Any], prefer: tuple[str, ...] = (),
               locale: str | None = None) -> ModelEntry:
    """The catalog entry a feature's job would use (bot.policy decides; `prefer` first when it can run), or
    GenerationFailed worded in `locale` when there is none."""
    entry, problem = bot.policy.resolve(task, None, guild_settings, locale, prefer)
    if entry is None:
        raise GenerationFailed(problem or t("game.fail_no_model", locale, task=task))
    return entry


async def run_silent_job(bot: NattyBot, origin: Origin, *, task: str, prompt: str = "",
                         params: dict[str, Any] | None = None, prefer: tuple[str, ...] = (),
                         image: bytes | None = None, model: str | None = None) -> Job:
    """Run one part of a game, session or check through the bot's one submission path (every rule, limit and
    record applies; `origin` says for whom and where) and wait for it. The presenter posts nothing for it
    (`silent`): the caller shows the result its own way. Returns the finished Job or raises GenerationFailed."""
    from bot.jobs.job import JobState
    from bot.policy import Refused

    inputs = {"image": ("image.png", image)} if image is not None else None
    try:
        job = await bot.submit_job(origin, task, prompt, model=model, prefer=prefer, inputs=inputs,
                                   params={"silent": True, **(params or {})}, cooldown=False,
                                   check_prompt=bool(prompt))
    except Refused as exc:
        raise GenerationFailed(exc.message) from None
    entry = bot.catalog.get(job.model)
    assert entry is not None  # submit_job resolved the model, or refused
    try:
        done = await bot.engine.wait(job.id, timeout=entry.timeout + 60)
    except TimeoutError as exc:
        raise GenerationFailed(t("game.fail_too_long", origin.locale, model=entry.name)) from exc
    if done.state is not JobState.DONE:
        raise GenerationFailed(done.error or t("game.fail_ended", origin.locale, state=done.state.value))
    return done
