"""Server settings and safety as admins and members meet them: /settings for Manage Server only, settings that
survive restarts, default models, commands turned off, channel limits, NSFW prompts by channel, the audit
channel, and images withheld by the output classifier."""

from bot.jobs.job import JobState
from tests.harness import Natty

SECOND_IMAGE_MODEL = """
[[model]]
name = "test-image-b"
task = "text-to-image"
backend = "hf"
model = "{url}"
"""

# The HF test server ignores anything before the task in the path, so "/nsfw/" tells its requests apart and lets a
# canned answer (fail_next with status 200) go to the classifier only.
NSFW_DETECTOR = """
[[model]]
name = "nsfw-detector"
task = "image-classification"
backend = "hf"
model = "{url}/nsfw/image-classification"
"""
FLAGGED = [{"label": "nsfw", "score": 0.97}, {"label": "normal", "score": 0.03}]


async def add_to_catalog(n: Natty, template: str) -> None:
    await n.stop()
    models = n.settings.models_file
    models.write_text(models.read_text() + template.format(url=n.hf.url if "nsfw" in template
                                                           else n.hf.endpoint("text-to-image")))
    await n.start()


async def admin(n: Natty, command: str, **options):
    """Run a /settings subcommand as the moderator and return the ephemeral answer."""
    reply = await (await n.server.slash(n.mod, n.general, f"settings {command}", options=options)).response()
    assert reply.ephemeral
    return reply


def summary(reply) -> str:
    embed = reply.embeds[0]
    return "\n".join([embed.get("description", "")] + [f"{f['name']}: {f['value']}" for f in embed["fields"]])


async def test_only_managers_change_settings_and_changes_survive_a_restart(tmp_path):
    async with Natty.running(tmp_path) as n:
        synced = n.server._find_command("settings", n.guild, 1)
        assert synced is not None and int(synced["default_member_permissions"]) == 1 << 5  # Manage Server (UI default)

        refused = await (await n.server.slash(n.alice, n.general, "settings language", language="pt-BR")).response()
        assert refused.ephemeral and "Manage Server" in refused.content
        assert "language" not in await n.bot.guild_settings(n.guild.id)

        await admin(n, "language", language="pt-BR")
        await admin(n, "limits", per_user=3, cooldown=0, daily_quota=20)
        await admin(n, "blocklist add", words="pineapple, Evil Corp")
        reply = await admin(n, "channels add", channel=n.general)
        assert "✅" in reply.content and f"<#{n.general.id}>" in summary(reply)

        await n.restart()
        stored = await n.bot.storage.guild_settings(n.guild.id)
        assert stored["language"] == "pt-BR" and stored["channels"] == [n.general.id]
        assert stored["max_jobs_per_user"] == 3 and stored["daily_quota"] == 20
        assert stored["blocklist"] == ["pineapple", "evil corp"]
        text = summary(await admin(n, "show"))
        assert "Português" in text and "3 jobs at once per member" in text and "daily quota 20 jobs" in text
        assert "||pineapple||" in text

        await admin(n, "limits", reset=True)
        text = summary(await admin(n, "show"))
        assert "5 jobs at once per member" in text and "daily quota none" in text

        await admin(n, "limits", daily_quota=1)
        assert (await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="one"))).content.startswith("You")
        second = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="two"))
        assert "You have used today's 1 jobs on this server" in second.content
        assert n.server.violations == []


LONG_NAMED_MODEL = """
[[model]]
name = "test-image-with-a-name-longer-than-discord-takes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
task = "text-to-image"
backend = "hf"
model = "{url}"
"""


async def test_autocomplete_leaves_out_what_discord_would_refuse_and_keeps_the_rest(tmp_path):
    async with Natty.running(tmp_path) as n:
        await add_to_catalog(n, SECOND_IMAGE_MODEL + LONG_NAMED_MODEL)
        for command, focused, kw in (("imagine", "model", {"prompt": "a kite"}),
                                     ("settings model", "model", {"task": "text-to-image"}),
                                     ("settings disable-model", "model", {})):
            choices = await n.server.autocomplete(n.mod, n.general, command, focused=focused, value="test-image",
                                                  **kw)
            values = {c["value"] for c in choices}
            assert "test-image-b" in values and not any("longer-than" in v for v in values), command
            assert all(1 <= len(c["name"]) <= 100 for c in choices)  # the 110-character name cannot be offered
        assert n.server.violations == []


