"""The log writer (bot.logs.BatchedHandler): records leave the logging thread at once, are written in order by a
thread of their own, say what they said when they were logged, and none is lost at exit."""

from __future__ import annotations

import io
import logging
import time

from bot.logs import BatchedHandler, RedactingFormatter


def handler(period: float) -> tuple[BatchedHandler, io.StringIO]:
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(RedactingFormatter("%(levelname)s %(message)s", ["s3cret-value"]))
    return BatchedHandler(stream, period=period), out


def record(level: int, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("natty.test", level, __file__, 1, msg, args, None)


def test_records_are_written_in_order_redacted_and_as_they_were_when_logged() -> None:
    h, out = handler(period=60.0)  # nothing is written before close
    things = ["first"]
    h.handle(record(logging.INFO, "things: %s", things))
    things.append("changed later")
    for i in range(50):
        h.handle(record(logging.INFO, "line %d with s3cret-value", i))
    assert out.getvalue() == ""  # the logging thread only stored them
    h.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "INFO things: ['first']"
    assert lines[1:] == [f"INFO line {i} with [redacted]" for i in range(50)]


def test_a_warning_is_written_without_waiting_for_the_batch() -> None:
    h, out = handler(period=60.0)
    try:
        h.handle(record(logging.INFO, "before"))
        h.handle(record(logging.WARNING, "the model is down"))
        deadline = time.monotonic() + 10
        while "the model is down" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert out.getvalue().splitlines() == ["INFO before", "WARNING the model is down"]
    finally:
        h.close()


def test_an_exception_s_traceback_is_kept() -> None:
    h, out = handler(period=60.0)
    try:
        raise ValueError("bad s3cret-value")
    except ValueError:
        import sys

        rec = record(logging.ERROR, "failed")
        rec.exc_info = sys.exc_info()
        h.handle(rec)
    h.close()
    text = out.getvalue()
    assert text.startswith("ERROR failed\nTraceback") and "ValueError: bad [redacted]" in text


def test_sigterm_still_ends_the_process_at_once_but_after_the_last_records_are_written() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = ("import logging, os, time\n"
              "from bot.logs import setup_logging\n"
              "setup_logging('INFO', [])\n"
              "logging.getLogger('natty.test').info('the last words')\n"
              "os.kill(os.getpid(), 15)\n"
              "time.sleep(30)\n"
              "print('still running')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == -15  # killed by the signal, as before
    assert "the last words" in done.stderr and "still running" not in done.stdout
