"""en-US and pt-BR: both catalogs hold every key, every command has its pt-BR words, and a pt-BR user reads
Portuguese end to end while an en-US user in the same server still reads English."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Where

from bot import i18n
from bot.client import EXTENSIONS, NattyBot
from bot.community import game as g
from bot.config import Settings
from bot.i18n import LANGUAGES, NattyTranslator, catalog, command_catalog, pick_locale, placeholders, t
from models.catalog import load_catalog
from models.errors import BackendError, ErrorKind
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
    for kind in ErrorKind:  # the words live in the catalogs only (models/errors.py classifies, never words)
        assert f"error.{kind.value}" in catalog("pt-BR") and f"error.{kind.value}" in catalog("en-US")
    error = BackendError(ErrorKind.RATE_LIMITED, retry_after=30, model="flux")
    assert i18n.error_message(error, None, "en-US") == "**flux** is rate-limited by its provider. Try again in 30 s."
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


async def test_every_task_is_made_by_one_command_which_gives_its_buttons(tmp_path):
    """A task comes from a `Backend` method (models.base TASKS) and meets Discord in one command's `extras`
    (cogs.common `makes`): the policy and the buttons read the tree, so a task no command makes is caught here."""
    from bot.policy import MAKES, tasks_of
    from models.base import TASKS

    bot = await build_tree(tmp_path)
    try:
        commands, actions = tasks_of(bot.tree)
        assert set(commands) == set(TASKS)
        assert commands["image-to-image"] == "imagine" and commands["image-classification"] == "natty"
        assert actions["text-to-image"] == ("reroll", "vary", "remix", "delete") and actions["image-to-text"] == ()
        video = bot.tree.get_command("video")
        assert isinstance(video, app_commands.Command)
        video.extras[MAKES] = {"text-to-3d": ()}  # a command claiming a task no backend declares is refused
        with pytest.raises(ValueError, match="text-to-3d"):
            tasks_of(bot.tree)
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


# --- public messages in the server's language -----------------------------------------------------------------


async def test_a_game_speaks_the_servers_language_and_check_answers_in_the_users(tmp_path):
    async with Natty.running(tmp_path) as n:
        joao = n.server.add_user("joao", locale="pt-BR", guilds=[n.guild])
        await (await n.server.slash(n.mod, n.general, "settings language", language="pt-BR")).response()

        # Alice reads English herself, but the game is the channel's: it speaks the server's language
        intro = await (await n.server.slash(n.alice, n.general, "natty play", rounds=1, kind="digits",
                                            seconds=60)).response()
        assert "1 rodada de dígitos escritos à mão" in intro.content and "60 s cada" in intro.content
        msg = await n.wait(lambda: next((m for m in n.general.messages
                                         if "rodada 1 de 1**" in m.content and m.buttons), None))
        assert "Natural ou IA? Vote antes de o tempo acabar" in msg.content and "dígitos escritos à mão" in msg.content
        ids = await g.SessionStore(n.bot.storage, "game").open_ids()
        game = await g.load_game(n.bot.storage, ids[0])
        assert game is not None and game.locale == "pt-BR"
        rnd = game.rounds[0]
        words = {g.NATURAL: "Natural", g.AI: "IA"}
        labels = [b.label for b in msg.buttons]
        assert labels[-1] == "Encerrar rodada"
        if len(rnd.items) == 1:
            assert labels[:2] == ["Natural", "IA"]
        else:
            assert labels[:4] == ["1: Natural", "1: IA", "2: Natural", "2: IA"]
        first = words[rnd.items[0].truth]
        vote = await (await n.server.press(joao, msg, label=first if len(rnd.items) == 1 else f"1: {first}")).response()
        assert vote.ephemeral and "Seu palpite" in vote.content
        await (await n.server.press(n.alice, msg, label="Encerrar rodada")).response()
        reveal = await n.wait(lambda: next((m for m in n.general.messages
                                            if "Rodada 1 de 1: a revelação" in m.content), None))
        assert f"Acertaram: <@{joao.id}>" in reveal.content
        assert "era **natural**" in reveal.content or "era **gerado por IA**" in reveal.content
        final = await n.wait(lambda: next((m for m in n.general.messages if "Fim do Natty or Not" in m.content), None))
        assert "Placar final" in final.content and f"🥇 <@{joao.id}>: 1 ponto" in final.content
        board = await (await n.server.slash(n.alice, n.general, "natty leaderboard")).response()
        assert board.embeds[0]["title"] == "🏆 Ranking do Natty or Not"
        assert f"<@{joao.id}>: **1** ponto (acertou 1, errou 0, 100% de acerto; 1 partida)" in \
            board.embeds[0]["description"]

        # /natty check answers one person: João reads Portuguese, Alice English, in the same server
        pt = await (await n.server.slash(joao, n.general, "natty check", text="Eu mesmo escrevi isto.")).response()
        (embed,) = pt.embeds
        assert embed["title"] == "🔍 Nada conclusivo" and embed["description"] == \
            "O que o natty conseguiu ler desse texto, e quanto isso vale."
        fields = {f["name"]: f["value"] for f in embed["fields"]}
        assert "Nenhum pedido do natty" in fields["O que encontrei"]
        assert "nada pode ser provado" in fields["O quanto isso prova"]
        assert embed["footer"]["text"].startswith("Sem veredito")
        en = await (await n.server.slash(n.alice, n.general, "natty check", text="I wrote this myself.")).response()
        assert en.embeds[0]["title"] == "🔍 Nothing conclusive"
        assert {f["name"] for f in en.embeds[0]["fields"]} == {"What I found", "How much that proves"}
        assert n.server.violations == []


async def test_a_collab_session_speaks_the_servers_language_and_its_form_the_users(tmp_path):
    async with Natty.running(tmp_path) as n:
        joao = n.server.add_user("joao", locale="pt-BR", guilds=[n.guild])
        await (await n.server.slash(n.mod, n.general, "settings language", language="pt-BR")).response()
        start = await (await n.server.slash(n.alice, n.general, "collab start", theme="um farol",
                                            minutes=30.0)).response()
        assert "abriu uma sessão colaborativa" in start.content
        thread = await n.wait(lambda: start.thread)
        assert thread.name == "Colab: um farol"
        panel = await n.wait(lambda: next((m for m in thread.messages if "Sessão colaborativa" in m.content), None))
        assert [b.label for b in panel.buttons] == ["Adicionar ideia", "Gerar"]

        # the form is one person's: Alice's in English, João's in Portuguese
        en_form = await (await n.server.press(n.alice, panel, label="Adicionar ideia")).wait_modal()
        assert en_form.title == "Add an idea" and en_form.fields[0].label == "Your idea"
        press = await n.server.press(joao, panel, label="Adicionar ideia")
        form = await press.wait_modal()
        assert form.title == "Adicionar uma ideia" and form.fields[0].label == "Sua ideia"
        added = await (await n.server.submit_modal(joao, press, {form.fields[0].custom_id: "ao entardecer"})).response()
        assert "Sua ideia foi adicionada" in added.content
        idea = await n.wait(lambda: next((m for m in thread.messages if "ao entardecer" in m.content and m.buttons),
                                         None))
        assert f"ideia 1 de <@{joao.id}>" in idea.content and idea.buttons[0].label == "Votar (0)"
        press = await n.server.press(joao, panel, label="Adicionar ideia")
        form = await press.wait_modal()
        again = await (await n.server.submit_modal(joao, press,
                                                   {form.fields[0].custom_id: "Ao  entardecer"})).response()
        assert again.ephemeral and "Essa ideia já está na lista" in again.content

        await (await n.server.press(n.alice, panel, label="Gerar")).response()
        result = await n.wait(lambda: next((m for m in thread.messages if "Resultado colaborativo" in m.content),
                                           None), timeout=60)
        assert "Feito em conjunto: anfitrião" in result.content and "Gerado por IA" in result.content
        assert "sessão `" in result.content and [b.label for b in result.buttons] == ["Remixar juntos"]
        await n.wait(lambda: "Pronto: o resultado está logo abaixo" in panel.content)
        assert n.server.violations == []

