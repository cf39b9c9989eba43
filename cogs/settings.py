"""/settings: what natty does on this server, for members with Manage Server. The rules that enforce these
settings (commands turned off, channels, limits, defaults) live in `bot.policy`.

Everything is stored in the server's settings (`bot.save_guild_settings`); see `KEYS` for what each key means.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import safety
from bot.i18n import LANGUAGE_NAMES, command_word, pick_locale, t
from bot.policy import ALWAYS_ON, channel_mentions, may_configure, task_name
from bot.ui import delivery
from cogs.common import choices, lang, natty
from models.base import TASKS

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.settings")

KEYS = {
    "defaults": "{task: model name}: the model a task uses when the user names none",
    "disabled_models": "[model name]: catalog entries this server cannot use",
    "disabled_commands": "[command name]: commands turned off here (jobs they would start are refused)",
    "channels": "[channel id]: where the bot answers (threads of those channels too); empty means everywhere",
    "max_jobs_per_user": "jobs one member may have queued or running at once",
    "max_jobs_per_guild": "jobs the whole server may have queued or running at once",
    "cooldown_seconds": "seconds a member waits between jobs",
    "daily_quota": "jobs a member may start per UTC day (absent: no quota)",
    "nsfw": "'age-restricted' (adult content only in age-restricted channels) or 'never'",
    "safety_model": "the image-classification entry that checks image outputs ('off': none; absent: nsfw-detector)",
    "nsfw_threshold": "the classifier's adult-content score above which an image is withheld (default 0.7)",
    "blocklist": "[word or phrase]: blocked in image and video prompts in every channel",
    "audit_channel": "channel id that gets a short notice of each blocked request (absent: none)",
    "language": "'en-US' or 'pt-BR': the language of natty's messages on this server",
}
LANGUAGES = LANGUAGE_NAMES
MAX_BLOCKLIST = 200
MAX_CHANNELS = 50


@app_commands.default_permissions(manage_guild=True)
@app_commands.guild_only()
class ServerSettings(commands.GroupCog, group_name="settings",
                     group_description="natty's settings for this server (Manage Server)"):
    """/settings …: every change is stored at once and answered with the new summary, only to the admin."""

    channels = app_commands.Group(name="channels", description="Where natty answers")
    blocklist = app_commands.Group(name="blocklist", description="Words blocked in image and video prompts")

    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        super().__init__()

    # --- permission ---------------------------------------------------------------------------------------

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        # default_permissions only hides the command by default; server admins can grant it to anyone
        loc = await lang(natty(interaction))
        if interaction.guild_id is None:
            raise app_commands.CheckFailure(t("settings.guild_only", loc))
        if not may_configure(interaction.permissions):
            raise app_commands.CheckFailure(t("settings.not_admin", loc))
        return True

    # --- helpers ------------------------------------------------------------------------------------------

    async def _settings(self, interaction: discord.Interaction[NattyBot]) -> dict[str, Any]:
        gs = await self.bot.guild_settings(interaction.guild_id)
        return copy.deepcopy(gs)

    async def _save(self, interaction: discord.Interaction[NattyBot], gs: dict[str, Any], done: str) -> None:
        assert interaction.guild_id is not None
        await self.bot.save_guild_settings(interaction.guild_id, gs)
        log.info("guild %s: settings changed by %s: %s", interaction.guild_id, interaction.user.id, done)
        await self._reply(interaction, f"✅ {done}", gs)

    async def _reply(self, interaction: discord.Interaction[NattyBot], text: str,
                     gs: dict[str, Any] | None = None) -> None:
        embed = self.summary(gs, await lang(interaction)) if gs is not None else None
        kwargs: dict[str, Any] = {"embed": embed} if embed else {}
        await interaction.response.send_message(text, ephemeral=True,
                                                **kwargs)

    def _commands(self) -> list[str]:
        names = {c.name for c in self.bot.tree.get_commands(type=discord.AppCommandType.chat_input)}
        return sorted(names - ALWAYS_ON)

    def summary(self, gs: dict[str, Any], locale: str | None = None) -> discord.Embed:
        """The server's settings at a glance, with the bot's defaults filled in."""
        bot = self.bot
        loc = locale
        cfg = bot.settings
        embed = discord.Embed(title=t("settings.title", loc), colour=discord.Colour.blurple())
        language = gs.get("language", "en-US")
        embed.description = t("settings.language_line", loc, language=LANGUAGES.get(language, language))
        disabled_cmds = gs.get("disabled_commands") or []
        embed.add_field(name=t("settings.commands", loc),
                        value=t("settings.turned_off", loc, names=", ".join(f"`/{command_word(c, loc)}`"
                                                                              for c in disabled_cmds))
                        if disabled_cmds else t("settings.all_on", loc), inline=False)
        channels = [int(c) for c in gs.get("channels") or []]
        embed.add_field(name=t("settings.channels", loc),
                        value=t("settings.only", loc, channels=channel_mentions(channels, 20, loc)) if channels
                        else t("settings.everywhere", loc), inline=False)
        defaults = gs.get("defaults") or {}
        lines = []
        for task in TASKS:
            entries = bot.policy.models_for(task, gs)
            if not entries:
                continue
            chosen = bot.policy.default_model(task, gs)
            mark = t("settings.set_here", loc) if defaults.get(task) else ""
            model = chosen.name if chosen else t("settings.none_can_run", loc)
            lines.append(f"{task_name(task, loc)}: **{model}**{mark}")
        disabled_models = gs.get("disabled_models") or []
        if disabled_models:
            lines.append(t("settings.turned_off", loc, names=", ".join(disabled_models)))
        embed.add_field(name=t("settings.models", loc), value="\n".join(lines) or t("settings.no_models", loc),
                        inline=False)
        quota = gs.get("daily_quota")
        embed.add_field(name=t("settings.limits", loc), value=t(
            "settings.limits_line", loc, per_user=gs.get("max_jobs_per_user", cfg.max_jobs_per_user),
            per_guild=gs.get("max_jobs_per_guild", cfg.max_jobs_per_guild),
            cooldown=f"{float(gs.get('cooldown_seconds', cfg.cooldown_seconds)):g}",
            quota=t("settings.quota_jobs", loc, quota=quota) if quota else t("common.none", loc)), inline=False)
        classifier = safety.classifier_name(gs)
        if classifier is None:
            check = t("settings.off", loc)
        elif bot.catalog.get(classifier) is None:
            check = t("settings.classifier_missing", loc, classifier=classifier)
        else:
            ok, why = bot.policy.can_run(classifier)
            check = t("settings.classifier", loc, classifier=classifier, threshold=f"{safety.threshold(gs):.0%}") + (
                "" if ok else t("settings.cannot_run", loc, reason=why))
        words = gs.get("blocklist") or []
        audit = f"<#{gs['audit_channel']}>" if gs.get("audit_channel") else t("common.none", loc)
        embed.add_field(name=t("settings.safety", loc), value=t(
            "settings.safety_lines", loc, policy=t(f"policy.{safety.policy_of(gs)}", loc), check=check,
            words=" ".join(f"||{w}||" for w in words) if words else t("settings.empty", loc), audit=audit),
            inline=False)
        return delivery.clamp_embed(embed)

    # --- commands -----------------------------------------------------------------------------------------

    @app_commands.command(name="show", description="natty's settings on this server")
    async def show(self, interaction: discord.Interaction[NattyBot]) -> None:
        await self._reply(interaction, "", await self._settings(interaction))

    @app_commands.command(name="model", description="The model a task uses when nobody names one")
    @app_commands.describe(task="Which task", model="A model for it, or 'auto' for the catalog's default")
    @app_commands.choices(task=[app_commands.Choice(name=task_name(task, "en-US"), value=task) for task in TASKS])
    async def model(self, interaction: discord.Interaction[NattyBot], task: str, model: str) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        defaults = gs.setdefault("defaults", {})
        if model == "auto":
            defaults.pop(task, None)
            await self._save(interaction, gs, t("settings.model_auto", loc, task=task_name(task, loc)))
            return
        entries = self.bot.policy.models_for(task, gs)
        if model not in {e.name for e in entries}:
            names = ", ".join(e.name for e in entries) or t("common.none", loc)
            await self._reply(interaction, t("settings.model_unknown", loc, model=model, task=task_name(task, loc),
                                             names=names))
            return
        defaults[task] = model
        note = ""
        ok, why = self.bot.policy.can_run(model)
        if not ok:
            note = t("settings.model_cannot_run", loc, reason=why)
        await self._save(interaction, gs, t("settings.model_set", loc, task=task_name(task, loc), model=model,
                                            note=note))

    @model.autocomplete("model")
    async def _model_complete(self, interaction: discord.Interaction[NattyBot],
                              current: str) -> list[app_commands.Choice[str]]:
        task = getattr(interaction.namespace, "task", None)
        gs = await self.bot.guild_settings(interaction.guild_id)
        entries = self.bot.policy.models_for(task, gs) if task else []
        names = ["auto", *(e.name for e in entries)]
        return choices((n, n) for n in names if current.lower() in n.lower())

    @app_commands.command(name="disable-model", description="Stop this server from using a model")
    @app_commands.describe(model="The model to turn off")
    async def disable_model(self, interaction: discord.Interaction[NattyBot], model: str) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        if self.bot.catalog.get(model) is None:
            await self._reply(interaction, t("settings.no_such_model", loc, model=model))
            return
        disabled = gs.setdefault("disabled_models", [])
        if model not in disabled:
            disabled.append(model)
        for task, name in list((gs.get("defaults") or {}).items()):
            if name == model:
                del gs["defaults"][task]
        await self._save(interaction, gs, t("settings.model_off", loc, model=model))

    @disable_model.autocomplete("model")
    async def _disable_complete(self, interaction: discord.Interaction[NattyBot],
                                current: str) -> list[app_commands.Choice[str]]:
        gs = await self.bot.guild_settings(interaction.guild_id)
        off = set(gs.get("disabled_models") or [])
        loc = await lang(interaction)
        return choices((f"{e.name} ({task_name(e.task, loc)})", e.name)
                       for e in self.bot.catalog.entries.values()
                       if e.name not in off and current.lower() in e.name.lower())

    @app_commands.command(name="enable-model", description="Let this server use a model again")
    @app_commands.describe(model="The model to turn back on")
    async def enable_model(self, interaction: discord.Interaction[NattyBot], model: str) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        disabled = gs.get("disabled_models") or []
        if model not in disabled:
            await self._reply(interaction, t("settings.model_not_off", loc, model=model))
            return
        disabled.remove(model)
        await self._save(interaction, gs, t("settings.model_on", loc, model=model))

    @enable_model.autocomplete("model")
    async def _enable_complete(self, interaction: discord.Interaction[NattyBot],
                               current: str) -> list[app_commands.Choice[str]]:
        gs = await self.bot.guild_settings(interaction.guild_id)
        return choices((n, n) for n in gs.get("disabled_models") or [] if current.lower() in n.lower())

    @app_commands.command(name="commands", description="Turn natty's commands off or on for this server")
    @app_commands.describe(disable="A command to turn off", enable="A command to turn back on")
    async def commands_(self, interaction: discord.Interaction[NattyBot], disable: str | None = None,
                        enable: str | None = None) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        disabled: list[str] = gs.setdefault("disabled_commands", [])
        known = self._commands()
        done = []
        # a command may be named as the member's Discord shows it ("/imaginar"); it is stored by its English name
        shown = {command_word(c, loc): c for c in known}
        disable, enable = (shown.get(n.lstrip("/"), n) if n is not None else None for n in (disable, enable))
        for name in (disable, enable):
            if name is not None and name.lstrip("/") not in known:
                await self._reply(interaction, t("settings.not_a_command", loc, command=name.lstrip("/"),
                                                 names=", ".join(f"/{command_word(c, loc)}" for c in known)))
                return
        if disable:
            name = disable.lstrip("/")
            if name not in disabled:
                disabled.append(name)
            done.append(t("settings.command_is_off", loc, command=command_word(name, loc)))
        if enable:
            name = enable.lstrip("/")
            if name in disabled:
                disabled.remove(name)
            done.append(t("settings.command_is_on", loc, command=command_word(name, loc)))
        if not done:
            await self._reply(interaction, t("settings.name_a_command", loc), gs)
            return
        await self._save(interaction, gs, t("settings.and", loc).join(done) + ".")

    @commands_.autocomplete("disable")
    async def _cmd_disable_complete(self, interaction: discord.Interaction[NattyBot],
                                    current: str) -> list[app_commands.Choice[str]]:
        gs = await self.bot.guild_settings(interaction.guild_id)
        off = set(gs.get("disabled_commands") or [])
        loc = await lang(interaction)
        typed = current.lower().lstrip("/")
        return choices((f"/{command_word(c, loc)}", c) for c in self._commands()
                       if c not in off and (typed in c or typed in command_word(c, loc)))

    @commands_.autocomplete("enable")
    async def _cmd_enable_complete(self, interaction: discord.Interaction[NattyBot],
                                   current: str) -> list[app_commands.Choice[str]]:
        gs = await self.bot.guild_settings(interaction.guild_id)
        loc = await lang(interaction)
        typed = current.lower().lstrip("/")
        return choices((f"/{command_word(c, loc)}", c) for c in gs.get("disabled_commands") or []
                       if typed in c or typed in command_word(c, loc))

    @channels.command(name="add", description="Let natty answer in this channel (then only in the listed ones)")
    @app_commands.describe(channel="The channel")
    async def channels_add(self, interaction: discord.Interaction[NattyBot], channel: discord.TextChannel) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        allowed: list[int] = gs.setdefault("channels", [])
        if channel.id not in allowed:
            if len(allowed) >= MAX_CHANNELS:
                await self._reply(interaction, t("settings.too_many_channels", loc, max=MAX_CHANNELS))
                return
            allowed.append(channel.id)
        await self._save(interaction, gs, t("settings.answers_in", loc, channels=channel_mentions(allowed, locale=loc)))

    @channels.command(name="remove", description="Stop natty answering in a listed channel")
    @app_commands.describe(channel="The channel")
    async def channels_remove(self, interaction: discord.Interaction[NattyBot], channel: discord.TextChannel) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        allowed: list[int] = gs.get("channels") or []
        if channel.id not in allowed:
            await self._reply(interaction, t("settings.channel_not_listed", loc, channel=f"<#{channel.id}>"))
            return
        allowed.remove(channel.id)
        if allowed:
            await self._save(interaction, gs, t("settings.answers_only_in", loc,
                                                channels=channel_mentions(allowed, locale=loc)))
        else:
            await self._save(interaction, gs, t("settings.answers_everywhere_again", loc))

    @channels.command(name="clear", description="Let natty answer in every channel")
    async def channels_clear(self, interaction: discord.Interaction[NattyBot]) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        gs.pop("channels", None)
        await self._save(interaction, gs, t("settings.answers_everywhere", loc))

    @app_commands.command(name="limits", description="Caps, cooldown and daily quota per member")
    @app_commands.describe(per_user="Jobs one member may have queued or running",
                           per_guild="Jobs the whole server may have queued or running",
                           cooldown="Seconds between one member's jobs", daily_quota="Jobs per member a day; 0: none",
                           reset="Back to the bot's defaults")
    async def limits(self, interaction: discord.Interaction[NattyBot],
                     per_user: app_commands.Range[int, 1, 100] | None = None,
                     per_guild: app_commands.Range[int, 1, 10_000] | None = None,
                     cooldown: app_commands.Range[int, 0, 86_400] | None = None,
                     daily_quota: app_commands.Range[int, 0, 100_000] | None = None, reset: bool = False) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        if reset:
            for key in ("max_jobs_per_user", "max_jobs_per_guild", "cooldown_seconds", "daily_quota"):
                gs.pop(key, None)
        changes = {"max_jobs_per_user": per_user, "max_jobs_per_guild": per_guild, "cooldown_seconds": cooldown}
        for key, value in changes.items():
            if value is not None:
                gs[key] = value
        if daily_quota is not None:
            if daily_quota:
                gs["daily_quota"] = daily_quota
            else:
                gs.pop("daily_quota", None)
        if not reset and all(v is None for v in (per_user, per_guild, cooldown, daily_quota)):
            await self._reply(interaction, t("settings.give_a_limit", loc), gs)
            return
        await self._save(interaction, gs, t("settings.limits_updated", loc))

    @app_commands.command(name="nsfw", description="Adult content: where it is allowed, and the image check")
    @app_commands.describe(policy="Where adult content may be made",
                           classifier="The image-classification model that checks images, or 'off'",
                           threshold="Withhold images scored as adult above this (0.05-1.0)")
    @app_commands.choices(policy=[app_commands.Choice(name=f"{k}: {v}"[:100], value=k)
                                  for k, v in safety.POLICIES.items()])
    async def nsfw(self, interaction: discord.Interaction[NattyBot], policy: str | None = None,
                   classifier: str | None = None,
                   threshold: app_commands.Range[float, 0.05, 1.0] | None = None) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        if classifier is not None and classifier != safety.CLASSIFIER_OFF:
            entry = self.bot.catalog.get(classifier)
            if entry is None or entry.task != "image-classification":
                await self._reply(interaction, t("settings.not_a_classifier", loc, classifier=classifier))
                return
        if policy is not None:
            gs["nsfw"] = policy
        if classifier is not None:
            gs["safety_model"] = classifier
        if threshold is not None:
            gs["nsfw_threshold"] = float(threshold)
        if policy is None and classifier is None and threshold is None:
            await self._reply(interaction, t("settings.give_a_safety_change", loc), gs)
            return
        await self._save(interaction, gs, t("settings.safety_updated", loc))

    @nsfw.autocomplete("classifier")
    async def _classifier_complete(self, interaction: discord.Interaction[NattyBot],
                                   current: str) -> list[app_commands.Choice[str]]:
        names = [safety.CLASSIFIER_OFF, *(e.name for e in self.bot.catalog.for_task("image-classification"))]
        return choices((n, n) for n in names if current.lower() in n.lower())

    @blocklist.command(name="add", description="Block words or phrases in image and video prompts")
    @app_commands.describe(words="Words or phrases, separated by commas")
    async def blocklist_add(self, interaction: discord.Interaction[NattyBot], words: str) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        current: list[str] = gs.setdefault("blocklist", [])
        new = [w for w in _split_words(words) if w not in current]
        if len(current) + len(new) > MAX_BLOCKLIST:
            await self._reply(interaction, t("settings.blocklist_full", loc, max=MAX_BLOCKLIST))
            return
        current.extend(new)
        await self._save(interaction, gs, t("settings.blocklist_added", loc, count=len(new), total=len(current)))

    @blocklist.command(name="remove", description="Unblock words or phrases")
    @app_commands.describe(words="Words or phrases, separated by commas")
    async def blocklist_remove(self, interaction: discord.Interaction[NattyBot], words: str) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        gone = set(_split_words(words))
        before = gs.get("blocklist") or []
        gs["blocklist"] = [w for w in before if w not in gone]
        await self._save(interaction, gs, t("settings.blocklist_removed", loc,
                                            count=len(before) - len(gs["blocklist"])))

    @app_commands.command(name="audit-channel", description="Where admins see a notice of each blocked request")
    @app_commands.describe(channel="The channel; leave empty to turn notices off")
    async def audit_channel(self, interaction: discord.Interaction[NattyBot],
                            channel: discord.TextChannel | None = None) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        if channel is None:
            gs.pop("audit_channel", None)
            await self._save(interaction, gs, t("settings.audit_off", loc))
            return
        gs["audit_channel"] = channel.id
        await self._save(interaction, gs, t("settings.audit_on", loc, channel=f"<#{channel.id}>"))

    @app_commands.command(name="language", description="The language natty speaks on this server")
    @app_commands.describe(language="The language")
    @app_commands.choices(language=[app_commands.Choice(name=v, value=k) for k, v in LANGUAGES.items()])
    async def language(self, interaction: discord.Interaction[NattyBot], language: str) -> None:
        gs = await self._settings(interaction)
        loc = await lang(interaction)
        gs["language"] = language
        loc = pick_locale(interaction.locale, language, interaction.guild_locale)  # the new setting counts now
        await self._save(interaction, gs, t("settings.language_set", loc, language=LANGUAGES[language]))


def _split_words(text: str) -> list[str]:
    """Comma- or newline-separated entries, trimmed and lower-cased, each at most 100 characters."""
    return [w.strip().lower()[:100] for w in text.replace("\n", ",").split(",") if w.strip()]


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(ServerSettings(bot))
