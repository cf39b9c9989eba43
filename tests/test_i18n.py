"""en-US and pt-BR: both catalogs hold every key, every command has its pt-BR words, and a pt-BR user reads
Portuguese end to end while an en-US user in the same server still reads English."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot import i18n
from bot.client import EXTENSIONS, NattyBot
from bot.config import Settings
from bot.i18n import LANGUAGES, NattyTranslator, catalog, command_catalog, pick_locale, placeholders, t
from models.catalog import load_catalog
from models.errors import TEMPLATES, BackendError, ErrorKind, user_message
from tests.fakediscord import FakeInteraction, FakeMessage
from tests.harness import Natty

ROOT = Path(__file__).resolve().parents[1]
KEY_CALL = re.compile(r"""\bt\(\s*["']([A-Za-z0-9_.\-]+)["']""")
NAME = re.compile(r"^[-_'\w]{1,32}$")


# --- the catalogs --------------------------------------------------------------------------------------------


def keys_used_in_code() -> dict[str, str]:
    """Every literal key passed to t(...) in bot/ and cogs/, with the file that uses it."""
    used: dict[str, str] = {}
    for folder in ("bot", "cogs"):
        for path in (ROOT / folder).rglob("*.py"):
            for key in KEY_CALL.findall(path.read_text(encoding="utf-8")):
                used.setdefault(key, str(path.relative_to(ROOT)))
    return used


def test_every_key_the_code_uses_exists_in_both_languages():
    used = keys_used_in_code()
    assert len(used) > 100  # the scan finds the calls
    for locale in LANGUAGES:
        missing = {key: where for key, where in used.items() if key not in catalog(locale)}
        assert not missing, f"missing from {locale}.json: {missing}"


def test_both_catalogs_have_the_same_keys_and_placeholders():
    en, pt = catalog("en-US"), catalog("pt-BR")
    assert sorted(set(en) - set(pt)) == [], "keys only in en-US.json"
    assert sorted(set(pt) - set(en)) == [], "keys only in pt-BR.json"
    for key in en:
        assert placeholders(en[key]) == placeholders(pt[key]), f"{key}: placeholders differ"
    untranslated = [k for k in en if en[k] == pt[k] and any(c.isalpha() for c in en[k]) and len(en[k]) > 12]
    assert untranslated == [], f"pt-BR copies the English: {untranslated}"


def test_catalog_files_are_flat_string_maps():
    for locale in LANGUAGES:
        data = json.loads((ROOT / "bot" / "locales" / f"{locale}.json").read_text(encoding="utf-8"))
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in data.items())


def test_backend_failures_are_worded_by_one_function_in_both_languages():
    for kind in ErrorKind:
        assert f"error.{kind.value}" in catalog("pt-BR")
        # the English catalog repeats models/errors.py's templates word for word
        assert catalog("en-US")[f"error.{kind.value}"] == TEMPLATES[kind], kind
    error = BackendError(ErrorKind.RATE_LIMITED, retry_after=30, model="flux")
    assert i18n.error_message(error, None, "en-US") == user_message(error)
    assert i18n.error_message(error, None, "pt-BR") == ("**flux** atingiu o limite de uso do provedor. "
                                                      "Tente de novo em 30 s.")
    assert i18n.error_message(RuntimeError("x"), "m", "pt-BR").startswith("Algo deu errado")
    assert i18n.cancelled("pt-BR") == "Cancelado."


def test_t_falls_back_to_english_and_fills_placeholders():
    assert t("progress.queued", "pt-BR", position=3, eta=", cerca de 20 s", id="abc", model="m") == \
        "⏳ Na fila: posição 3, cerca de 20 s. `abc` · m"
    assert t("result.ai_label", "fr") == "AI-generated"
    assert t("result.ai_label", None) == "AI-generated"


def test_pick_locale_prefers_the_user_then_the_server_setting_then_the_server_locale():
    assert pick_locale("pt-BR", "en-US") == "pt-BR"
    assert pick_locale("en-US", "pt-BR") == "en-US"
    assert pick_locale("en-GB", "pt-BR") == "en-US"  # English is English
    assert pick_locale("fr", "pt-BR") == "pt-BR"
    assert pick_locale("fr", None) == "en-US"
    assert pick_locale("fr", None, "pt-BR") == "pt-BR"
    assert pick_locale(discord.Locale.brazil_portuguese) == "pt-BR"
    assert pick_locale(None, None) == "en-US"


# --- the commands ------------------------------------------------------------------------------------------


async def build_tree(tmp_path: Path) -> NattyBot:
    """The bot with every cog loaded, not connected to anything."""
    settings = Settings(discord_token="x", database_url=f"sqlite:///{tmp_path}/natty.db", data_dir=tmp_path / "data")
    bot = NattyBot(settings, load_catalog(settings.models_file))
    await bot.storage.open()
    for name in EXTENSIONS:
        await bot.load_extension(name)
    return bot


def command_strings(bot: NattyBot) -> list[tuple[str, str, Where]]:
    """(path, English string, where) for every name, description and choice of the command tree."""
    found: list[tuple[str, str, Where]] = []

    def walk(cmd: Any, path: str) -> None:
        path = f"{path} {cmd.name}".strip()
        if isinstance(cmd, app_commands.ContextMenu):
            found.append((path, cmd.name, Where.command_name))
            return
        group = isinstance(cmd, app_commands.Group)
        found.append((path, cmd.name, Where.group_name if group else Where.command_name))
        found.append((path, cmd.description, Where.group_description if group else Where.command_description))
        if group:
            for sub in cmd.commands:
                walk(sub, path)
            return
        for param in cmd.parameters:
            found.append((f"{path} {param.name}", param.name, Where.parameter_name))
            found.append((f"{path} {param.name}", param.description, Where.parameter_description))
            for choice in param.choices:
                found.append((f"{path} {param.name}", choice.name, Where.choice_name))

    for cmd in bot.tree.get_commands():
        walk(cmd, "")
    return found


async def test_every_command_option_and_choice_has_pt_br_words(tmp_path):
    bot = await build_tree(tmp_path)
    try:
        strings = command_strings(bot)
        assert len(strings) > 150
        missing = [(path, text) for path, text, where in strings
                   if i18n.translate_command_string(text, "pt-BR", where) is None]
        assert missing == [], f"no pt-BR translation for {missing}"
        for path, text, where in strings:
            word = i18n.translate_command_string(text, "pt-BR", where)
            assert word
            if where in (Where.command_name, Where.group_name, Where.parameter_name) and text.islower():
                assert NAME.match(word) and word == word.lower(), f"{path}: {word!r} is not a valid name"
            elif where in (Where.command_description, Where.group_description, Where.parameter_description):
                assert 1 <= len(word) <= 100, f"{path}: description too long"
            elif where is Where.choice_name:
                assert 1 <= len(word) <= 100
        # the translator hands Discord the same words, only for pt-BR
        translator = NattyTranslator()
        imagine = bot.tree.get_command("imagine")
        assert imagine is not None
        payload = await imagine.get_translated_payload(bot.tree, translator)  # type: ignore[union-attr]
        assert payload["name_localizations"] == {"pt-BR": "imaginar"}
        assert payload["description_localizations"]["pt-BR"] == "Cria imagens a partir de um prompt"
        # no translation is unused: the catalog matches the tree
        used = {(section, text) for _, text, where in strings
                if (section := i18n._SECTIONS.get(where))}
        listed = {(section, text) for section, table in command_catalog("pt-BR").items() for text in table}
        assert listed - used == set(), "commands.pt-BR.json translates strings no command has"
    finally:
        await bot.storage.close()


def test_option_names_stay_unique_within_each_command_in_portuguese():
    names = command_catalog("pt-BR")["names"]
    assert len(set(names.values())) == len(names)


# --- end to end --------------------------------------------------------------------------------------------


async def final(ix: FakeInteraction, timeout: float = 60) -> FakeMessage:
    """The interaction's message once its job is over, whatever the language of its Cancel button."""

    def done(ix: FakeInteraction) -> bool:
        msg = ix.original
        return bool(msg and msg.has_body and not msg.loading
                    and not any((b.custom_id or "").startswith("natty:cancel:") for b in msg.buttons)
                    and not msg.content.startswith(("⏳", "⚙️")) and "\n⏳" not in msg.content
                    and "\n⚙️" not in msg.content)

    await ix.wait_final(done, timeout=timeout)
    assert ix.original is not None
    return ix.original


def help_text(msg: FakeMessage) -> str:
    embed = msg.embeds[0]
    return " ".join([embed["description"], *(f["name"] + " " + f["value"] for f in embed["fields"]),
                     embed.get("footer", {}).get("text", "")])


async def test_a_pt_br_user_gets_portuguese_names_and_messages_and_an_en_us_user_english(tmp_path):
    async with Natty.running(tmp_path) as n:
        joao = n.server.add_user("joao", locale="pt-BR", guilds=[n.guild])

        # the synced commands carry their pt-BR names and descriptions
        synced = {c["name"]: c for c in n.server.commands[None]}
        assert synced["imagine"]["name_localizations"]["pt-BR"] == "imaginar"
        assert synced["help"]["name_localizations"]["pt-BR"] == "ajuda"
        assert synced["Describe"]["name_localizations"]["pt-BR"] == "Descrever"
        prompt = next(o for o in synced["imagine"]["options"] if o["name"] == "prompt")
        assert prompt["description_localizations"]["pt-BR"] == "O que desenhar"
        aspect = next(o for o in synced["imagine"]["options"] if o["name"] == "aspect")
        assert aspect["name_localizations"]["pt-BR"] == "formato"
        assert {c["name_localizations"]["pt-BR"] for c in aspect["choices"]} >= {"quadrado", "retrato"}
        settings = synced["settings"]
        assert settings["name_localizations"]["pt-BR"] == "configuracoes"
        assert all("pt-BR" in o["name_localizations"] for o in settings["options"])

        # /help in Portuguese for João, in English for Alice
        pt_help = help_text(await (await n.server.slash(joao, n.general, "help")).response())
        assert "/imaginar" in pt_help and "Cria imagens a partir de um prompt" in pt_help
        assert "Modelos neste servidor" in pt_help and "test-text-to-image" in pt_help
        en_help = help_text(await (await n.server.slash(n.alice, n.general, "help")).response())
        assert "/imagine" in en_help and "Make images from a prompt" in en_help
        assert "Models on this server" in en_help

        # an /imagine result
        pt_made = await final(await n.server.slash(joao, n.general, "imagine", prompt="um farol ao entardecer"))
        assert pt_made.attachments and "Gerado por IA" in pt_made.content and "semente" in pt_made.content
        assert [b.label for b in pt_made.buttons] == ["Nova versão", "Variar", "Remixar", "Apagar"]
        en_made = await final(await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse"))
        assert "AI-generated" in en_made.content and "Gerado por IA" not in en_made.content
        assert [b.label for b in en_made.buttons] == ["Re-roll", "Vary", "Remix", "Delete"]

        # the refusal of an empty prompt
        pt_empty = await (await n.server.slash(joao, n.general, "imagine", prompt="   ")).response()
        assert pt_empty.ephemeral and "O prompt está vazio" in pt_empty.content
        en_empty = await (await n.server.slash(n.alice, n.general, "imagine", prompt="   ")).response()
        assert "The prompt is empty" in en_empty.content

        # /jobs lists João's jobs under a Portuguese title
        jobs = await n.server.slash(joao, n.general, "jobs")
        await jobs.wait_final(lambda ix: bool(ix.original and ix.original.embeds))
        assert jobs.original is not None and jobs.original.embeds[0]["title"] == "Seus pedidos"
        assert n.server.violations == []


async def test_the_server_language_speaks_to_users_whose_language_natty_lacks(tmp_path):
    async with Natty.running(tmp_path) as n:
        pierre = n.server.add_user("pierre", locale="fr", guilds=[n.guild])
        before = await (await n.server.slash(pierre, n.general, "imagine", prompt=" ")).response()
        assert "The prompt is empty" in before.content

        done = await (await n.server.slash(n.mod, n.general, "settings language", language="pt-BR")).response()
        assert done.ephemeral and "Português (Brasil)" in done.content

        after = await (await n.server.slash(pierre, n.general, "imagine", prompt=" ")).response()
        assert "O prompt está vazio" in after.content
        made = await final(await n.server.slash(pierre, n.general, "imagine", prompt="un phare"))
        assert "Gerado por IA" in made.content
        helped = help_text(await (await n.server.slash(pierre, n.general, "help")).response())
        assert "Modelos neste servidor" in helped
        # a user whose own language natty speaks keeps it
        alice = await (await n.server.slash(n.alice, n.general, "imagine", prompt=" ")).response()
        assert "The prompt is empty" in alice.content
        assert n.server.violations == []
