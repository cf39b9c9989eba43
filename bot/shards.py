"""Which gateway shards this process runs, and so which servers' jobs and sessions are its own.

Discord sends a server's events to shard `(guild_id >> 22) % shard_count`, and DMs to shard 0. When the shards
are spread over several processes on one database, each process recovers, redelivers and resumes only what
belongs to its own shards: the others' queued jobs are theirs to run after their own restart.
"""

from __future__ import annotations

from dataclasses import dataclass


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard that receives a server's events; DMs (no server) arrive on shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % max(shard_count, 1)


def parse_shard_ids(text: str) -> list[int]:
    """Shard ids as written on the command line or in NATTY_SHARD_IDS: "0-3", "0,2,5", "0-1,4". Sorted, each
    once. Raises ValueError with a short reason."""
    ids: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            raise ValueError("an empty item")
        first, dash, last = part.partition("-")
        try:
            low, high = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError(f"{part!r} is not a shard id or a range like 0-3") from None
        if low < 0 or high < low:
            raise ValueError(f"{part!r} is not a range from a low id to a higher one")
        ids.update(range(low, high + 1))
    return sorted(ids)


@dataclass(frozen=True)
class ShardSet:
    """The shards one process runs, out of `count`; `ids` None: all of them (one process, or no sharding)."""

    count: int = 1
    ids: frozenset[int] | None = None

    def owns(self, guild_id: int | None) -> bool:
        """Whether this process receives the server's events, and so runs its jobs and sessions."""
        return self.ids is None or shard_of(guild_id, self.count) in self.ids


ALL_SHARDS = ShardSet()
