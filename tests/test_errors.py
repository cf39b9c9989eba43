"""Failures worded for users: specific, short, and never carrying a credential."""

from __future__ import annotations

import pytest

from bot.i18n import error_message
from models.errors import BackendError, ErrorKind, redact_credentials


@pytest.mark.parametrize("text, shown", [
    ("cannot reach https://user:pass@host:8080/v1 (ConnectError)", "cannot reach https://***@host:8080/v1 "
                                                                   "(ConnectError)"),
    ("http://k3y@h/v1", "http://***@h/v1"),
    ("https://u:p@ss@h/v1", "https://***@h/v1"),  # an unescaped @ in the password
    ("https://h/v1/models?api_key=abc123&limit=5", "https://h/v1/models?api_key=***&limit=5"),
    ("https://h/x?a=1&token=zz#top", "https://h/x?a=1&token=***#top"),
    ("write to natty@example.org or see https://example.org/a@b", "write to natty@example.org or see "
                                                                   "https://example.org/a@b"),
])
def test_credentials_in_urls_are_hidden_and_the_rest_kept(text, shown):
    assert redact_credentials(text) == shown


def test_a_failing_jobs_message_never_quotes_an_endpoint_password():
    error = BackendError(ErrorKind.BAD_REQUEST, "POST http://natty:hunter2@10.0.0.5:8000/v1/chat: model not loaded",
                         model="llama")
    message = error_message(error, None, "en-US")
    assert "hunter2" not in message and "http://***@10.0.0.5:8000/v1/chat" in message
