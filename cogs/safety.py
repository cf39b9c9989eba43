"""The output check: finished images are classified before they are posted.

The rules live in `bot.safety`, and prompts and models are checked before a job queues by `bot.policy`; this
cog runs the server's output classifier through the backends and reports what it withheld (`report_block`).
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from typing import TYPE_CHECKING, Any

from discord.ext import commands

from bot import safety
from bot.jobs.job import Job
from bot.jobs.results import ref_of
from bot.policy import age_restricted
from models.base import LabelsResult, Request, RunContext
from models.catalog import ModelEntry

if TYPE_CHECKING:
    from bot.client import NattyBot

log = logging.getLogger("natty.safety")

CLASSIFIER_TIMEOUT = 60.0  # seconds per image at most, whatever the entry allows


class Safety(commands.Cog):
    def __init__(self, bot: NattyBot) -> None:
        self.bot = bot
        bot.presenter.output_checks.append(self.check_output)

    async def cog_unload(self) -> None:
        if self.check_output in self.bot.presenter.output_checks:
            self.bot.presenter.output_checks.remove(self.check_output)

    async def check_output(self, job: Job) -> str | None:
        """Classify a finished job's images (a video by a few of its frames); withhold the result when one scores
        as adult where that is not allowed."""
        if job.task not in safety.CHECKED_OUTPUT_TASKS:
            return None
        gs = await self.bot.guild_settings(job.guild_id)
        policy = safety.policy_of(gs)
        adult_ok = job.age_restricted
        if adult_ok is None:  # a job queued before this check existed
            adult_ok = age_restricted(self.bot.get_channel(job.channel_id)) if job.channel_id else False
        if not safety.output_needs_check(job.task, age_restricted=bool(adult_ok), policy=policy):
            return None
        entry = self.classifier(gs)
        if entry is None:
            return None
        limit = safety.threshold(gs)
        for item in (job.result or {}).get("files", []):
            try:
                data = await asyncio.to_thread(self.bot.storage.results.get, ref_of(item))
                images = await asyncio.to_thread(self._images_of, data, job.task)
                scores = []
                for data in images:
                    ctx = RunContext(deadline=time.monotonic() + min(entry.timeout, CLASSIFIER_TIMEOUT))
                    result = await self.bot.backends.run(
                        entry, Request(task="image-classification", image=data), ctx)
                    if not isinstance(result, LabelsResult):
                        raise TypeError(f"{entry.name} returned {type(result).__name__}, not labels")
                    scores.append(safety.nsfw_score(result.labels))
            except Exception as exc:  # fail closed: an unchecked image is not posted where the check applies
                log.warning("job %s: safety classifier %s failed: %s", job.id, entry.name, exc)
                block = safety.Block("classifier-error", type(exc).__name__)
                self.report(gs, job, self.bot.policy.command_for(job.task), block)
                return block.message(entry.name, job.locale)
            score = max(scores, default=0.0)
            if score > limit:
                block = safety.Block("classifier-never" if policy == "never" else "classifier", f"{score:.2f}")
                self.report(gs, job, self.bot.policy.command_for(job.task), block)
                return block.message(entry.name, job.locale)
        return None

    @staticmethod
    def _images_of(data: bytes, task: str) -> list[bytes]:
        """What the classifier looks at for one result file: the image itself, or a video's frames as PNGs."""
        if task != "text-to-video":
            return [data]
        import av  # a base dependency; imported only when a video is checked

        def png(frame: Any) -> bytes:
            buffer = io.BytesIO()
            frame.to_image().save(buffer, "PNG")
            return buffer.getvalue()

        out: list[bytes] = []
        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            total = stream.frames  # 0 when the container does not say: then the first and the last frame
            n = min(safety.VIDEO_FRAMES_CHECKED, total) if total else 2
            picks = {round(i * (total - 1) / max(1, n - 1)) for i in range(n)} if total else {0}
            last = None
            for index, frame in enumerate(container.decode(stream)):  # one frame in memory at a time
                if index in picks:
                    out.append(png(frame))
                last = frame
            if not total and last is not None and index > 0:
                out.append(png(last))
        if not out:
            raise ValueError("the video has no frames")
        return out

    def classifier(self, gs: dict[str, Any]) -> ModelEntry | None:
        """The server's output classifier when it is in the catalog and can run now."""
        name = safety.classifier_name(gs)
        entry = self.bot.catalog.get(name) if name else None
        if entry is None or entry.task != "image-classification":
            return None
        ok, _ = self.bot.policy.can_run(entry.name)
        return entry if ok else None

    def report(self, gs: dict[str, Any], job: Job, command: str, block: safety.Block) -> None:
        self.bot.report_block(gs, job, command, block)


async def setup(bot: NattyBot) -> None:
    await bot.add_cog(Safety(bot))
