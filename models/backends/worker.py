"""Local models in a worker process, so their Python-level loops never hold the bot's interpreter lock.

A local model sampling step by step in a thread of the bot's process holds the GIL between small array
operations, and every other user's acknowledgement waits behind it (bench/ack_latency.py measured seconds).
`ProcessWorker` runs a real in-process `LocalBackend` in a child process and speaks to it over a pipe:

    parent -> child   ("run", rid, entry, request, seconds_left) | ("cancel", rid) | ("close",)
    child -> parent   ("progress", rid, Progress) | ("done", rid, Result) | ("error", rid, error fields)

Progress and cancellation keep their meaning across the pipe. If the child dies, every call in flight fails
with a clear error and the next call starts a fresh child.
"""

from __future__ import annotations

import asyncio
import importlib
import itertools
import logging
import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from models.base import CancelToken, Progress, Request, Result, RunContext
from models.catalog import ModelEntry
from models.errors import BackendError, ErrorKind

log = logging.getLogger("natty.models.worker")


def _error_fields(exc: BaseException) -> tuple[str, str, float | None, int | None, str | None]:
    if isinstance(exc, BackendError):
        return exc.kind.value, exc.detail, exc.retry_after, exc.status, exc.model
    return ErrorKind.INTERNAL.value, f"{type(exc).__name__}: {exc}", None, None, None


# --- the child ---------------------------------------------------------------------------------------------

DEFAULT_NICE = 10  # on Linux, a nice-0 process gets about ten times the CPU of a nice-10 one when they compete


def worker_niceness() -> int:
    """How much lower than the bot's the worker's CPU priority is (`NATTY_WORKER_NICE`, 0 to 19; default 10):
    generation takes whatever CPU the bot's event loop leaves, so acknowledgements never wait for a model."""
    raw = os.environ.get("NATTY_WORKER_NICE", "").strip()
    try:
        value = int(raw) if raw else DEFAULT_NICE
    except ValueError:
        log.warning("NATTY_WORKER_NICE=%r is not a whole number; using %d", raw, DEFAULT_NICE)
        value = DEFAULT_NICE
    return max(0, min(19, value))


def _child_main(conn: Connection, backend_path: str, niceness: int = 0) -> None:
    if niceness and hasattr(os, "nice"):
        try:
            os.nice(niceness)
        except OSError as exc:  # not allowed here: run at the bot's priority
            log.warning("could not lower the local model worker's priority: %s", exc)
    asyncio.run(_serve(conn, backend_path))


async def _serve(conn: Connection, backend_path: str) -> None:
    # the backend to serve, by name ("module:Class", built with in_process=True): the worker depends on no backend
    module_name, class_name = backend_path.split(":")
    backend = getattr(importlib.import_module(module_name), class_name)(in_process=True)
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    send_lock = threading.Lock()
    tokens: dict[int, CancelToken] = {}
    tasks: set[asyncio.Task[None]] = set()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, ValueError):
                pass  # the parent went away; the run loop ends on its own

    def reporter(rid: int) -> Callable[[Progress], None]:
        return lambda p: send(("progress", rid, p))

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("close",)
            loop.call_soon_threadsafe(inbox.put_nowait, message)
            if message[0] == "close":
                return

    async def run_one(rid: int, entry: ModelEntry, request: Request, ctx: RunContext) -> None:
        try:
            result = await backend.run(entry, request, ctx)
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            if not isinstance(exc, BackendError):
                log.error("local model failed:\n%s", traceback.format_exc())
            send(("error", rid, _error_fields(exc)))
        else:
            send(("done", rid, result))
        finally:
            tokens.pop(rid, None)

    threading.Thread(target=read, name="natty-worker-reader", daemon=True).start()
    while True:
        message = await inbox.get()
        kind = message[0]
        if kind == "close":
            break
        if kind == "cancel":
            token = tokens.get(message[1])
            if token is not None:
                token.cancel()
            continue
        _, rid, entry, request, seconds_left = message
        token = tokens[rid] = CancelToken()
        ctx = RunContext(report=reporter(rid), cancel=token,
                         deadline=None if seconds_left is None else time.monotonic() + seconds_left)
        task = asyncio.create_task(run_one(rid, entry, request, ctx))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for token in tokens.values():
        token.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await backend.aclose()


