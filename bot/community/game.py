"""Natty or Not, without Discord: rounds, votes, scoring, the real-item pool, and what `/natty check` can prove.

A game is a list of rounds; each round shows one or two items, each either natural (made by a person or a
camera, or a real handwritten digit) or AI-generated. Players call every item "natural" or "AI" before the
round's deadline; each right call is worth a point. Game state lives in the `play_sessions` table as JSON with
its deadline, so a restart resumes the timer where it was (see cogs/natty.py).

A game's public messages (rounds, buttons, reveals, final scores) are in `Game.locale`, the server's language
when the game started; `/natty check` findings are in the requester's language.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
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
    """Games and collab sessions in `play_sessions`: JSON state plus the deadline their timer waits for."""

    def __init__(self, storage: Storage, kind: str) -> None:
        self.storage, self.kind = storage, kind

    async def save(self, sid: str, guild_id: int | None, channel_id: int | None, state: str,
                   deadline: float | None, data: str) -> None:
        now = time.time()
        await self.storage.db.execute(
            "INSERT INTO play_sessions (id, kind, guild_id, channel_id, state, deadline, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state = excluded.state, "
            "deadline = excluded.deadline, data = excluded.data, updated_at = excluded.updated_at",
            (sid, self.kind, guild_id, channel_id, state, deadline, data, now, now))
        await self.storage.db.commit()

    async def load(self, sid: str) -> str | None:
        async with self.storage.db.execute("SELECT data FROM play_sessions WHERE id = ? AND kind = ?",
                                           (sid, self.kind)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def open_ids(self, channel_id: int | None = None) -> list[str]:
        sql = "SELECT id FROM play_sessions WHERE kind = ? AND state NOT IN ('done', 'failed')"
        args: list[Any] = [self.kind]
        if channel_id is not None:
            sql += " AND channel_id = ?"
            args.append(channel_id)
        async with self.storage.db.execute(sql + " ORDER BY created_at", args) as cur:
            return [r[0] for r in await cur.fetchall()]


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
    for user, pts in result.points.items():
        await storage.db.execute(
            "INSERT INTO game_scores (guild_id, user_id, points, correct, wrong, games) VALUES (?, ?, ?, ?, ?, 0) "
            "ON CONFLICT(guild_id, user_id) DO UPDATE SET points = points + excluded.points, "
            "correct = correct + excluded.correct, wrong = wrong + excluded.wrong",
            (guild_id, user, pts, pts, result.misses.get(user, 0)))
    await storage.db.commit()


async def count_game(storage: Storage, guild_id: int, players: list[int]) -> None:
    for user in players:
        await storage.db.execute(
            "INSERT INTO game_scores (guild_id, user_id, games) VALUES (?, ?, 1) "
            "ON CONFLICT(guild_id, user_id) DO UPDATE SET games = games + 1", (guild_id, user))
    await storage.db.commit()


async def leaderboard(storage: Storage, guild_id: int, limit: int = 10) -> list[dict[str, int]]:
    async with storage.db.execute(
            "SELECT user_id, points, correct, wrong, games FROM game_scores WHERE guild_id = ? "
            "ORDER BY points DESC, correct DESC, user_id LIMIT ?", (guild_id, limit)) as cur:
        return [dict(r) for r in await cur.fetchall()]


# --- the pool of real items -------------------------------------------------------------------------------------

class RealPool:
    """Real items the server's admins added with /natty add-real: images (kept as files) and texts."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    async def add(self, guild_id: int, kind: str, added_by: int, *, text: str | None = None,
                  image: bytes | None = None) -> int:
        cur = await self.storage.db.execute(
            "INSERT INTO real_items (guild_id, kind, text, path, added_by, created_at) VALUES (?, ?, ?, NULL, ?, ?)",
            (guild_id, kind, text, added_by, time.time()))
        item_id = cur.lastrowid
        if image is not None:
            folder = self.storage.data_dir / "real" / str(guild_id)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{item_id}.png"
            path.write_bytes(normalize_image(image))
            await self.storage.db.execute("UPDATE real_items SET path = ? WHERE id = ?", (str(path), item_id))
        await self.storage.db.commit()
        return int(item_id or 0)

    async def counts(self, guild_id: int) -> dict[str, int]:
        async with self.storage.db.execute("SELECT kind, COUNT(*) FROM real_items WHERE guild_id = ? GROUP BY kind",
                                           (guild_id,)) as cur:
            return {r[0]: r[1] for r in await cur.fetchall()}

    async def pick(self, guild_id: int | None, kind: str, rng: random.Random,
                   exclude: set[int] | None = None) -> dict[str, Any] | None:
        async with self.storage.db.execute("SELECT * FROM real_items WHERE guild_id = ? AND kind = ? ORDER BY id",
                                           (guild_id or 0, kind)) as cur:
            rows = [dict(r) for r in await cur.fetchall()]
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
    if not text.lower().startswith(start.lower()[:20]):
        text = f"{start} {text}".strip()
    return excerpt(text, limit)