async def test_settings_model_changes_which_model_imagine_uses(tmp_path):
    async with Natty.running(tmp_path) as n:
        await add_to_catalog(n, SECOND_IMAGE_MODEL)
        choices = await n.server.autocomplete(n.mod, n.general, "settings model", focused="model", value="test",
                                              task="text-to-image")
        assert {c["value"] for c in choices} == {"test-text-to-image", "test-image-b"}

        before = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a red kite"))
        assert "test-text-to-image" in before.content
        reply = await admin(n, "model", task="text-to-image", model="test-image-b")
        assert "test-image-b" in reply.content
        after = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a red kite"))
        assert "test-image-b" in after.content and after.attachments

        bad = await admin(n, "model", task="text-to-image", model="no-such-model")
        assert "no enabled model named **no-such-model**" in bad.content

        await admin(n, "disable-model", model="test-image-b")
        back = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a red kite"))
        assert "test-text-to-image" in back.content
        named = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a kite",
                                                   model="test-image-b"))
        assert "There is no model named **test-image-b**" in named.content
        await admin(n, "enable-model", model="test-image-b")
        again = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a kite",
                                                   model="test-image-b"))
        assert again.attachments
        assert n.server.violations == []


async def test_commands_turned_off_and_channel_limits_are_refused_clearly(tmp_path):
    async with Natty.running(tmp_path) as n:
        image = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a lighthouse"))
        choices = await n.server.autocomplete(n.mod, n.general, "settings commands", focused="disable", value="")
        names = {c["value"] for c in choices}
        assert {"imagine", "video", "chat"} <= names and not names & {"settings", "help", "jobs", "show"}
        await admin(n, "commands", disable="video")
        video = await n.final(await n.server.slash(n.alice, n.general, "video", prompt="waves"))
        assert "`/video` is turned off on this server" in video.content

        await admin(n, "commands", disable="imagine")
        reroll = await n.final(await n.server.press(n.alice, image, label="Re-roll"))
        assert "`/imagine` is turned off on this server" in reroll.content
        not_a_command = await admin(n, "commands", disable="settings")
        assert "is not a command that can be turned off" in not_a_command.content
        await admin(n, "commands", enable="imagine")

        await admin(n, "channels add", channel=n.general)
        elsewhere = await n.final(await n.server.slash(n.alice, n.nsfw, "chat", prompt="hello"))
        assert f"I answer only in <#{n.general.id}>" in elsewhere.content
        here = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="hello"))
        assert here.content.startswith("You said: hello")
        await admin(n, "channels clear")
        assert (await n.final(await n.server.slash(n.alice, n.nsfw, "chat", prompt="hi"))).content.startswith("You")
        failed = [j for j in await _jobs(n) if j.state is JobState.FAILED]
        assert len(failed) == 3  # every refusal keeps a record
        assert n.server.violations == []


async def test_nsfw_prompts_depend_on_the_channel_and_the_policy_and_reach_the_audit_channel(tmp_path):
    async with Natty.running(tmp_path) as n:
        audit = n.server.add_channel(n.guild, name="mod-log")
        await n.wait(lambda: n.bot.get_channel(audit.id))
        await admin(n, "audit-channel", channel=audit)

        prompt = "a n.u.d.e portrait, " + "soft light and film grain, " * 10  # over 200 characters
        blocked = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt=prompt))
        assert "only in age-restricted channels" in blocked.content
        assert "nude" not in blocked.content.lower() and "n.u.d.e" not in blocked.content
        assert not blocked.attachments
        notice = await n.wait(lambda: next(iter(n.channel_messages(audit)), None))
        assert f"<@{n.alice.id}>" in notice.content and "/imagine" in notice.content
        assert "built-in adult-content list" in notice.content and prompt not in notice.content
        assert not notice.would_ping

        allowed = await n.final(await n.server.slash(n.alice, n.nsfw, "imagine", prompt=prompt))
        assert allowed.attachments

        await admin(n, "blocklist add", words="pineapple")
        word = await n.final(await n.server.slash(n.alice, n.nsfw, "imagine", prompt="a pineapple"))
        assert "a word this server has blocked" in word.content and "pineapple" not in word.content

        await admin(n, "nsfw", policy="never")
        never = await n.final(await n.server.slash(n.alice, n.nsfw, "video", prompt="nude dancing"))
        assert "does not allow in any channel" in never.content
        await n.wait(lambda: len(n.channel_messages(audit)) == 3)
        assert all(not m.would_ping for m in n.channel_messages(audit))
        assert n.server.violations == []


