"""Settings from the environment and `.env`, validated once, with one clear line per problem."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

from bot.shards import ALL_SHARDS, ShardSet, parse_shard_ids
from models.catalog import Catalog


class ConfigError(Exception):
    """Every problem found in the settings, one per line, for start-up to print without a traceback."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    discord_token: str | None
    hf_token: str | None = None
    database_url: str = "sqlite:///data/natty.db"
    data_dir: Path = Path("data")
    models_file: Path | None = None
    api_base: str | None = None  # a REST proxy in front of Discord, or the test server
    gateway_url: str | None = None
    sharded: bool = False
    shard_count: int | None = None
    shard_ids: tuple[int, ...] | None = None  # the shards this process runs (NATTY_SHARD_IDS), of shard_count
    log_level: str = "INFO"
    sync_guild: int | None = None  # sync commands to this guild only (instant; for development)
    max_jobs_per_user: int = 5  # running + queued
    max_jobs_per_guild: int = 50
    cooldown_seconds: float = 0.0
    max_prompt_chars: int = 4000
    edit_interval: float = 1.0  # seconds between edits of one progress message
    guild_ready_timeout: float = 2.0
    token_margin: float = 60.0  # deliver through the channel when the interaction token has less than this left
    recheck_seconds: float = 300.0  # seconds between two availability checks of a model (bot.jobs.availability)
    recheck_min_seconds: float = 10.0  # the first re-check of a model that cannot run; doubles up to the above
    metrics_port: int | None = None  # GET /healthz and /metrics here (bot.ops); None: off, 0: any free port
    metrics_host: str = "127.0.0.1"
    results_url: str | None = None  # s3://bucket/prefix: result files in an object store (bot.jobs.results)
    s3_endpoint: str | None = None  # that store's endpoint when it is not AWS (MinIO, Ceph, R2, ...)
    role: str = "all"  # all | gateway | worker (bot.jobs.roles): NATTY_ROLE, natty run --role
    worker_models: tuple[str, ...] | None = None  # the models a worker serves (names or globs); None: all
    lease_seconds: float = 30.0  # how long a worker's hold on a job lasts unless renewed (every third of it)
    extra: dict[str, str] = field(default_factory=dict)
    # Where keys named by the catalog (`api_key_env`) come from: `environ` (os.environ unless given) over `.env`.
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ, repr=False, compare=False)
    dotenv: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def key(self, name: str) -> str | None:
        """The value of the variable `name`, from the environment, else `.env`; None when unset or blank."""
        return (self.environ.get(name) or "").strip() or (self.dotenv.get(name) or "").strip() or None

    @property
    def database_path(self) -> Path:
        """The SQLite file named by DATABASE_URL (sqlite:///relative or sqlite:////absolute)."""
        scheme, _, path = self.database_url.partition(":///")
        if not scheme.startswith("sqlite"):
            raise ValueError("DATABASE_URL names no SQLite file")
        return Path(path)

    @property
    def shards(self) -> ShardSet:
        """The shards this process runs: whose servers' jobs and sessions it recovers (bot.shards)."""
        if self.shard_ids is None or self.shard_count is None:
            return ALL_SHARDS
        return ShardSet(self.shard_count, frozenset(self.shard_ids))


# DATABASE_URL's schemes, and the SQLAlchemy driver each one runs on
DATABASE_SCHEMES = {"sqlite": "sqlite+aiosqlite", "sqlite+aiosqlite": "sqlite+aiosqlite",
                    "postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
                    "postgresql+asyncpg": "postgresql+asyncpg"}


