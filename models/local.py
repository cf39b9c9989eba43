"""The `local` backend: models running in this process, off the event loop.

Two families share it: natty's own models (`model = "natty:NAME"` for a bundled checkpoint, or a folder whose
`config.json` names a `natty_model`), served by `models.own`, and transformers pipelines (a hub id or a
folder), served by `models.pipelines`. Both import torch only when first used.
"""

from __future__ import annotations

import json
from pathlib import Path

from models.base import Backend, Request, Result, RunContext
from models.catalog import ModelEntry


def is_own_model(model: str) -> bool:
    """natty's own RNN, PixelCNN or WaveNet, rather than a transformers model."""
    if model.startswith("natty:"):
        return True
    config = Path(model) / "config.json"
    try:
        return "natty_model" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


class LocalBackend(Backend):
    kind = "local"

    def __init__(self) -> None:
        self._own: Backend | None = None
        self._pipelines: Backend | None = None

    def _family(self, entry: ModelEntry) -> Backend:
        if is_own_model(entry.model):
            if self._own is None:
                from models.own import OwnModelsBackend

                self._own = OwnModelsBackend()
            return self._own
        if self._pipelines is None:
            from models.pipelines import PipelinesBackend

            self._pipelines = PipelinesBackend()
        return self._pipelines

    async def run(self, entry: ModelEntry, request: Request, ctx: RunContext) -> Result:
        result = await self._family(entry).run(entry, request, ctx)
        result.meta["backend"] = self.kind
        return result

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        return await self._family(entry).check(entry)

    async def aclose(self) -> None:
        for family in (self._own, self._pipelines):
            if family is not None:
                await family.aclose()