# --- /natty check: what a file or a text can prove ------------------------------------------------------------------

# IPTC digital source types a C2PA manifest may declare; each is worded by the catalog key "check.source.<type>"
SOURCE_TYPES = ("trainedalgorithmicmedia", "compositewithtrainedalgorithmicmedia", "algorithmicmedia",
                "digitalcapture", "negativefilm", "positivefilm", "print", "digitalart", "composite",
                "minorhumanedits")


def source_type(name: str, locale: str | None) -> str:
    """A declared source type in words ("made by a generative AI model"), or as it is when unknown."""
    return t(f"check.source.{name.lower()}", locale) if name.lower() in SOURCE_TYPES else name


AI_LABEL_WORDS = ("artificial", "ai", "fake", "generated", "synthetic", "machine", "sd", "sdxl")
HUMAN_LABEL_WORDS = ("human", "real", "natural", "authentic", "photo", "original")


def verify_c2pa(data: bytes, mime: str) -> dict[str, Any] | None:
    """Validate an embedded C2PA manifest with c2pa-python when it is installed.

    Returns None when c2pa-python is missing (the caller then says the manifest was not verified), else
    {"ok": bool, "state", "generator", "signer", "issuer", "time", "sources": [...], "agents": [...],
    "problems": [codes], "error"}.
    """
    try:
        import c2pa  # optional: pip install natty-bot[c2pa]
    except ImportError:
        return None
    try:
        with c2pa.Reader(mime, io.BytesIO(data)) as reader:
            report = json.loads(reader.json())
    except Exception as exc:  # c2pa raises its own error types for damaged or unsupported manifests
        return {"ok": False, "error": str(exc)[:200], "problems": [], "sources": [], "agents": []}
    manifest = (report.get("manifests") or {}).get(report.get("active_manifest") or "", {})
    info = manifest.get("claim_generator_info") or [{}]
    generator = manifest.get("claim_generator") or " ".join(
        str(x) for x in (info[0].get("name"), info[0].get("version")) if x)
    sources, agents = [], []
    for assertion in manifest.get("assertions", []):
        if not str(assertion.get("label", "")).startswith("c2pa.actions"):
            continue
        for action in (assertion.get("data") or {}).get("actions", []):
            if action.get("digitalSourceType"):
                sources.append(str(action["digitalSourceType"]).rsplit("/", 1)[-1])
            agent = action.get("softwareAgent")
            name = agent.get("name") if isinstance(agent, dict) else agent
            if name:
                agents.append(str(name))
    sig = manifest.get("signature_info") or {}
    problems = [s.get("code", "?") for s in report.get("validation_status", [])]
    return {"ok": True, "state": report.get("validation_state") or ("Invalid" if problems else "Valid"),
            "generator": generator or None, "signer": sig.get("common_name"), "issuer": sig.get("issuer"),
            "time": sig.get("time"), "sources": sources, "agents": agents, "problems": problems}


def detector_score(labels: list[tuple[str, float]]) -> float | None:
    """The probability a detector gives to "AI", if its labels say which label means that."""
    for label, score in labels:
        words = set(label.lower().replace("-", " ").replace("_", " ").split())
        if words & set(AI_LABEL_WORDS):
            return score
    for label, score in labels:
        words = set(label.lower().replace("-", " ").replace("_", " ").split())
        if words & set(HUMAN_LABEL_WORDS):
            return 1 - score
    return None


@dataclass
class Finding:
    """What `/natty check` found and what it proves, in one language."""

    found: list[str] = field(default_factory=list)
    proves: list[str] = field(default_factory=list)
    title: str = "Nothing conclusive"
    strength: str = "none"  # none | weak | strong


