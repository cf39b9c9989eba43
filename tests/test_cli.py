"""The `natty` command as an operator runs it: models, generate, and what it says about tokens and settings."""

import asyncio
import os
import sys
from pathlib import Path

import soundfile
from PIL import Image

from tests.fakediscord import FakeDiscord
from tests.harness import TOKEN, catalog_for
from tests.hf_server import HFTestServer

ROOT = Path(__file__).resolve().parents[1]


async def natty(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    base = {k: v for k, v in os.environ.items() if not k.endswith(("_TOKEN", "_KEY"))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env={**base, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode, out.decode(), err.decode()


async def test_a_rejected_token_says_exactly_what_to_do(tmp_path):
    async with FakeDiscord(token=TOKEN) as server:
        server.tolerate("unauthorized")  # the rejected login is what this test provokes
        code, _, err = await natty("run", cwd=tmp_path, env={
            "DISCORD_TOKEN": "MTIz.wrong.token-that-discord-rejects-0000", "DISCORD_API_BASE": server.api_base,
            "DISCORD_GATEWAY_URL": server.gateway_url})
    assert code == 2 and "Traceback" not in err
    assert "Discord rejected DISCORD_TOKEN" in err and "Reset Token" in err
    assert "wrong.token" not in err


async def test_bad_settings_stop_startup_with_one_line_each(tmp_path):
    code, _, err = await natty("run", cwd=tmp_path, env={"DISCORD_TOKEN": TOKEN, "NATTY_COOLDOWN_SECONDS": "soon",
                                                         "NATTY_MODELS": "missing.toml"})
    assert code == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("natty: ")]
    assert lines == ["natty: NATTY_MODELS='missing.toml': no such file",
                     "natty: NATTY_COOLDOWN_SECONDS='soon' is not a number"]


async def test_models_lists_every_entry_and_whether_it_can_run(tmp_path):
    async with HFTestServer() as hf:
        (tmp_path / "models.toml").write_text(catalog_for(hf))
        code, out, err = await natty("models", cwd=tmp_path, env={"NATTY_MODELS": str(tmp_path / "models.toml")})
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["flux-schnell"].endswith("unavailable: set HF_TOKEN") or "HF_TOKEN" in rows["flux-schnell"]
    assert "ready" in rows["test-text-to-image"]
    assert "natty-pixelcnn" in rows


async def test_generate_writes_a_file_for_each_task_through_the_job_engine(tmp_path):
    async with HFTestServer() as hf:
        (tmp_path / "models.toml").write_text(catalog_for(hf))
        env = {"NATTY_MODELS": str(tmp_path / "models.toml"), "NATTY_DATA_DIR": str(tmp_path / "data"),
               "DATABASE_URL": f"sqlite:///{tmp_path}/natty.db"}
        code, _, err = await natty("generate", "text-to-image", "a kite", "--model", "test-text-to-image",
                                   "--out", str(tmp_path / "kite.png"), cwd=tmp_path, env=env)
        assert code == 0, err
        assert Image.open(tmp_path / "kite.png").size == (1024, 1024)
        code, _, err = await natty("generate", "text-to-audio", "rain", "--model", "test-music",
                                   "--out", str(tmp_path / "rain.wav"), cwd=tmp_path, env=env)
        assert code == 0, err
        assert soundfile.info(str(tmp_path / "rain.wav")).duration > 0
        code, out, err = await natty("generate", "chat", "hello there", "--model", "test-chat", cwd=tmp_path,
                                     env=env)
        assert code == 0 and "You said: hello there" in out
        code, out, err = await natty("generate", "image-to-text", "", "--model", "test-image-to-text",
                                     "--input", str(tmp_path / "kite.png"), cwd=tmp_path, env=env)
        assert code == 0 and out.strip()
        code, _, err = await natty("generate", "chat", "hi", "--model", "nope", cwd=tmp_path, env=env)
        assert code == 2 and "no chat model named 'nope'" in err


async def test_generate_runs_natty_own_models_offline(tmp_path):
    env = {"NATTY_DATA_DIR": str(tmp_path / "data")}
    code, _, err = await natty("generate", "text-to-image", "seven", "--model", "natty-pixelcnn", "--seed", "1",
                               "--out", str(tmp_path / "seven.png"), cwd=tmp_path, env=env)
    assert code == 0, err
    assert Image.open(tmp_path / "seven.png").size == (256, 256)
    code, _, err = await natty("generate", "text-to-audio", "A minor chord", "--model", "natty-wavenet",
                               "--out", str(tmp_path / "am.wav"), cwd=tmp_path, env=env)
    assert code == 0, err
    assert soundfile.info(str(tmp_path / "am.wav")).duration > 0.5


async def test_sync_to_one_server_registers_the_commands_there(tmp_path):
    async with FakeDiscord(token=TOKEN) as server:
        guild = server.add_guild()
        code, out, err = await natty("sync", "--guild", str(guild.id), cwd=tmp_path, env={
            "DISCORD_TOKEN": TOKEN, "DISCORD_API_BASE": server.api_base, "DISCORD_GATEWAY_URL": server.gateway_url,
            "DATABASE_URL": f"sqlite:///{tmp_path}/natty.db", "NATTY_DATA_DIR": str(tmp_path / "data")})
        assert code == 0, err
        assert f"to guild {guild.id}" in out
        names = {c["name"] for c in server.commands[guild.id]}
        assert {"imagine", "chat", "help"} <= names


async def test_keys_in_dotenv_reach_the_models_and_never_the_logs(tmp_path):
    hf_key, custom_key = "hf_dotenvkey" + "a" * 24, "acme-credential-0123456789abcdef"
    (tmp_path / ".env").write_text(f"HF_TOKEN={hf_key}\nACME_CREDENTIAL={custom_key}\n")
    async with HFTestServer() as hf:
        (tmp_path / "models.toml").write_text(catalog_for(hf, f"""
[[model]]
name = "keyed-image"
task = "text-to-image"
backend = "hf"
model = "{hf.endpoint('text-to-image')}"
api_key_env = "ACME_CREDENTIAL"

[[model]]
name = "keyed-chat"
task = "chat"
backend = "hf"
model = "{hf.url}"
api_key_env = "HF_TOKEN"
"""))
        hf.bad_request(f"Input validation error: nothing good about {custom_key}", path="text-to-image", times=1)
        env = {"NATTY_MODELS": str(tmp_path / "models.toml"), "NATTY_DATA_DIR": str(tmp_path / "data"),
               "DATABASE_URL": f"sqlite:///{tmp_path}/natty.db"}
        failed = await natty("generate", "text-to-image", "a kite", "--model", "keyed-image", "-v",
                             "--out", str(tmp_path / "kite.png"), cwd=tmp_path, env=env)
        made = await natty("generate", "text-to-image", "a kite", "--model", "keyed-image", "-v",
                           "--out", str(tmp_path / "kite.png"), cwd=tmp_path, env=env)
        chat = await natty("generate", "chat", "hello", "--model", "keyed-chat", "-v", cwd=tmp_path, env=env)
        assert made[0] == 0 and chat[0] == 0, made[2] + chat[2]
        images = hf.requests_to("text-to-image")
        assert images and all(r.authorization == f"Bearer {custom_key}" for r in images)
        chats = [r for r in hf.requests if r.path.rstrip("/").endswith("chat") or "chat" in r.path]
        assert chats and all(r.authorization == f"Bearer {hf_key}" for r in chats)
    for _, out, err in (failed, made, chat):
        assert custom_key not in out + err and hf_key not in out + err
