"""One backend instance per kind, created lazily so a remote-only bot never imports torch."""

from __future__ import annotations

from models.base import Backend, Request, Result, RunContext
from models.catalog import ModelEntry
from models.errors import redact_credentials


def _create(kind: str) -> Backend:
    if kind == "hf":
        from models.backends.hf import HFBackend

        return HFBackend()
    if kind == "openai":
        from models.backends.openai_compat import OpenAIBackend

        return OpenAIBackend()
    if kind == "local":
        from models.backends.local import LocalBackend

        return LocalBackend()
    raise ValueError(f"unknown backend kind {kind!r}")


class Backends:
    """The backends in use, keyed by kind."""

    def __init__(self) -> None:
        self._by_kind: dict[str, Backend] = {}

    def for_entry(self, entry: ModelEntry) -> Backend:
        if entry.backend not in self._by_kind:
            self._by_kind[entry.backend] = _create(entry.backend)
        return self._by_kind[entry.backend]

    async def run(self, entry: ModelEntry, request: Request, ctx: RunContext) -> Result:
        return await self.for_entry(entry).run(entry, request, ctx)

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        """Whether the entry can run now, and why; the reason is shown to members, so it carries no credentials."""
        try:
            ok, reason = await self.for_entry(entry).check(entry)
        except ImportError as exc:  # e.g. the `local` extra is not installed
            return False, f"needs the local extra (pip install 'natty-bot[local]'): {exc.name} is missing"
        except Exception as exc:  # noqa: BLE001 - a check that crashes says the entry cannot run, and why
            ok, reason = False, f"check failed: {exc}"
        return ok, redact_credentials(reason)

    async def aclose(self) -> None:
        for backend in self._by_kind.values():
            await backend.aclose()
        self._by_kind.clear()
