"""Backend failures, classified once, and the one function that turns them into words for users."""

from __future__ import annotations

import enum


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


def _seconds(s: float | None) -> str:
    if s is None:
        return "a little while"
    s = max(1, round(s))
    return f"{s} s" if s < 120 else f"{round(s / 60)} min"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def user_message(error: BaseException, model: str | None = None) -> str:
    """A short, specific sentence for the user who asked. The only place that words backend failures."""
    if not isinstance(error, BackendError):
        return "Something went wrong on our side while generating. The error was logged."
    name = f"**{error.model or model}**" if (error.model or model) else "The model"
    k = error.kind
    if k is ErrorKind.RATE_LIMITED:
        return f"{name} is rate-limited by its provider. Try again in {_seconds(error.retry_after)}."
    if k is ErrorKind.BUSY:
        return f"{name} is busy or failing at the provider right now. Try again in a minute."
    if k is ErrorKind.LOADING:
        return f"{name} is still loading at the provider (about {_seconds(error.retry_after)}). Try again then."
    if k is ErrorKind.BAD_REQUEST:
        reason = _short(error.detail) if error.detail else "no reason given"
        return f"{name} rejected the request: {reason}"
    if k is ErrorKind.AUTH:
        return f"{name} refused our credentials. A server admin needs to check its API key."
    if k is ErrorKind.NOT_FOUND:
        return f"{name} was not found at its provider. A server admin needs to check the model catalog."
    if k is ErrorKind.TIMEOUT:
        return f"{name} took too long to answer and the request was stopped."
    if k is ErrorKind.UNREACHABLE:
        return f"{name} cannot be reached right now (its server is down or unreachable)."
    if k is ErrorKind.REFUSED:
        reason = f": {_short(error.detail)}" if error.detail else "."
        return f"{name} refused to generate this content{reason}"
    if k is ErrorKind.UNSUPPORTED:
        return f"{name} cannot do this task. Pick another model."
    if k is ErrorKind.NOT_CONFIGURED:
        return _short(error.detail) if error.detail else "No model is configured for this task on this server."
    if k is ErrorKind.CANCELLED:
        return "Cancelled."
    return f"{name} returned something we could not read. The error was logged."
