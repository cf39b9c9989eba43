"""`natty generate`: one generation through the same job engine the bot uses, printed to the console."""

from __future__ import annotations

import sys
from pathlib import Path

from bot.config import Settings
from bot.jobs.engine import JobEngine, Limits
from bot.jobs.job import Job, JobState
from bot.jobs.results import ref_of
from bot.jobs.storage import Storage
from bot.policy import Policy
from models.backends import Backends
from models.base import INPUT, Progress
from models.catalog import Catalog

CLI_USER = 0  # jobs from the command line belong to no Discord user


class ConsolePrinter:
    """A job listener that writes progress to stderr on one line."""

    def __init__(self) -> None:
        self.last = ""

    async def job_queued(self, job: Job, position: int, eta: float | None, exact: bool = True) -> None:
        print(f"queued {job.id} on {job.model}", file=sys.stderr)

    async def job_progress(self, job: Job, progress: Progress) -> None:
        if progress.text is not None:
            sys.stderr.write(progress.text[len(self.last):])
            self.last = progress.text
        else:
            pct = f"{progress.fraction:5.0%}" if progress.fraction is not None else ""
            sys.stderr.write(f"\r{pct} {progress.message}".ljust(60))
        sys.stderr.flush()

    async def job_finished(self, job: Job) -> None:
        sys.stderr.write("\n")


async def generate_once(settings: Settings, catalog: Catalog, task: str, prompt: str, *, model: str | None = None,
                        out: Path | None = None, seed: int | None = None, input_file: Path | None = None) -> int:
    entries = catalog.for_task(task)
    if not entries:
        print(f"natty: no model in the catalog serves {task!r}", file=sys.stderr)
        return 2
    if model is not None and model not in {e.name for e in entries}:
        print(f"natty: no {task} model named {model!r}; try: {', '.join(e.name for e in entries)}", file=sys.stderr)
        return 2
    backends = Backends()
    # the bot's own rule picks the model (bot.policy): no server here, so the operator's default, else the first
    # entry that can run; a named model must exist for the task and be able to run
    availability = {e.name: await backends.check(e) for e in entries}
    rules = Policy(settings, catalog, availability, lambda _guild: {})
    entry, problem = rules.resolve(task, model, {}, None)
    if entry is None:
        print(f"natty: {problem}", file=sys.stderr)
        return 2
    model = entry.name
    # its own database: the bot's queue is the bot's to recover, and a CLI job must never reach Discord
    storage = Storage(settings.data_dir / "cli.db", settings.data_dir)
    await storage.open()
    engine = JobEngine(storage, catalog, backends, Limits(per_user=1000, per_guild=1000, cooldown=0))
    engine.listeners.append(ConsolePrinter())
    try:
        await engine.start(recover=False)
        params: dict = {"seed": seed} if seed is not None else {}
        if input_file is not None:
            key = INPUT.get(task) or "image"
            params[f"{key}_path"] = str(input_file.resolve())
        job = await engine.submit(Job(user_id=CLI_USER, task=task, model=model, prompt=prompt, params=params),
                                  check_limits=False)
        job = await engine.wait(job.id)
    finally:
        await engine.stop()
        await storage.close()
    if job.state is not JobState.DONE or job.result is None:
        print(f"natty: {job.error}", file=sys.stderr)
        return 1
    result = job.result
    if result["kind"] == "text":
        text = result["text"]
        if out:
            out.write_text(text, encoding="utf-8")
        print(text)
    elif result["kind"] == "labels":
        for label, score in result["labels"]:
            print(f"{score:7.2%}  {label}")
    else:
        for i, item in enumerate(result["files"]):
            target = out or Path(f"natty-{job.id}-{item['filename']}")
            if out and len(result["files"]) > 1:
                # each file keeps its own kind: a tune's score is tune_2.mid beside tune_1.wav, not tune_2.wav
                target = out.with_name(f"{out.stem}_{i + 1}{Path(item['filename']).suffix or out.suffix}")
            target.write_bytes(storage.results.get(ref_of(item)))  # the engine has stopped: nothing else waits
            print(target)
    return 0
