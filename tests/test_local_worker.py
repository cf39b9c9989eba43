"""Local models run in a worker process: same results, progress and cancel across the pipe, and a crash of
the worker becomes a clear error, then a fresh worker."""

import asyncio
import io
import os
import signal

import pytest
from PIL import Image

from models.backends.local import LocalBackend
from models.base import Progress, Request, RunContext
from models.catalog import load_catalog
from models.errors import BackendError, ErrorKind


@pytest.fixture
async def local():
    backend = LocalBackend(in_process=False)
    yield backend
    await backend.aclose()


async def test_a_local_model_runs_in_another_process_with_progress(local):
    entry = load_catalog().get("natty-pixelcnn")
    seen: list[Progress] = []
    ctx = RunContext(report=seen.append)
    result = await local.run(entry, Request(task="text-to-image", prompt="3", seed=1), ctx)
    assert local._worker.pid not in (None, os.getpid())
    assert Image.open(io.BytesIO(result.data)).size[0] >= 8
    assert result.meta["backend"] == "local"
    assert any(p.preview for p in seen) and seen[-1].fraction == 1.0
    again = await local.run(entry, Request(task="text-to-image", prompt="3", seed=1), RunContext())
    assert again.data == result.data  # same seed, same digit, same process or not


async def test_cancel_reaches_the_worker(local):
    entry = load_catalog().get("natty-rnn")
    ctx = RunContext()
    seen: list[Progress] = []
    ctx.report = lambda p: (seen.append(p), len(seen) == 5 and ctx.cancel.cancel())
    request = Request(task="chat", prompt="The sea", params={"max_new_tokens": 4000})
    with pytest.raises(BackendError) as err:
        await asyncio.wait_for(local.run(entry, request, ctx), 60)
    assert err.value.kind is ErrorKind.CANCELLED
    assert len(seen[-1].text or "") < 4000


async def test_a_crashed_worker_fails_the_job_clearly_and_the_next_one_runs(local):
    entry = load_catalog().get("natty-rnn")
    await local.run(entry, Request(task="chat", prompt="A", params={"max_new_tokens": 5}), RunContext())
    pid = local._worker.pid
    ctx = RunContext()
    ctx.report = lambda p: os.kill(pid, signal.SIGKILL)
    with pytest.raises(BackendError) as err:
        await local.run(entry, Request(task="chat", prompt="B", params={"max_new_tokens": 4000}), ctx)
    assert err.value.kind is ErrorKind.INTERNAL and "worker stopped" in err.value.detail
    result = await local.run(entry, Request(task="chat", prompt="C", params={"max_new_tokens": 5}), RunContext())
    assert result.text and local._worker.pid != pid


@pytest.mark.parametrize(("setting", "lower_by"), [(None, 10), ("0", 0), ("25", 19), ("lots", 10)])
async def test_the_worker_runs_below_the_bot_s_priority(monkeypatch, setting, lower_by):
    """Generation takes the CPU the bot's event loop leaves: acknowledgements never queue behind a model."""
    if setting is None:
        monkeypatch.delenv("NATTY_WORKER_NICE", raising=False)
    else:
        monkeypatch.setenv("NATTY_WORKER_NICE", setting)
    backend = LocalBackend(in_process=False)
    try:
        entry = load_catalog().get("natty-rnn")
        await backend.run(entry, Request(task="chat", prompt="A", params={"max_new_tokens": 3}), RunContext())
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert os.getpriority(os.PRIO_PROCESS, backend._worker.pid) == min(19, ours + lower_by)
    finally:
        await backend.aclose()
