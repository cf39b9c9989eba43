"""Backend failures, classified once (`ErrorKind`), and the redaction every reason shown to users goes through.
The words for each kind are in the bot's message catalogs (bot/locales, worded by bot.i18n `error_message`)."""

from __future__ import annotations

import enum
import re


class ErrorKind(enum.StrEnum):
    RATE_LIMITED = "rate_limited"  # 429; retry_after seconds
    BUSY = "busy"  # overloaded / 5xx that persisted
    LOADING = "loading"  # 503 model loading; retry_after = estimate
    BAD_REQUEST = "bad_request"  # 4xx with the provider's reason
    AUTH = "auth"  # 401/403, missing or wrong key
    NOT_FOUND = "not_found"  # unknown model or endpoint
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"  # connection refused, DNS, TLS
    REFUSED = "refused"  # content refused by the provider or a safety check
    UNSUPPORTED = "unsupported"  # the backend or provider does not serve this task
    NOT_CONFIGURED = "not_configured"  # no model in the catalog for this task, or files missing
    CANCELLED = "cancelled"
    INTERNAL = "internal"  # a bug or a malformed answer


class BackendError(Exception):
    """A classified failure. `detail` is for logs and may quote the provider; it never holds a key."""

    def __init__(
        self,
        kind: ErrorKind,
        detail: str = "",
        *,
        retry_after: float | None = None,
        status: int | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(f"{kind.value}: {detail}" if detail else kind.value)
        self.kind = kind
        self.detail = detail
        self.retry_after = retry_after
        self.status = status
        self.model = model

    @property
    def retryable(self) -> bool:
        return self.kind in (ErrorKind.RATE_LIMITED, ErrorKind.BUSY, ErrorKind.LOADING)


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]+@")  # up to the last @ of the authority
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig|signature)=)"
                            r"[^&\s#]+")


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it hidden: `https://user:pass@host/v1` becomes
    `https://***@host/v1`, and `?api_key=...` or `&token=...` lose their values. The one place that does this:
    every reason, error or URL rendered to users (and logs) passes through it."""
    return _SECRET_PARAMS.sub(r"\1***", _URL_CREDENTIALS.sub(r"\1***@", text))


def shown_detail(text: str, limit: int = 200) -> str:
    """A provider's reason as users may read it: credentials hidden, on one line, at most `limit` characters.
    The words around it come from the bot's message catalogs (bot.i18n `error_message`)."""
    text = " ".join(redact_credentials(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