def assess_file(prov: dict[str, Any], c2pa_report: dict[str, Any] | None, natty_match: str | None,
                detector: tuple[str, list[tuple[str, float]]] | None, detector_note: str | None,
                locale: str | None = None) -> Finding:
    """Turn what was read from a file into findings and an honest account of their weight, in `locale`."""
    loc = locale
    f = Finding()
    title = "check.title.none"
    natty = prov.get("natty")
    if prov.get("c2pa"):
        if c2pa_report is None:
            f.found.append(t("check.c2pa_unverified", loc))
            f.proves.append(t("check.c2pa_unverified_proves", loc))
            f.strength = "weak"
        elif not c2pa_report.get("ok"):
            f.found.append(t("check.c2pa_unreadable", loc, error=c2pa_report.get("error")))
            f.proves.append(t("check.c2pa_unreadable_proves", loc))
            f.strength = "weak"
        else:
            sources = [source_type(s, loc) for s in c2pa_report["sources"]]
            bits = [t("check.c2pa_signed_by", loc, signer=c2pa_report.get("signer") or "?",
                      issuer=c2pa_report.get("issuer") or "?")]
            if c2pa_report.get("generator"):
                bits.append(t("check.c2pa_generator", loc, generator=c2pa_report["generator"]))
            if c2pa_report["agents"]:
                bits.append(t("check.c2pa_software", loc, names=", ".join(dict.fromkeys(c2pa_report["agents"]))))
            if sources:
                bits.append(t("check.c2pa_source", loc, sources="; ".join(dict.fromkeys(sources))))
            f.found.append(t("check.c2pa_found", loc, state=c2pa_report["state"], details=", ".join(bits)))
            problems = c2pa_report["problems"]
            if "signingCredential.untrusted" in problems:
                f.proves.append(t("check.c2pa_untrusted", loc))
            elif problems:
                f.proves.append(t("check.c2pa_problems", loc, problems=", ".join(problems[:4])))
            else:
                f.proves.append(t("check.c2pa_valid", loc))
            f.strength = "strong" if not problems else "weak"
            if any("trainedalgorithmicmedia" in s.lower() for s in c2pa_report["sources"]):
                title = "check.title.c2pa_ai"
    if natty is not None:
        job = t("check.natty_label_job", loc, id=natty.job_id) if natty.job_id else ""
        f.found.append(t("check.natty_label", loc, model=natty.model, task=natty.task, created=natty.created, job=job))
        if natty_match:
            f.found.append(natty_match)
            f.proves.append(t("check.natty_match_proves", loc))
            f.strength = "strong"
            title = "check.title.natty"
        else:
            f.proves.append(t("check.natty_claim_proves", loc))
            f.strength = max(f.strength, "weak", key=["none", "weak", "strong"].index)
            title = "check.title.natty_label"
    if prov.get("generator_hints"):
        f.found.append(t("check.generator_found", loc, names=", ".join(prov["generator_hints"])))
        f.proves.append(t("check.generator_proves", loc))
        if title == "check.title.none":
            title = "check.title.generator"
            f.strength = "weak"
    software = prov.get("software")
    if software and not (natty and software.startswith("natty")):
        f.found.append(t("check.software", loc, software=software[:100]))
    if detector is not None:
        name, labels = detector
        score = detector_score(labels)
        top = ", ".join(f"{label} {s:.0%}" for label, s in labels[:3])
        if score is not None:
            f.found.append(t("check.detector_score", loc, name=name, score=f"{score:.0%}", top=top))
        else:
            f.found.append(t("check.detector_unclear", loc, name=name, top=top))
        f.proves.append(t("check.detector_proves", loc))
    elif detector_note:
        f.found.append(detector_note)
    if not f.found:
        f.found.append(t("check.nothing_found", loc))
    if f.strength == "none":
        f.proves.append(t("check.absence_proves", loc))
    f.title = t(title, loc)
    return f


def text_sha256(text: str) -> str:
    """The hash `/natty check` matches texts by: whitespace-normalized, so copy and paste does not break it."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


async def natty_text_job(storage: Storage, text: str, guild_id: int | None, limit: int = 5000) -> dict | None:
    """The natty job on this server whose result text is exactly `text`, if any (newest first)."""
    async with storage.db.execute(
            "SELECT id, model, task, created_at, result FROM jobs WHERE state = 'done' AND guild_id IS ? "
            "AND ephemeral = 0 AND result IS NOT NULL ORDER BY seq DESC LIMIT ?", (guild_id, limit)) as cur:
        rows = [tuple(row) for row in await cur.fetchall()]
    # Thousands of JSON documents: parse them in a thread so the bot keeps answering meanwhile.
    return await asyncio.to_thread(_first_text_match, rows, text_sha256(text))


def _first_text_match(rows: list[tuple[Any, ...]], wanted: str) -> dict | None:
    for job_id, model, task, created_at, raw in rows:
        result = json.loads(raw)
        if result.get("kind") == "text" and result.get("text") and text_sha256(result["text"]) == wanted:
            return {"id": job_id, "model": model, "task": task, "created_at": created_at}
    return None


def same_pixels(a: bytes, b_path: str | Path) -> bool:
    """Whether two images decode to the same pixels (a stamp adds metadata, never changes them)."""
    from PIL import Image, ImageChops

    try:
        x = open_image(a).convert("RGBA")
        y = Image.open(b_path).convert("RGBA")
    except Exception:
        return False
    return x.size == y.size and ImageChops.difference(x, y).getbbox() is None


def assess_text(match: dict | None, locale: str | None = None) -> Finding:
    """What `/natty check` can say about a plain text, in `locale`: only whether natty itself produced exactly it."""
    f = Finding()
    if match:
        f.title, f.strength = t("check.title.natty", locale), "strong"
        f.found.append(t("check.text_match", locale, id=match["id"], model=match["model"],
                         when=f"<t:{int(match['created_at'])}:f>"))
        f.proves.append(t("check.text_match_proves", locale))
    else:
        f.title = t("check.title.none", locale)
        f.found.append(t("check.text_no_match", locale))
        f.proves.append(t("check.text_no_match_proves", locale))
    return f


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
