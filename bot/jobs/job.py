"""The job record: who asked, for what, where it renders, and how it ended."""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

INTERACTION_TOKEN_LIFETIME = 15 * 60  # seconds; Discord's limit for followups and @original edits


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


def new_job_id() -> str:
    """Short, unguessable, easy to type into /show: 10 lowercase base32 characters."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"  # 32 symbols: each random byte maps evenly
    return "".join(alphabet[b % 32] for b in secrets.token_bytes(10))


@dataclass
class Job:
    user_id: int
    task: str
    model: str
    prompt: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    guild_id: int | None = None
    channel_id: int | None = None
    id: str = field(default_factory=new_job_id)
    state: JobState = JobState.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    token_expires_at: float | None = None
    ephemeral: bool = False
    locale: str | None = None
    message_id: int | None = None  # the message the job renders into
    parent_id: str | None = None  # the job this one re-rolls, varies or continues
    attempts: int = 0
    result: dict[str, Any] | None = None  # {"kind", "text"?, "files": [{"path","filename"}], "meta", "note"?}
    error: str | None = None  # the message shown to the user

    # Control fields: kept in `params` (so the schema stays one JSON column), read through these typed names.
    @property
    def silent(self) -> bool:
        """A part of a larger creation (a story scene, a game item, a collab result): its owner posts it."""
        return bool(self.params.get("silent"))

    @property
    def renderer(self) -> str | None:
        """The custom renderer that posts this job's result (bot.ui.presenter `custom_renderers`), if any."""
        return self.params.get("renderer")

    @property
    def filesize_limit(self) -> int | None:
        """The upload limit Discord gave the interaction this job answers."""
        return self.params.get("filesize_limit")

    @property
    def channel_message(self) -> bool:
        """The job answers a channel message (a chat reply), not an interaction: it edits its placeholder."""
        return bool(self.params.get("channel_message"))

    @property
    def age_restricted(self) -> bool | None:
        """Asked for in an age-restricted channel (what its result may be shown next to depends on it); None for a
        job recorded before natty kept this."""
        value = self.params.get("age_restricted")
        return None if value is None else bool(value)

    @property
    def warnings(self) -> list[str]:
        """Short notes shown under the result (e.g. an attachment that was left out)."""
        return list(self.params.get("warnings") or [])

    def token_valid(self, margin: float = 60.0, now: float | None = None) -> bool:
        """Whether the interaction token can still edit @original and send followups."""
        now = time.time() if now is None else now
        return bool(self.interaction_token and self.token_expires_at and now < self.token_expires_at - margin)

    def __repr__(self) -> str:  # never print the interaction token
        return f"<Job {self.id} {self.task} {self.model} {self.state} user={self.user_id}>"