async def test_the_output_classifier_withholds_flagged_images_outside_age_restricted_channels(tmp_path):
    async with Natty.running(tmp_path) as n:
        await add_to_catalog(n, NSFW_DETECTOR)
        assert n.bot.availability["nsfw-detector"][0]

        clean = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a beach at noon"))
        assert clean.attachments  # the test server's labels carry no adult label
        assert len(n.hf.requests_to("/nsfw/")) == 1

        n.hf.fail_next(200, body=FLAGGED, path="/nsfw/")
        withheld = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a beach at noon"))
        assert "withheld" in withheld.content and "flagged it as adult content" in withheld.content
        assert not withheld.attachments and not withheld.buttons
        job = (await _jobs(n))[-1]
        assert job.state is JobState.FAILED and job.result is None

        checked = len(n.hf.requests_to("/nsfw/"))
        in_nsfw = await n.final(await n.server.slash(n.alice, n.nsfw, "imagine", prompt="a beach at noon"))
        assert in_nsfw.attachments and len(n.hf.requests_to("/nsfw/")) == checked  # not checked there

        n.hf.fail_next(400, body={"error": "bad input"}, path="/nsfw/")
        broken = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a beach at noon"))
        assert "safety check could not run" in broken.content and not broken.attachments

        await admin(n, "nsfw", classifier="off")
        n.hf.fail_next(200, body=FLAGGED, path="/nsfw/")
        off = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a beach at noon"))
        assert off.attachments
        assert n.server.violations == []


async def _jobs(n: Natty):
    async with n.bot.storage.db.execute("SELECT id FROM jobs ORDER BY seq") as cur:
        ids = [r[0] for r in await cur.fetchall()]
    return [await n.bot.storage.get_job(i) for i in ids]


PASSWORD_IN_URL = """
[[model]]
name = "creds-chat"
task = "chat"
backend = "openai"
url = "http://natty:hunter2-secret@127.0.0.1:9/v1"
model = "llama"

[[model]]
name = "nsfw-detector"
task = "image-classification"
backend = "openai"
url = "https://natty:hunter2-secret@127.0.0.1:9/v1?api_key=hunter3-secret"
model = "detector"
"""


def everything(reply) -> str:
    return "\n".join([reply.content, *(summary(reply) for _ in reply.embeds[:1])])


async def test_endpoint_passwords_never_reach_members(tmp_path):
    async with Natty.running(tmp_path, catalog_extra=PASSWORD_IN_URL) as n:
        ok, reason = n.bot.availability["creds-chat"]
        assert not ok and "http://***@127.0.0.1:9/v1" in reason  # the reason still says where
        refused = await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="hi", model="creds-chat"))
        shown = everything(await admin(n, "show"))
        chosen = everything(await admin(n, "model", task="chat", model="creds-chat"))
        helped = everything(await (await n.server.slash(n.bob, n.general, "help")).response())
        assert "creds-chat" in refused.content and "127.0.0.1:9" in refused.content
        assert "nsfw-detector" in shown and "127.0.0.1:9" in shown
        for text in (refused.content, shown, chosen, helped):
            assert "hunter2" not in text and "hunter3" not in text, text
        assert n.server.violations == []


