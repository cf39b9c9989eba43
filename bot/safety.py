"""Safety policy for prompts and generated images, free of Discord so it can be unit-tested.

Prompts for images and video are matched against a built-in list of clearly sexual terms and the server's own
block list. Matching is by whole words after normalisation (case, accents, look-alike letters of other scripts,
leetspeak digits, letters spaced out with separators, stretched letters), so "n.u.d.e", "p0rn", "NUUUDE" and
"nudе" with a Cyrillic "е" match while "analysis", "Essex" or "cocktail" do not. The rules:

- sexual terms next to words for children, and a few terms that exist only for sexualised minors: always
  blocked, in every channel, whatever the server's policy;
- the server's block list: blocked everywhere (admins add words they never want);
- the built-in list: blocked outside age-restricted channels, and everywhere when the policy is "never".

Generated images are checked by an image classifier when the catalog has one (see `classifier_name`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from models.base import OUTPUT

# Tasks whose prompts are checked, and tasks whose image outputs go through the classifier.
# Prompts checked outside age-restricted channels: those of every task that makes a picture or a video.
PROMPT_TASKS = frozenset(task for task, kind in OUTPUT.items() if kind in ("image", "video"))
IMAGE_OUTPUT_TASKS = frozenset(task for task, kind in OUTPUT.items() if kind == "image")
# Outputs the classifier sees before they are posted: images whole, videos by a few of their frames.
CHECKED_OUTPUT_TASKS = PROMPT_TASKS
VIDEO_FRAMES_CHECKED = 4  # evenly spaced, first and last included

POLICIES = {
    "age-restricted": "adult content only in age-restricted channels",
    "never": "no adult content anywhere, age-restricted channels included",
}
DEFAULT_POLICY = "age-restricted"
DEFAULT_CLASSIFIER = "nsfw-detector"
DEFAULT_THRESHOLD = 0.7
CLASSIFIER_OFF = "off"
AUDIT_PROMPT_CHARS = 200

# Clearly sexual or explicit terms only: words with common innocent meanings ("breast", "cock", "pussy", "sexy",
# "lingerie") are left to the server's block list and the output classifier. Plurals (-s, -es) match too.
# Phrases match words written apart; single words do not (so "an Al Pacino portrait" is not "anal").
BUILTIN_TERMS: tuple[str, ...] = (
    "nude", "nudity", "naked", "topless", "undressed", "porn", "porno", "pornographic", "pornography", "pron",
    "xxx", "nsfw", "hentai", "rule34", "sex", "sexual intercourse", "orgasm", "orgy",
    "erotic", "erotica", "bdsm", "genitals", "genitalia", "penis", "vagina", "vulva", "clitoris", "nipple",
    "areola", "boobs", "titties", "cum", "cumshot", "creampie", "blowjob", "handjob", "footjob",
    "fellatio", "cunnilingus", "masturbate", "masturbating", "masturbation", "dildo", "ejaculate", "ejaculation",
    "anal", "deepthroat", "gangbang", "threesome", "milf", "upskirt", "nip slip", "onlyfans", "ahegao",
    "futanari", "lewd", "no clothes", "without clothes", "blow job", "hand job", "foot job", "cum shot",
    "deep throat", "gang bang", "only fans",
)
# Sexualised minors: blocked everywhere. Words for children only count next to a sexual term.
MINOR_ONLY_TERMS: tuple[str, ...] = ("loli", "lolicon", "shota", "shotacon")
MINOR_TERMS: tuple[str, ...] = (
    "child", "children", "kid", "underage", "minor", "preteen", "toddler", "infant", "baby", "schoolgirl",
    "schoolboy", "little girl", "little boy", "young girl", "young boy",
)

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a",
                       "$": "s", "|": "i"})
_TOKEN = re.compile(r"[a-z0-9@$|]+")
_STRETCH = re.compile(r"(.)\1{2,}")
_SUFFIXES = ("", "s", "es")


@dataclass(frozen=True)
class Block:
    """Why a prompt or output was blocked. `term` is for logs only: never show it back to the user."""

    rule: str  # a key of RULE_LABELS: "minors", "server", "builtin", "builtin-never", "model", "classifier", ...
    term: str = ""

    def message(self, model: str = "", locale: str | None = None) -> str:
        """The short message the user sees: the catalogs' "safety.<rule>" key."""
        from bot.i18n import t  # late: this module stays free of Discord for its unit tests

        return t(f"safety.{self.rule}", locale, model=model)

    @property
    def label(self) -> str:
        """The rule in words, for the audit channel."""
        return RULE_LABELS[self.rule]


