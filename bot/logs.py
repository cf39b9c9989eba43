"""Logging set-up: one format that follows a job by id, and a formatter that never prints a secret."""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import signal
import threading

from models.errors import redact_credentials

# Interaction and webhook tokens travel in URLs; discord.py logs those URLs at DEBUG.
_URL_TOKENS = re.compile(r"(/(?:webhooks|interactions)/\d+/)[A-Za-z0-9_.\-]{20,}")
_BEARER = re.compile(r"((?:Bot|Bearer)\s+)[A-Za-z0-9_.\-]{20,}")
_HF_KEY = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b")


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then removes every known secret and every token-shaped string."""

    def __init__(self, fmt: str, secrets: list[str]) -> None:
        super().__init__(fmt)
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self.secrets)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = _URL_TOKENS.sub(r"\1[redacted]", text)
    text = _BEARER.sub(r"\1[redacted]", text)
    return redact_credentials(_HF_KEY.sub("hf_[redacted]", text))


class BatchedHandler(logging.Handler):
    """Hands records to `target` from a thread of its own, a batch every `period` seconds (at once for warnings
    and errors, at exit and on SIGTERM; a SIGKILL loses at most the last `period`'s records): the thread that logs
    only stores the record, with its message made final.

    A queue that wakes a writer thread for every record cost the event loop more than writing itself (on a busy
    two-core machine each wake-up handed the CPU to the writer: 0.66 ms of loop time per record in the ack
    bench's profile, against 0.22 ms for a direct write); a batch wakes it once."""

    def __init__(self, target: logging.Handler, period: float = 0.05) -> None:
        super().__init__()
        self.target, self.period = target, period
        self._records: collections.deque[logging.LogRecord] = collections.deque()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._serve, name="natty-log-writer", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.msg, record.args = record.getMessage(), None  # the arguments may change after this call
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is reported the usual way
            self.handleError(record)
            return
        self._records.append(record)
        if record.levelno >= logging.WARNING:
            self._wake.set()

    def _drain(self) -> None:
        while self._records:
            self.target.handle(self._records.popleft())

    def _serve(self) -> None:
        while not self._stopped:
            self._wake.wait(self.period)
            self._wake.clear()
            self._drain()

    def close(self) -> None:
        """Write what is left and stop the thread."""
        self._stopped = True
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._drain()
        self.target.flush()
        super().close()


_handler: BatchedHandler | None = None


def _close_handler() -> None:
    global _handler
    if _handler is not None:
        _handler.close()
        _handler = None


atexit.register(_close_handler)


def _write_out_then_stop(signum: int, _frame: object) -> None:
    """SIGTERM (e.g. `docker stop`) ends the process at once, as it always did, but after the records still waiting
    for the writer are written: atexit does not run on a signal."""
    _close_handler()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def setup_logging(level: str, secrets: list[str]) -> None:
    """Route every logger (ours and discord.py's) through one redacting handler on stderr, written from a thread of
    its own (`BatchedHandler`), so the event loop never waits on stderr nor runs the redaction."""
    global _handler
    _close_handler()
    stream = logging.StreamHandler()
    stream.setFormatter(RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", secrets))
    _handler = BatchedHandler(stream)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _write_out_then_stop)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_handler)
    root.setLevel(level)
    # discord.py's HTTP debug lines are noisy but redacted; keep them at the chosen level.
    logging.getLogger("discord").setLevel(level)