async def test_manage_messages_alone_does_not_open_the_settings(tmp_path):
    async with Natty.running(tmp_path) as n:
        helper = n.server.add_user("helper", guilds=[n.guild], manage_messages=True)  # a moderator, not an admin
        for command, options in (("settings show", {}), ("settings language", {"language": "pt-BR"}),
                                 ("settings limits", {"per_user": 1})):
            refused = await (await n.server.slash(helper, n.general, command, options=options)).response()
            assert refused.ephemeral and "Manage Server" in refused.content, command
        assert await n.bot.guild_settings(n.guild.id) == {}
        allowed = await admin(n, "show")  # the moderator of the harness also has Manage Server
        assert allowed.embeds
        assert n.server.violations == []


async def test_show_keeps_results_where_they_were_allowed(tmp_path):
    async with Natty.running(tmp_path) as n:
        await add_to_catalog(n, NSFW_DETECTOR)
        adult = await n.final(await n.server.slash(n.alice, n.nsfw, "imagine", prompt="a nude study in charcoal"))
        innocent = await n.final(await n.server.slash(n.alice, n.nsfw, "imagine", prompt="a beach at noon"))
        assert adult.attachments and innocent.attachments
        adult_job, innocent_job = [j.id for j in (await _jobs(n))[-2:]]

        for who in (n.bob, n.alice):  # the owner too: the channel decides, not who asks
            for job_id in (adult_job, innocent_job):  # made under the adult rules, whatever the prompt
                refused = await (await n.server.slash(who, n.general, "show", job=job_id)).response()
                assert refused.ephemeral and "age-restricted" in refused.content and not refused.attachments
        again = await (await n.server.slash(n.bob, n.nsfw, "show", job=adult_job)).response()
        assert again.attachments and not again.ephemeral

        ordinary = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt="a harbour at dusk"))
        assert ordinary.attachments
        ordinary_job = (await _jobs(n))[-1].id
        n.hf.fail_next(200, body=FLAGGED, path="/nsfw/")  # the classifier runs again for /show, and flags it now
        withheld = await n.final(await n.server.slash(n.bob, n.general, "show", job=ordinary_job))
        assert "withheld" in withheld.content and not withheld.attachments
        shown = await n.final(await n.server.slash(n.bob, n.general, "show", job=ordinary_job))
        assert shown.attachments

        await n.final(await n.server.slash(n.alice, n.general, "chat", prompt="a secret", private=True))
        private_job = (await _jobs(n))[-1].id
        hidden = await (await n.server.slash(n.bob, n.nsfw, "show", job=private_job)).response()
        assert hidden.ephemeral and "No job" in hidden.content
        assert n.server.violations == []


async def test_look_alike_letters_do_not_slip_an_adult_prompt_past_imagine(tmp_path):
    async with Natty.running(tmp_path) as n:
        sneaky = "a nud\u0435 portrait"  # the last "е" is Cyrillic
        blocked = await n.final(await n.server.slash(n.alice, n.general, "imagine", prompt=sneaky))
        assert "only in age-restricted channels" in blocked.content and not blocked.attachments
        assert not n.hf.requests_to("text-to-image")  # nothing reached the model
        allowed = await n.final(await n.server.slash(n.alice, n.nsfw, "imagine", prompt=sneaky))
        assert allowed.attachments
        assert n.server.violations == []


async def test_the_output_classifier_checks_videos_by_their_frames(tmp_path):
    async with Natty.running(tmp_path) as n:
        await add_to_catalog(n, NSFW_DETECTOR)
        clean = await n.final(await n.server.slash(n.alice, n.general, "video", prompt="waves at night"))
        assert clean.attachments and clean.attachments[0].filename.endswith(".mp4")
        frames = len(n.hf.requests_to("/nsfw/"))
        assert 2 <= frames <= 4  # a few frames of the six, first and last among them, not every frame

        n.hf.fail_next(200, body=FLAGGED, path="/nsfw/")  # one flagged frame withholds the whole video
        withheld = await n.final(await n.server.slash(n.alice, n.general, "video", prompt="waves at night"))
        assert "withheld" in withheld.content and not withheld.attachments

        checked = len(n.hf.requests_to("/nsfw/"))
        in_nsfw = await n.final(await n.server.slash(n.alice, n.nsfw, "video", prompt="waves at night"))
        assert in_nsfw.attachments and len(n.hf.requests_to("/nsfw/")) == checked  # not checked there
        assert n.server.violations == []
