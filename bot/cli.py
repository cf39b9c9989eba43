"""The `natty` command: run, sync, models, generate, db, train, eval. `python -m bot` is `natty run`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from bot.config import ConfigError, Settings, load_settings, secrets_of
from bot.logs import setup_logging
from models.catalog import Catalog, CatalogError, load_catalog, use_key_source

log = logging.getLogger("natty")


def _fail(problems: list[str]) -> int:
    for line in problems:
        print(f"natty: {line}", file=sys.stderr)
    return 2


def _load(require_token: bool, environ: dict[str, str] | None = None) -> tuple[Settings, Catalog]:
    settings = load_settings(environ, require_token=require_token)
    catalog = load_catalog(settings.models_file)
    use_key_source(settings.key)  # keys named by the catalog come from the environment and .env alike
    return settings, catalog


async def _run_bot(settings: Settings, catalog: Catalog, sync_only: bool = False, guild: int | None = None) -> int:
    import discord

    from bot.client import invite_url, make_bot

    bot = make_bot(settings, catalog)
    if sync_only:  # setup_hook (run by login) syncs, then stops before the job engine starts
        bot.sync_only = (True, guild)
    try:
        await bot.login(settings.discord_token or "")
    except discord.LoginFailure:
        print("natty: Discord rejected DISCORD_TOKEN. Open https://discord.com/developers/applications, pick your "
              "app, Bot -> Reset Token, and put the new token in .env as DISCORD_TOKEN=...", file=sys.stderr)
        await bot.http.close()
        return 2
    except (OSError, discord.HTTPException) as exc:
        print(f"natty: cannot reach Discord ({type(exc).__name__}: {exc}). Check the network or DISCORD_API_BASE.",
              file=sys.stderr)
        await bot.http.close()
        return 2
    except Exception as exc:  # start-up (storage, extensions, sync) failed: say so, and let the process end
        log.exception("start-up failed")
        print(f"natty: start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        await bot.close()
        return 1
    app_id = bot.application_id or (bot.user.id if bot.user else 0)
    print(f"natty: invite the bot with {invite_url(app_id)}", file=sys.stderr)
    if sync_only:
        print(f"natty: synced {bot.synced_count} commands {'to guild ' + str(guild) if guild else 'globally'}")
        await bot.close()
        return 0
    if settings.role == "worker":  # no gateway: the engine claims jobs and the REST API delivers them
        print("natty: worker running: claiming jobs from the shared queue (Ctrl+C stops it)", file=sys.stderr)
        try:
            await asyncio.Event().wait()
        finally:
            await bot.close()
    try:
        await bot.connect(reconnect=True)
    finally:
        if not bot.is_closed():
            await bot.close()
    return 0


# `natty run --shards 0-3 --shard-count 8` stands for these settings, checked by the same rules
# (and --role / --models stand for NATTY_ROLE / NATTY_WORKER_MODELS)
SHARD_FLAGS = {"shards": ("--shards", "NATTY_SHARD_IDS"), "shard_count": ("--shard-count", "NATTY_SHARD_COUNT"),
               "role": ("--role", "NATTY_ROLE"), "models": ("--models", "NATTY_WORKER_MODELS")}


def cmd_run(args: argparse.Namespace) -> int:
    given = {env: (flag, str(value)) for name, (flag, env) in SHARD_FLAGS.items()
             if (value := getattr(args, name, None)) is not None}
    environ = {**os.environ, **{env: value for env, (_flag, value) in given.items()}} if given else None
    try:
        settings, catalog = _load(require_token=True, environ=environ)
    except (ConfigError, CatalogError) as exc:
        problems = exc.problems
        for env, (flag, _value) in given.items():  # name the flag the operator typed, not the variable
            problems = [p.replace(env, flag) for p in problems]
        return _fail(problems)
    setup_logging(settings.log_level, secrets_of(settings, catalog))
    try:
        return asyncio.run(_run_bot(settings, catalog))
    except KeyboardInterrupt:
        return 0


def cmd_sync(args: argparse.Namespace) -> int:
    try:
        settings, catalog = _load(require_token=True)
    except (ConfigError, CatalogError) as exc:
        return _fail(exc.problems)
    setup_logging(settings.log_level, secrets_of(settings, catalog))
    return asyncio.run(_run_bot(settings, catalog, sync_only=True, guild=args.guild))


def cmd_models(args: argparse.Namespace) -> int:
    try:
        settings, catalog = _load(require_token=False)
    except (ConfigError, CatalogError) as exc:
        return _fail(exc.problems)
    from models.backends import Backends

    async def check() -> list[tuple[bool, str]]:
        backends = Backends()
        try:
            return list(await asyncio.gather(*(backends.check(e) for e in catalog.entries.values())))
        finally:
            await backends.aclose()

    from bot.policy import Policy

    results = asyncio.run(check())
    availability = {e.name: r for e, r in zip(catalog.entries.values(), results, strict=True)}
    rules = Policy(settings, catalog, availability, lambda _guild: {})
    # DEFAULT: what a job of the task uses when nobody names a model (the bot's rule, before any server's choice)
    chosen = {task: rules.default_model(task, {}) for task in {e.task for e in catalog.entries.values()}}
    rows = [("MODEL", "TASK", "BACKEND", "DEFAULT", "STATUS")]
    for entry, (ok, reason) in zip(catalog.entries.values(), results, strict=True):
        used = chosen[entry.task]
        rows.append((entry.name, entry.task, entry.backend, "yes" if used and used.name == entry.name else "",
                     "ready" if ok else f"unavailable: {reason}"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        settings, catalog = _load(require_token=False)
    except (ConfigError, CatalogError) as exc:
        return _fail(exc.problems)
    setup_logging("WARNING" if not args.verbose else "INFO", secrets_of(settings, catalog))
    from bot.generate import generate_once

    return asyncio.run(generate_once(settings, catalog, args.task, args.prompt, model=args.model, out=args.out,
                                     seed=args.seed, input_file=args.input))


def cmd_db(args: argparse.Namespace) -> int:
    """natty db upgrade: apply the migrations now; natty db copy --to URL: every row into another database."""
    from bot.config import database_url_problem, url_passwords
    from models.errors import redact_credentials

    try:
        settings = load_settings(require_token=False)
    except ConfigError as exc:
        return _fail(exc.problems)
    target: str = getattr(args, "to", None) or ""
    if target and (problem := database_url_problem(target)):
        return _fail([problem.replace("DATABASE_URL", "--to", 1)])
    setup_logging(settings.log_level, secrets_of(settings) + sorted(url_passwords(target)))
    from bot.jobs import database

    source = redact_credentials(settings.database_url)
    try:
        if args.db_command == "upgrade":
            before, now = asyncio.run(database.upgrade(settings.database_url))
            done = "up to date" if before == now else f"upgraded from {before or 'an empty database'}"
            print(f"natty: {source} is at revision {now} ({done})")
            return 0
        counts = asyncio.run(database.copy(settings.database_url, target, force=args.force))
    except database.CopyRefused as exc:
        return _fail([f"not copied: {exc}"])
    except Exception as exc:  # cannot connect, refused login, a failed statement: one line, no traceback
        log.debug("database command failed", exc_info=True)
        cause = getattr(exc, "orig", None) or exc  # SQLAlchemy's DBAPIError wraps the driver's error
        detail = (str(cause).splitlines() or [""])[0]
        return _fail([f"database {args.db_command} failed: {type(cause).__name__}: {redact_credentials(detail)}"])
    width = max(len(name) for name in counts)
    print(f"{'TABLE'.ljust(width)}  {'SOURCE':>8}  {'TARGET':>8}")
    for name, (rows, copied) in counts.items():
        print(f"{name.ljust(width)}  {rows:>8}  {copied:>8}")
    if any(rows != copied for rows, copied in counts.values()):
        print("natty: the target's row counts differ from the source's", file=sys.stderr)
        return 1
    print(f"natty: copied {sum(rows for rows, _ in counts.values())} rows from {source} to "
          f"{redact_credentials(target)}; point DATABASE_URL at it to use it")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # train and eval take their own arguments; hand them over untouched
    if argv and argv[0] in ("train", "eval"):
        from models.own import train

        return (train.train_main if argv[0] == "train" else train.eval_main)(argv[1:])
    parser = argparse.ArgumentParser(prog="natty", description="natty: create with generative AI on Discord.")
    sub = parser.add_subparsers(dest="command")
    p_run = sub.add_parser("run", help="start the bot (the default)")
    p_run.add_argument("--shards", metavar="IDS", help="run only these gateway shards, e.g. 0-3 or 0,2,5 (with "
                                                        "--shard-count; other processes run the rest)")
    p_run.add_argument("--shard-count", type=int, metavar="N", help="the number of shards over all processes")
    p_run.add_argument("--role", help="all (default: one process does everything), gateway (answers Discord, "
                                      "queues jobs, never generates) or worker (no gateway: claims jobs from the "
                                      "shared queue, generates and posts them)")
    p_run.add_argument("--models", metavar="NAMES", help="a worker's models: catalog names or globs, comma-"
                                                         "separated (e.g. 'natty-*,sdxl-local'); default: all")
    p_sync = sub.add_parser("sync", help="sync slash commands now")
    p_sync.add_argument("--guild", type=int, help="sync to this server only (instant)")
    sub.add_parser("models", help="list the model catalog and whether each entry can run now")
    p_gen = sub.add_parser("generate", help="run one generation through the job engine, without Discord")
    p_gen.add_argument("task", help="chat, text-to-image, text-to-speech, text-to-audio, ...")
    p_gen.add_argument("prompt")
    p_gen.add_argument("--model", help="a catalog name (default: the task's default)")
    p_gen.add_argument("--out", type=Path, help="where to write the result (default: ./natty-<job>.<ext>)")
    p_gen.add_argument("--seed", type=int)
    p_gen.add_argument("--input", type=Path, help="input image or audio for tasks that take one")
    p_gen.add_argument("-v", "--verbose", action="store_true")
    p_db = sub.add_parser("db", help="the database: apply migrations, copy to another database")
    db_sub = p_db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="apply the migrations DATABASE_URL lacks (the bot does this at start too)")
    p_copy = db_sub.add_parser("copy", help="copy every row of DATABASE_URL's database into another (stop the "
                                            "bot first), e.g. SQLite into Postgres")
    p_copy.add_argument("--to", required=True, metavar="URL", help="postgresql://user:password@host:port/db, "
                                                                   "postgres://... or sqlite:///path.db")
    p_copy.add_argument("--force", action="store_true", help="replace the rows a non-empty target holds")
    sub.add_parser("train", help="train natty's own models (natty train --help)")
    sub.add_parser("eval", help="evaluate natty's own models (natty eval --help)")
    args = parser.parse_args(argv)
    handlers = {"run": cmd_run, "sync": cmd_sync, "models": cmd_models, "generate": cmd_generate, "db": cmd_db}
    return handlers[args.command or "run"](args)


if __name__ == "__main__":
    raise SystemExit(main())