def database_url_problem(url: str) -> str | None:
    """What is wrong with a DATABASE_URL, in one line that shows no password; None when nothing is."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in DATABASE_SCHEMES:
        return (f"DATABASE_URL must be sqlite:///path/to/file.db or postgresql://user:password@host:port/database "
                f"(got scheme {url.split(':', 1)[0]!r})")
    if DATABASE_SCHEMES[scheme.lower()].startswith("sqlite"):
        if not rest.startswith("/") or not rest.strip("/"):
            return "DATABASE_URL for SQLite is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        return None
    from sqlalchemy.engine import make_url  # only for a Postgres URL: its host, port and database must parse

    try:
        parsed = make_url(sqlalchemy_url(url))
    except Exception as exc:  # SQLAlchemy raises ArgumentError or ValueError
        return f"DATABASE_URL is not a valid Postgres URL ({type(exc).__name__})"
    if not parsed.database:
        return "DATABASE_URL names no database: postgresql://user:password@host:port/database"
    return None


def sqlalchemy_url(url: str) -> str:
    """A DATABASE_URL as SQLAlchemy's async engine takes it: sqlite:/// runs on aiosqlite, postgresql:// and
    postgres:// on asyncpg (libpq's ?sslmode= becomes asyncpg's ?ssl=)."""
    scheme, sep, rest = url.partition("://")
    driver = DATABASE_SCHEMES.get(scheme.lower()) if sep else None
    if driver is None:
        raise ValueError(database_url_problem(url) or "not a database URL")
    if driver.startswith("postgresql"):
        rest = rest.replace("?sslmode=", "?ssl=").replace("&sslmode=", "&ssl=")
    return f"{driver}://{rest}"


def _int(env: Mapping[str, str], name: str, default: int, problems: list[str], minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not a whole number")
        return default
    if value < minimum:
        problems.append(f"{name} must be at least {minimum} (got {value})")
    return value


def _float(env: Mapping[str, str], name: str, default: float, problems: list[str]) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} is not a number")
        return default
    if value < 0:
        problems.append(f"{name} must not be negative (got {value})")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...], problems: list[str]) -> str | None:
    raw = env.get(name, "").strip()
    if raw and not raw.startswith(schemes):
        problems.append(f"{name}={raw!r} must start with {' or '.join(schemes)}")
    return raw or None


def _shard_ids(env: Mapping[str, str], count: int | None, problems: list[str]) -> tuple[int, ...] | None:
    """NATTY_SHARD_IDS ("0-3", "0,2,5"): this process's shards, out of NATTY_SHARD_COUNT, which must be given."""
    raw = env.get("NATTY_SHARD_IDS", "").strip()
    if not raw:
        return None
    try:
        ids = parse_shard_ids(raw)
    except ValueError as exc:
        problems.append(f"NATTY_SHARD_IDS={raw!r} must be shard ids like 0-3 or 0,2,5 ({exc})")
        return None
    if count is None:
        problems.append(f"NATTY_SHARD_IDS={raw!r} needs NATTY_SHARD_COUNT, the number of shards over all processes "
                        f"(every process must be given the same count)")
        return None
    if outside := [i for i in ids if i >= count]:
        problems.append(f"NATTY_SHARD_IDS={raw!r} names shard {outside[0]}, but with NATTY_SHARD_COUNT={count} the "
                        f"shards are 0 to {count - 1}")
        return None
    return tuple(ids)


def _api_base(env: Mapping[str, str], problems: list[str]) -> str | None:
    """DISCORD_API_BASE: discord.py appends each route to it, so it names the API version as Discord's own
    base does (https://discord.com/api/v10); a REST proxy such as nirn-proxy serves the same paths."""
    raw = _url(env, "DISCORD_API_BASE", ("http://", "https://"), problems)
    if raw and raw.startswith(("http://", "https://")) and not re.search(r"/api/v\d+/?$", raw):
        problems.append(f"DISCORD_API_BASE={raw!r} must end with the API version, e.g. http://127.0.0.1:8080/api/v10")
    return raw.rstrip("/") if raw else None