RULE_LABELS = {  # for logs; the audit channel gets the catalogs' "safety.rule.<rule>"
    "minors": "sexual content involving minors", "server": "server block list",
    "builtin": "built-in adult-content list", "builtin-never": "built-in adult-content list (policy: never)",
    "model": "adult model outside an age-restricted channel", "model-never": "adult model (policy: never)",
    "classifier": "output classifier", "classifier-never": "output classifier (policy: never)",
    "classifier-error": "output classifier failed",
}


# --- matching -------------------------------------------------------------------------------------------------


def _latin_lookalikes() -> dict[int, str]:
    """Each non-ASCII character that Unicode's confusables data (UTS #39) lists as looking like an ASCII letter
    or digit, mapped to it: Cyrillic "е" and "а", Greek "ο", mathematical "𝐞", Cherokee "Ꭺ"...

    A lower-case letter is preferred where a character looks like several ("ǀ" like "l", "I" and "1").
    """
    from confusable_homoglyphs.confusables import confusables_data

    def rank(c: str) -> tuple[int, str]:
        return (0 if c.islower() else 1 if c.isalpha() else 2), c

    table: dict[int, str] = {}
    for char, glyphs in confusables_data.items():
        if len(char) != 1 or char.isascii():
            continue
        ascii_twins = [g["c"] for g in glyphs if len(g["c"]) == 1 and g["c"].isascii() and g["c"].isalnum()]
        if ascii_twins:
            table[ord(char)] = min(ascii_twins, key=rank).lower()
    return table


_LOOKALIKES = _latin_lookalikes()


def _as_latin(word: str) -> str:
    """A word that looks Latin, read as Latin: "nudе" with a Cyrillic "е" becomes "nude". A word with letters
    that look like no Latin letter ("привет") is a word of its own script and stays as it is."""
    if word.isascii() or not all(c.isascii() or ord(c) in _LOOKALIKES or not c.isalpha() for c in word):
        return word
    return word.translate(_LOOKALIKES).lower()


def _fold(text: str) -> str:
    """Lower case without accents, apostrophes, compatibility forms (full-width letters, ligatures) or look-alike
    letters of other scripts (their UTS #39 confusables, where a whole word looks Latin)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    bare = "".join(c for c in decomposed if not unicodedata.combining(c) and c not in "'’`")
    return " ".join(_as_latin(word) for word in bare.split())


def tokens(text: str) -> list[str]:
    """The words of `text`: one per whitespace-separated chunk, its parts joined ("n.u.d.e", "p0-rn" -> one
    word, parts kept too), with runs of three or more spaced-out single letters ("s e x") joined as well.

    Folded to lower case without accents, and leetspeak digits read as letters.
    """
    words: list[str] = []
    run: list[str] = []
    for chunk in [*_fold(text).split(), ""]:
        parts = [t.translate(_LEET) for t in _TOKEN.findall(chunk)]
        joined = "".join(parts)
        if len(joined) == 1:
            run.append(joined)
            continue
        words.extend(["".join(run)] if len(run) >= 3 else run)
        run = []
        if joined:
            words.append(joined)
            if len(parts) > 1:
                words.extend(parts)
    return words


def _forms(word: str) -> set[str]:
    """A word as written and with stretched letters ("nuuude", "pooorn") shrunk to one or two."""
    return {word, _STRETCH.sub(r"\1", word), _STRETCH.sub(r"\1\1", word)}


class Matcher:
    """Finds any of a set of terms (words or phrases) in text, by whole words."""

    def __init__(self, terms: Iterable[str]) -> None:
        self.words: dict[str, str] = {}  # normalised single word -> the term as listed
        self.phrases: dict[str, str] = {}  # normalised words of a phrase, joined -> the term as listed
        for term in terms:
            parts = tokens(term)
            if len(parts) == 1:
                self.words.setdefault(parts[0], term.strip())
            elif parts:
                self.phrases.setdefault("".join(parts), term.strip())

    def __bool__(self) -> bool:
        return bool(self.words or self.phrases)

    def _lookup(self, table: dict[str, str], candidate: str) -> str | None:
        for form in _forms(candidate):
            for suffix in _SUFFIXES:
                if form.endswith(suffix) and (stem := form[: len(form) - len(suffix)]) in table:
                    return table[stem]
        return None

    def find(self, text: str | Sequence[str]) -> str | None:
        """The first listed term found in `text` (or in its `tokens`), or None."""
        words = tokens(text) if isinstance(text, str) else list(text)
        for word in words:
            if hit := self._lookup(self.words, word):
                return hit
        if self.phrases:  # adjacent words, joined, against phrases only: "an al" must not read as one word
            for size in (2, 3):
                for i in range(len(words) - size + 1):
                    if hit := self._lookup(self.phrases, "".join(words[i:i + size])):
                        return hit
        return None


BUILTIN = Matcher(BUILTIN_TERMS)
MINOR_ONLY = Matcher(MINOR_ONLY_TERMS)
MINORS = Matcher(MINOR_TERMS)


def check_prompt(prompt: str, *, age_restricted: bool, policy: str = DEFAULT_POLICY,
                 server_terms: Iterable[str] = ()) -> Block | None:
    """Whether a prompt for an image or video may run in this channel; the first rule it breaks, or None."""
    words = tokens(prompt)
    sexual = BUILTIN.find(words)
    if (hit := MINOR_ONLY.find(words)) or (sexual and (hit := MINORS.find(words))):
        return Block("minors", hit)
    if hit := Matcher(server_terms).find(words):
        return Block("server", hit)
    if sexual and policy == "never":
        return Block("builtin-never", sexual)
    if sexual and not age_restricted:
        return Block("builtin", sexual)
    return None


def check_model(nsfw_model: bool, *, age_restricted: bool, policy: str = DEFAULT_POLICY) -> Block | None:
    """Catalog entries marked `nsfw = true` run only where adult content is allowed."""
    if not nsfw_model:
        return None
    if policy == "never":
        return Block("model-never")
    return None if age_restricted else Block("model")


def output_needs_check(task: str, *, age_restricted: bool, policy: str = DEFAULT_POLICY) -> bool:
    """Whether a finished job's images (or video frames) go through the classifier before they are posted."""
    return task in CHECKED_OUTPUT_TASKS and (policy == "never" or not age_restricted)


