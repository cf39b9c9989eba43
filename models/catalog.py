"""The model catalog: the bundled `catalog.toml` plus the operator's file named by `NATTY_MODELS`.

An entry in the operator's file with the same `name` as a bundled one replaces it; `enabled = false` removes
it. Validation collects every problem with its file and entry, so start-up can print one line per problem.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.base import TASKS

BUNDLED = Path(__file__).with_name("catalog.toml")
BACKENDS = ("hf", "openai", "local")
DEFAULT_CONCURRENCY = {"hf": 4, "openai": 4, "local": 1}
_FIELDS = {
    "name", "task", "backend", "model", "url", "provider", "api_key_env", "default", "params", "description",
    "concurrency", "timeout", "accepts_images", "voices", "nsfw", "enabled", "max_prompt_chars",
}


class CatalogError(Exception):
    """Raised with every problem found, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# Where `api_key_env` names are looked up. `natty` installs its settings' lookup (bot/cli.py), so keys in `.env`
# reach the models; until then, the environment alone.
_key_source: Callable[[str], str | None] = os.environ.get


def param_on(value: Any) -> bool:
    """A catalog or request param read as on/off: TOML gives true/false, a request may give "no" or "0"."""
    return str(value).lower() not in ("0", "false", "no", "off")


def use_key_source(lookup: Callable[[str], str | None] | None) -> None:
    """Read every entry's key through `lookup` (a variable name -> its value); None: the environment again."""
    global _key_source
    _key_source = lookup or os.environ.get


@dataclass
class ModelEntry:
    name: str  # what users pick
    task: str
    backend: str  # hf | openai | local
    model: str  # hub id, endpoint URL, served model name (openai) or local folder / natty:NAME
    url: str | None = None  # openai: base URL of the server
    provider: str = "auto"  # hf only
    api_key_env: str | None = None  # env var with the key; keys never live in the file
    default: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    concurrency: int | None = None  # jobs at once on this entry's backend key
    timeout: float = 300.0  # deadline for one call, seconds
    accepts_images: bool = False  # chat models that take images
    voices: list[str] = field(default_factory=list)
    nsfw: bool = False  # may produce adult content; only in age-restricted channels
    max_prompt_chars: int = 4000
    source: str = "bundled"
    order: tuple[int, int] = (0, 0)  # (which catalog file, which entry in it): later files win defaults

    @property
    def api_key(self) -> str | None:
        """The key for this entry's endpoint, read at call time so it is never stored in the catalog: from the
        bot's settings (the environment over `.env`, see `use_key_source`), else the environment."""
        return (_key_source(self.api_key_env) or None) if self.api_key_env else None

    @property
    def backend_key(self) -> str:
        """Jobs sharing this key share one concurrency limit: one local model, one provider, one server."""
        if self.backend == "local":
            return f"local:{self.model}"
        if self.backend == "openai":
            return f"openai:{self.url}"
        return f"hf:{self.model if self.model.startswith('http') else self.provider}"

    @property
    def max_concurrency(self) -> int:
        return self.concurrency or DEFAULT_CONCURRENCY[self.backend]


@dataclass
class Catalog:
    entries: dict[str, ModelEntry]

    def for_task(self, task: str) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.task == task]

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name)

    def default_for(self, task: str, allowed: set[str] | None = None) -> ModelEntry | None:
        """The task's default entry among `allowed` (all when None): of the entries marked `default = true`,
        the one from the latest catalog file (the operator's over the bundled one), the last in its file;
        else the task's first entry."""
        choices = [e for e in self.for_task(task) if allowed is None or e.name in allowed]
        marked = [e for e in choices if e.default]
        if marked:
            return max(marked, key=lambda e: (e.order, choices.index(e)))
        return choices[0] if choices else None


def _parse(raw: dict[str, Any], where: str, problems: list[str],
           file_index: int = 0) -> list[tuple[ModelEntry | None, dict]]:
    out: list[tuple[ModelEntry | None, dict]] = []
    models = raw.get("model", [])
    if not isinstance(models, list):
        problems.append(f"{where}: 'model' must be an array of tables ([[model]])")
        return out
    for i, item in enumerate(models):
        label = f"{where}: model #{i + 1} ({item.get('name', '?')})"
        unknown = set(item) - _FIELDS
        if unknown:
            problems.append(f"{label}: unknown field(s) {', '.join(sorted(unknown))}")
        if item.get("enabled", True) is False:
            out.append((None, item))
            continue
        missing = [k for k in ("name", "task", "backend", "model") if not item.get(k)]
        if missing:
            problems.append(f"{label}: missing {', '.join(missing)}")
            continue
        if item["task"] not in TASKS:
            problems.append(f"{label}: task {item['task']!r} is not one of {', '.join(TASKS)}")
            continue
        if item["backend"] not in BACKENDS:
            problems.append(f"{label}: backend {item['backend']!r} is not one of {', '.join(BACKENDS)}")
            continue
        if item["backend"] == "openai" and not item.get("url"):
            problems.append(f"{label}: an openai entry needs url = the server's base URL (…/v1)")
            continue
        if "api_key" in item or any(str(v).startswith(("hf_", "sk-")) for v in item.values() if isinstance(v, str)):
            problems.append(f"{label}: keys never go in the catalog; set api_key_env to the variable's name")
            continue
        kwargs = {k: v for k, v in item.items() if k in _FIELDS and k != "enabled"}
        try:
            entry = ModelEntry(**kwargs, source=where, order=(file_index, i))
        except TypeError as exc:
            problems.append(f"{label}: {exc}")
            continue
        if entry.concurrency is not None and entry.concurrency < 1:
            problems.append(f"{label}: concurrency must be at least 1")
            continue
        out.append((entry, item))
    return out


def load_catalog(extra: str | os.PathLike | None = None, bundled: Path = BUNDLED) -> Catalog:
    """Load the bundled catalog and the operator's file over it. Raises CatalogError listing every problem."""
    problems: list[str] = []
    entries: dict[str, ModelEntry] = {}
    sources: list[tuple[Path, str]] = [(bundled, "bundled catalog")]
    if extra:
        sources.append((Path(extra), str(extra)))
    for file_index, (path, where) in enumerate(sources):
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"{where}: file not found ({path})")
            continue
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{where}: not valid TOML: {exc}")
            continue
        seen: set[str] = set()
        for entry, item in _parse(raw, where, problems, file_index):
            name = item.get("name", "")
            if name in seen:
                problems.append(f"{where}: two entries are named {name!r}")
            seen.add(name)
            if entry is None:
                entries.pop(name, None)
            else:
                entries[name] = entry
    if problems:
        raise CatalogError(problems)
    return Catalog(entries)
