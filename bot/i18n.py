"""natty in two languages, en-US and pt-BR: message catalogs, the locale a reply uses, and command translations.

Replies: every user-facing message is a key in `bot/locales/<locale>.json` (flat `key -> template`, with
`{placeholders}` filled by `str.format`), looked up with `t(key, locale, **values)`. A key missing from the
pt-BR catalog falls back to English; a key missing from both is a bug (tests/test_i18n.py checks that both
catalogs hold every key the code uses, with the same placeholders).

Which language a person is answered in (`pick_locale`):

1. their own Discord locale, when natty speaks it (matched by language: "en-GB" reads en-US, "pt-PT" pt-BR);
2. else the server's `/settings language` (stored as "en-US" or "pt-BR" in the guild settings);
3. else the server's Discord locale (a community server's "preferred locale"), when natty speaks it;
4. else en-US.

The user's own choice wins because it is the most specific signal: a Brazilian in an English-speaking server
still reads Portuguese, and the server's setting covers everyone whose Discord language natty does not speak.
Public messages that belong to no single person (a game round, a collab panel) use the server's setting.

Jobs keep the locale picked when they were submitted (`job.locale`), so their progress, result and failure
messages stay in the requester's language, after a restart too.

Commands: `NattyTranslator` gives Discord the pt-BR names and descriptions of every command, option and
choice from `bot/locales/commands.pt-BR.json` (sections "names", "descriptions" and "choices", each keyed by
the English string in the code). Discord then shows pt-BR users "/imaginar" and still sends the bot the
English names, so the code only ever sees those.
"""

from __future__ import annotations

import json
import string
from functools import cache
from importlib import resources
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from models.errors import BackendError, ErrorKind, shown_detail

LANGUAGES = ("en-US", "pt-BR")
DEFAULT = "en-US"
LANGUAGE_NAMES = {"en-US": "English", "pt-BR": "Português (Brasil)"}
# Discord locales natty answers in; everything else goes through the server's setting
_BY_LANGUAGE = {"en": "en-US", "pt": "pt-BR"}
COMMAND_LOCALES = {"pt-BR": discord.Locale.brazil_portuguese}


def _load(name: str) -> dict[str, Any]:
    return json.loads(resources.files("bot").joinpath("locales", name).read_text(encoding="utf-8"))


@cache
def catalog(locale: str) -> dict[str, str]:
    """The message catalog of one language (`key -> template`)."""
    return _load(f"{locale}.json")


@cache
def command_catalog(locale: str) -> dict[str, dict[str, str]]:
    """Command translations of one language: {"names"|"descriptions"|"choices": {English: translation}}."""
    return _load(f"commands.{locale}.json")


def supported(locale: str | discord.Locale | None) -> str | None:
    """The catalog locale for a Discord locale ("pt-BR", "en-GB" -> "en-US"), or None when natty lacks it."""
    if locale is None:
        return None
    value = str(locale.value if isinstance(locale, discord.Locale) else locale)
    if value in LANGUAGES:
        return value
    return _BY_LANGUAGE.get(value.split("-")[0].lower())


def pick_locale(user_locale: str | discord.Locale | None, server_language: str | None = None,
                guild_locale: str | discord.Locale | None = None) -> str:
    """The language to answer someone in: theirs, else the server's setting, else the server's locale, else en-US."""
    return supported(user_locale) or supported(server_language) or supported(guild_locale) or DEFAULT


def t(key: str, locale: str | None = None, /, **values: Any) -> str:
    """The message `key` in `locale` (en-US when the language or the key is missing), filled with `values`."""
    loc = supported(locale) or DEFAULT
    template = catalog(loc).get(key)
    if template is None:
        template = catalog(DEFAULT)[key]  # a KeyError here is a bug: the key is in neither catalog
    return template.format(**values) if values else template


def has_key(key: str) -> bool:
    """Whether the English catalog (which every other language falls back to) has `key`."""
    return key in catalog(DEFAULT)


def placeholders(template: str) -> set[str]:
    """The `{names}` a template uses."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(template) if name}


# --- backend failures ------------------------------------------------------------------------------------------


def _wait(seconds: float | None, loc: str) -> str:
    if seconds is None:
        return t("error.a_while", loc)
    seconds = max(1, round(seconds))
    return t("error.seconds", loc, n=seconds) if seconds < 120 else t("error.minutes", loc, n=round(seconds / 60))


def error_message(error: BaseException, model: str | None, locale: str | None) -> str:
    """A backend failure as one short, specific sentence in `locale`: the only place that words failures
    (the "error.<kind>" messages; {name} the model in bold, {wait} a duration, {reason} the provider's reason)."""
    loc = supported(locale) or DEFAULT
    if not isinstance(error, BackendError):
        return t("error.unexpected", loc)
    named = error.model or model
    name = f"**{named}**" if named else t("error.model", loc)
    kind = error.kind
    if kind is ErrorKind.NOT_CONFIGURED and error.detail:
        return shown_detail(error.detail)
    reason = ""
    if kind is ErrorKind.BAD_REQUEST:
        reason = shown_detail(error.detail) if error.detail else t("error.no_reason", loc)
    elif kind is ErrorKind.REFUSED:
        reason = t("error.refused_reason", loc, detail=shown_detail(error.detail)) if error.detail else "."
    return t(f"error.{kind.value}", loc, name=name, wait=_wait(error.retry_after, loc), reason=reason)


def cancelled(locale: str | None) -> str:
    return error_message(BackendError(ErrorKind.CANCELLED), None, locale)


# --- command names and descriptions ----------------------------------------------------------------------------

_SECTIONS = {
    Where.command_name: "names", Where.group_name: "names", Where.parameter_name: "names",
    Where.command_description: "descriptions", Where.group_description: "descriptions",
    Where.parameter_description: "descriptions", Where.choice_name: "choices",
}


def translate_command_string(text: str, locale: str, where: Where) -> str | None:
    """The translation of one command string, or None when there is none."""
    section = _SECTIONS.get(where)
    if section is None or locale == DEFAULT:
        return None
    return command_catalog(locale).get(section, {}).get(text)


def command_word(text: str, locale: str | None, section: str = "names") -> str:
    """A command name, description or choice as `locale` shows it ("imagine" -> "imaginar"), for messages."""
    loc = supported(locale) or DEFAULT
    if loc == DEFAULT:
        return text
    return command_catalog(loc).get(section, {}).get(text, text)


class NattyTranslator(app_commands.Translator):
    """Command names, descriptions, options and choices in pt-BR, from `commands.pt-BR.json`."""

    async def translate(self, string: app_commands.locale_str, locale: discord.Locale,
                        context: app_commands.TranslationContextTypes) -> str | None:
        for ours, theirs in COMMAND_LOCALES.items():
            if locale is theirs:
                return translate_command_string(string.message, ours, context.location)
        return None
