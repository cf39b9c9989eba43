"""The `local` backend: models running in this process, off the event loop.

Two families share it: natty's own models (`model = "natty:NAME"` for a bundled checkpoint, or a folder whose
`config.json` names a `natty_model`), served by `models.own`, and transformers pipelines (a hub id or a
folder), served by `models.backends.pipelines`. Both import torch only when first used.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from models.base import Backend, Request, Result, RunContext
from models.catalog import ModelEntry

if TYPE_CHECKING:
    from models.backends.worker import ProcessWorker


@functools.lru_cache(maxsize=256)
def is_own_model(model: str) -> bool:
    """natty's own RNN, PixelCNN or WaveNet, rather than a transformers model (cached: asked on every job)."""
    if model.startswith("natty:"):
        return True
    config = Path(model) / "config.json"
    try:
        return "natty_model" in json.loads(config.read_text())
    except (OSError, ValueError):
        return False


class LocalBackend(Backend):
    """Routes to natty's own models or transformers pipelines.

    By default the models run in a worker process (`models.backends.worker`), so their loops never hold the bot's
    interpreter lock; `NATTY_LOCAL_WORKER=thread` (or `in_process=True`, as the worker itself uses) runs them
    in threads of this process instead.
    """

    kind = "local"

    def __init__(self, in_process: bool | None = None) -> None:
        if in_process is None:
            in_process = os.environ.get("NATTY_LOCAL_WORKER", "process").strip().lower() == "thread"
        self.in_process = in_process
        self._own: Backend | None = None
        self._pipelines: Backend | None = None
        self._worker: ProcessWorker | None = None

    async def _family(self, entry: ModelEntry) -> Backend:
        # torch and transformers take seconds to import: never on the event loop
        if is_own_model(entry.model):
            if self._own is None:
                module = await asyncio.to_thread(importlib.import_module, "models.own")
                self._own = module.OwnModelsBackend()
            return self._own
        if self._pipelines is None:
            module = await asyncio.to_thread(importlib.import_module, "models.backends.pipelines")
            self._pipelines = module.PipelinesBackend()
        return self._pipelines

    async def run(self, entry: ModelEntry, request: Request, ctx: RunContext) -> Result:
        if self.in_process:
            result = await (await self._family(entry)).run(entry, request, ctx)
        else:
            if self._worker is None:
                from models.backends.worker import ProcessWorker

                self._worker = ProcessWorker()
            result = await self._worker.run(entry, request, ctx)
        result.meta["backend"] = self.kind
        return result

    async def check(self, entry: ModelEntry) -> tuple[bool, str]:
        return await (await self._family(entry)).check(entry)

    async def aclose(self) -> None:
        for family in (self._own, self._pipelines):
            if family is not None:
                await family.aclose()
        if self._worker is not None:
            await self._worker.aclose()
