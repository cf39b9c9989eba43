"""Backend failures, classified once, and the one function that turns them into words for users."""

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


# The English words for each failure; `user_message(..., templates=...)` takes another language's. Fields:
# {name} (the model in bold, or "The model"), {wait} (a duration), {reason} (the provider's reason or "").
TEMPLATES: dict[ErrorKind | str, str] = {
    ErrorKind.RATE_LIMITED: "{name} is rate-limited by its provider. Try again in {wait}.",
    ErrorKind.BUSY: "{name} is busy or failing at the provider right now. Try again in a minute.",
    ErrorKind.LOADING: "{name} is still loading at the provider (about {wait}). Try again then.",
    ErrorKind.BAD_REQUEST: "{name} rejected the request: {reason}",
    ErrorKind.AUTH: "{name} refused our credentials. A server admin needs to check its API key.",
    ErrorKind.NOT_FOUND: "{name} was not found at its provider. A server admin needs to check the model catalog.",
    ErrorKind.TIMEOUT: "{name} took too long to answer and the request was stopped.",
    ErrorKind.UNREACHABLE: "{name} cannot be reached right now (its server is down or unreachable).",
    ErrorKind.REFUSED: "{name} refused to generate this content{reason}",
    ErrorKind.UNSUPPORTED: "{name} cannot do this task. Pick another model.",
    ErrorKind.NOT_CONFIGURED: "No model is configured for this task on this server.",
    ErrorKind.CANCELLED: "Cancelled.",
    ErrorKind.INTERNAL: "{name} returned something we could not read. The error was logged.",
    "unexpected": "Something went wrong on our side while generating. The error was logged.",
    "model": "The model",  # {name} when the model is unknown
    "no_reason": "no reason given",
    "refused_reason": ": {detail}",  # the REFUSED {reason} when the provider gave one (else ".")
    "a_while": "a little while",
    "seconds": "{n} s",
    "minutes": "{n} min",
}


def _seconds(s: float | None, templates: dict[ErrorKind | str, str]) -> str:
    if s is None:
        return templates["a_while"]
    s = max(1, round(s))
    return templates["seconds"].format(n=s) if s < 120 else templates["minutes"].format(n=round(s / 60))


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#]+@")  # up to the last @ of the authority
_SECRET_PARAMS = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig|signature)=)"
                            r"[^&\s#]+")


def redact_credentials(text: str) -> str:
    """`text` with the credentials of every URL in it hidden: `https://user:pass@host/v1` becomes
    `https://***@host/v1`, and `?api_key=...` or `&token=...` lose their values. The one place that does this:
    every reason, error or URL rendered to users (and logs) passes through it."""
    return _SECRET_PARAMS.sub(r"\1***", _URL_CREDENTIALS.sub(r"\1***@", text))


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(redact_credentials(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def user_message(error: BaseException, model: str | None = None,
                 templates: dict[ErrorKind | str, str] | None = None) -> str:
    """A short, specific sentence for the user who asked. The only place that words backend failures.

    `templates` replaces the English `TEMPLATES` (the bot passes the user's language); missing keys fall back.
    """
    words = TEMPLATES if templates is None else {**TEMPLATES, **templates}
    if not isinstance(error, BackendError):
        return words["unexpected"]
    name = f"**{error.model or model}**" if (error.model or model) else words["model"]
    k = error.kind
    if k is ErrorKind.NOT_CONFIGURED and error.detail:
        return _short(error.detail)
    reason = ""
    if k is ErrorKind.BAD_REQUEST:
        reason = _short(error.detail) if error.detail else words["no_reason"]
    elif k is ErrorKind.REFUSED:
        reason = words["refused_reason"].format(detail=_short(error.detail)) if error.detail else "."
    template = words.get(k, words[ErrorKind.INTERNAL])
    return template.format(name=name, wait=_seconds(error.retry_after, words), reason=reason)