# --- the output classifier ------------------------------------------------------------------------------------

NSFW_LABELS = frozenset({"nsfw", "porn", "hentai", "sexy", "explicit", "adult", "unsafe", "sexual", "nudity"})


def nsfw_score(labels: Iterable[tuple[str, float]]) -> float:
    """The highest score among labels that mean adult content ("nsfw", "porn", "hentai", ...)."""
    return max((float(score) for label, score in labels if label.strip().lower() in NSFW_LABELS), default=0.0)


def classifier_name(guild_settings: dict[str, Any]) -> str | None:
    """The catalog entry that classifies outputs: the server's `safety_model`, else "nsfw-detector".

    `safety_model = "off"` turns the output check off for the server.
    """
    name = guild_settings.get("safety_model") or DEFAULT_CLASSIFIER
    return None if name == CLASSIFIER_OFF else name


def threshold(guild_settings: dict[str, Any]) -> float:
    try:
        return min(1.0, max(0.0, float(guild_settings.get("nsfw_threshold", DEFAULT_THRESHOLD))))
    except (TypeError, ValueError):
        return DEFAULT_THRESHOLD


def policy_of(guild_settings: dict[str, Any]) -> str:
    policy = guild_settings.get("nsfw", DEFAULT_POLICY)
    return policy if policy in POLICIES else DEFAULT_POLICY


# --- the audit notice -----------------------------------------------------------------------------------------


def audit_notice(*, user_id: int, command: str, rule: str, channel_id: int | None, prompt: str = "",
                 job_id: str = "", locale: str | None = None) -> str:
    """A short notice for the server's audit channel: who, which command, which rule, and a prompt excerpt."""
    from bot.i18n import t

    where = t("safety.audit_where", locale, channel=f"<#{channel_id}>") if channel_id else ""
    label = t(f"safety.rule.{rule}", locale) if rule in RULE_LABELS else rule
    line = t("safety.audit", locale, command=command, user=f"<@{user_id}>", id=user_id, where=where, rule=label)
    if job_id:
        line += t("safety.audit_job", locale, id=job_id)
    if prompt:
        excerpt = " ".join(prompt.split())
        if len(excerpt) > AUDIT_PROMPT_CHARS:
            excerpt = excerpt[: AUDIT_PROMPT_CHARS - 1] + "…"
        safe = excerpt.replace("`", "ˋ").replace("|", "¦")
        line += f"\n> ||{safe}||"  # hidden until clicked: the channel may be read by people who did not ask
    return line[:2000]