def _metrics_port(env: Mapping[str, str], problems: list[str]) -> int | None:
    raw = env.get("NATTY_METRICS_PORT", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        problems.append(f"NATTY_METRICS_PORT={raw!r} must be a port number from 1 to 65535 (empty: no metrics)")
        return None
    return int(raw)


def _metrics_host(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("NATTY_METRICS_HOST", "").strip() or "127.0.0.1"
    if any(c.isspace() or c in "/[]@" for c in raw):
        problems.append(f"NATTY_METRICS_HOST={raw!r} must be an address or host name to listen on, "
                        "e.g. 127.0.0.1 or 0.0.0.0 (no scheme, no port)")
    return raw


def _results_url(env: Mapping[str, str], problems: list[str]) -> str | None:
    raw = env.get("NATTY_RESULTS_URL", "").strip()
    if not raw:
        return None
    bucket = raw.removeprefix("s3://").split("/", 1)[0]
    if not raw.startswith("s3://") or not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        problems.append(f"NATTY_RESULTS_URL={raw!r} must be s3://bucket or s3://bucket/prefix, the bucket 3 to 63 "
                        "lowercase letters, digits, dots and hyphens (empty: results stay in NATTY_DATA_DIR)")
    elif importlib.util.find_spec("boto3") is None:
        problems.append(f"NATTY_RESULTS_URL={raw!r} needs boto3: pip install 'natty-bot[s3]'")
    return raw


ROLES = ("all", "gateway", "worker")


def _role(env: Mapping[str, str], problems: list[str]) -> str:
    raw = env.get("NATTY_ROLE", "").strip().lower() or "all"
    if raw not in ROLES:
        problems.append(f"NATTY_ROLE={raw!r} must be all (one process does everything), gateway (answers Discord, "
                        "never generates) or worker (generates, no gateway)")
    return raw


def _lease(env: Mapping[str, str], problems: list[str]) -> float:
    lease = _float(env, "NATTY_LEASE_SECONDS", 30.0, problems)
    if lease < 1:
        problems.append(f"NATTY_LEASE_SECONDS={lease:g} must be at least 1 (a worker renews its leases every third "
                        "of it)")
    return lease


def load_settings(environ: Mapping[str, str] | None = None, env_file: str | None = ".env",
                  require_token: bool = True) -> Settings:
    """Read settings from `environ` (default: os.environ) over the `.env` file. Raises ConfigError."""
    from_file: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    env = {**from_file, **(os.environ if environ is None else environ)}
    problems: list[str] = []

    token = env.get("DISCORD_TOKEN", "").strip() or None
    if require_token and not token:
        problems.append(
            "DISCORD_TOKEN is not set: create a bot at https://discord.com/developers/applications "
            "(Bot -> Reset Token), then put DISCORD_TOKEN=... in .env"
        )
    elif token and (len(token) < 20 or " " in token):
        problems.append("DISCORD_TOKEN does not look like a bot token (copy it again from the Bot page)")

    database_url = env.get("DATABASE_URL", "").strip() or "sqlite:///data/natty.db"
    if problem := database_url_problem(database_url):
        problems.append(problem)
    models_file = env.get("NATTY_MODELS", "").strip()
    if models_file and not Path(models_file).is_file():
        problems.append(f"NATTY_MODELS={models_file!r}: no such file")

    sharded_raw = env.get("NATTY_SHARDED", "").strip().lower()
    if sharded_raw not in ("", "0", "1", "true", "false", "yes", "no"):
        problems.append(f"NATTY_SHARDED={sharded_raw!r} must be true or false")
    shard_count = _int(env, "NATTY_SHARD_COUNT", 0, problems, minimum=0) or None
    shard_ids = _shard_ids(env, shard_count, problems)

    level = env.get("NATTY_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"NATTY_LOG_LEVEL={level!r} must be DEBUG, INFO, WARNING or ERROR")
    sync_guild = _int(env, "NATTY_SYNC_GUILD", 0, problems) or None

    settings = Settings(
        discord_token=token,
        hf_token=env.get("HF_TOKEN", "").strip() or None,
        database_url=database_url,
        data_dir=Path(env.get("NATTY_DATA_DIR", "").strip() or "data"),
        models_file=Path(models_file) if models_file else None,
        api_base=_api_base(env, problems),
        gateway_url=_url(env, "DISCORD_GATEWAY_URL", ("ws://", "wss://"), problems),
        sharded=sharded_raw in ("1", "true", "yes") or shard_ids is not None,
        shard_count=shard_count,
        shard_ids=shard_ids,
        log_level=level,
        sync_guild=sync_guild,
        max_jobs_per_user=_int(env, "NATTY_MAX_JOBS_PER_USER", 5, problems, minimum=1),
        max_jobs_per_guild=_int(env, "NATTY_MAX_JOBS_PER_GUILD", 50, problems, minimum=1),
        cooldown_seconds=_float(env, "NATTY_COOLDOWN_SECONDS", 0.0, problems),
        max_prompt_chars=_int(env, "NATTY_MAX_PROMPT_CHARS", 4000, problems, minimum=1),
        edit_interval=_float(env, "NATTY_EDIT_INTERVAL", 1.0, problems),
        guild_ready_timeout=_float(env, "NATTY_GUILD_READY_TIMEOUT", 2.0, problems),
        token_margin=_float(env, "NATTY_TOKEN_MARGIN", 60.0, problems),
        recheck_seconds=_float(env, "NATTY_RECHECK_SECONDS", 300.0, problems),
        recheck_min_seconds=_float(env, "NATTY_RECHECK_MIN_SECONDS", 10.0, problems),
        metrics_port=_metrics_port(env, problems),
        metrics_host=_metrics_host(env, problems),
        results_url=_results_url(env, problems),
        s3_endpoint=_url(env, "NATTY_S3_ENDPOINT", ("http://", "https://"), problems),
        role=_role(env, problems),
        worker_models=tuple(m.strip() for m in env["NATTY_WORKER_MODELS"].split(",") if m.strip()) or None
        if env.get("NATTY_WORKER_MODELS", "").strip() else None,
        lease_seconds=_lease(env, problems),
        environ=os.environ if environ is None else environ,
        dotenv=from_file,
    )
    if settings.worker_models and settings.role != "worker":
        problems.append("NATTY_WORKER_MODELS is set, but only a worker (NATTY_ROLE=worker) serves models by list")
    if settings.s3_endpoint and not settings.results_url:
        problems.append("NATTY_S3_ENDPOINT is set but NATTY_RESULTS_URL is not: name the bucket, s3://bucket/prefix")
    if problems:
        raise ConfigError(problems)
    return settings


def secrets_of(settings: Settings, catalog: Catalog | None = None) -> list[str]:
    """Every secret value the logs must never show: the Discord token, every *_TOKEN / *_KEY / *_SECRET / *_KEY_ID
    variable of the environment and `.env` (AWS_SECRET_ACCESS_KEY and AWS_ACCESS_KEY_ID among them), the key of
    every catalog entry (whatever its `api_key_env` is called), and the password in DATABASE_URL."""
    values = {settings.discord_token, settings.hf_token, *url_passwords(settings.database_url)}
    for source in (settings.environ, settings.dotenv):
        for name, value in source.items():
            if name.endswith(("_TOKEN", "_KEY", "_SECRET", "_KEY_ID")) and value and len(value.strip()) >= 8:
                values.add(value.strip())
    for entry in (catalog.entries.values() if catalog else ()):
        if entry.api_key_env and (key := settings.key(entry.api_key_env)):
            values.add(key)
    return sorted(v for v in values if v)


def url_passwords(url: str) -> set[str]:
    """The password in a URL's user:password@ part, as written and decoded, when as long as the other secrets
    (every URL's credentials are hidden from logs anyway: models.errors.redact_credentials)."""
    from urllib.parse import unquote

    userinfo = url.partition("://")[2].split("/", 1)[0].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    return {password, unquote(password)} if len(password) >= 8 else set()