# --- the parent --------------------------------------------------------------------------------------------

class ProcessWorker:
    """One child process serving local models; started on first use, restarted after a crash. `backend_path`
    ("module:Class") names the backend the child runs, so that the local backend can own its worker without
    the two modules importing each other."""

    def __init__(self, backend_path: str = "models.backends.local:LocalBackend") -> None:
        self.backend_path = backend_path
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._pending: dict[int, tuple[asyncio.Future[Result], RunContext]] = {}
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._start_lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def _ensure(self) -> Connection:
        async with self._start_lock:
            if self._process is not None and self._process.is_alive() and self._conn is not None:
                return self._conn
            self._loop = asyncio.get_running_loop()
            context = multiprocessing.get_context("spawn")  # no fork: the bot's threads and sockets stay behind
            parent, child = context.Pipe()
            process = context.Process(target=_child_main, args=(child, self.backend_path, worker_niceness()),
                                      name="natty-local-models",
                                      daemon=True)
            await asyncio.to_thread(process.start)
            child.close()
            self._process, self._conn = process, parent
            threading.Thread(target=self._read, args=(parent, process), name="natty-worker-results",
                             daemon=True).start()
            log.info("local model worker started (pid %s)", process.pid)
            return parent

    def _read(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        assert self._loop is not None
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            self._loop.call_soon_threadsafe(self._dispatch, message)
        self._loop.call_soon_threadsafe(self._child_gone, process)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind, rid, payload = message
        pending = self._pending.get(rid)
        if pending is None:
            return
        future, ctx = pending
        if kind == "progress":
            ctx.report(payload)
            return
        self._pending.pop(rid, None)
        if future.done():
            return
        if kind == "done":
            future.set_result(payload)
        else:
            kind_value, detail, retry_after, status, model = payload
            future.set_exception(BackendError(ErrorKind(kind_value), detail, retry_after=retry_after, status=status,
                                              model=model))

    def _child_gone(self, process: multiprocessing.process.BaseProcess) -> None:
        if process is not self._process:
            return
        code = process.exitcode
        log.warning("local model worker (pid %s) stopped with exit code %s", process.pid, code)
        self._process, self._conn = None, None
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(BackendError(
                    ErrorKind.INTERNAL, f"the local model worker stopped (exit code {code}); it restarts on the "
                    "next request"))
        self._pending.clear()

    def _send(self, conn: Connection, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            conn.send(message)

    async def run(self, entry: ModelEntry, request: Request, ctx: RunContext) -> Result:
        conn = await self._ensure()
        rid = next(self._ids)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending[rid] = (future, ctx)
        await asyncio.to_thread(self._send, conn, ("run", rid, entry, request, ctx.remaining()))
        told = False
        try:
            while True:
                try:
                    # wake now and then to pass on a cancel set from another thread
                    return await asyncio.wait_for(asyncio.shield(future), timeout=0.25)
                except TimeoutError:
                    if ctx.cancel.cancelled and not told:
                        self._send(conn, ("cancel", rid))
                        told = True
        except asyncio.CancelledError:
            if self._conn is conn:
                self._send(conn, ("cancel", rid))
            self._pending.pop(rid, None)
            raise

    async def aclose(self) -> None:
        process, conn = self._process, self._conn
        self._process, self._conn = None, None
        if process is None or conn is None:
            return
        try:
            self._send(conn, ("close",))
        except OSError:
            pass
        await asyncio.to_thread(process.join, 5)
        if process.is_alive():
            process.terminate()
            await asyncio.to_thread(process.join, 5)
        conn.close()
