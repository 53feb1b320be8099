"""`--shard i/n`: n workers fill one scores store, worker i scoring examples i, i + n, i + 2n, ...

Round robin rather than contiguous blocks: an example's cost grows with its prompt, and data files
often group long prompts together, so interleaving spreads them evenly over the workers. Each worker
writes only its own examples' chunks (one chunk per example, `done` included: nsneurons.store), so
no example is lost or written twice. Locks (nsneurons.runlock): each shard has its own lock file;
two workers of one shard are refused, and so is a worker without --shard, or with another n, while
shard workers run on the same output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class ShardError(ValueError):
    """A --shard value that is not i/n with 0 <= i < n."""


@dataclass(frozen=True)
class Shard:
    """One worker's share of the examples."""

    index: int  # i: this worker takes the examples whose position % count == index
    count: int  # n: the number of workers

    def __post_init__(self):
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ShardError(f"--shard: expected i/n with n >= 1 and 0 <= i < n, got {self.index}/{self.count}")

    def takes(self, position: int) -> bool:
        return position % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'i/n' -> Shard(i, n); one clear error otherwise (also an argparse type: ShardError is a ValueError)."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if match is None:
        raise ShardError(f"--shard: expected i/n such as 0/4 (worker i of n, counted from 0), got {text!r}")
    return Shard(int(match[1]), int(match[2]))


def _stem(lock: Path) -> str:
    return lock.name.removesuffix(".lock")


def shard_lock(lock: Path, shard: Shard | None) -> Path:
    """The lock file of this worker: `lock` itself without a shard, else one per shard beside it."""
    if shard is None:
        return lock
    return lock.with_name(f"{_stem(lock)}.shard-{shard.index}-of-{shard.count}.lock")


def conflicting_locks(lock: Path, shard: Shard | None):
    """A callable listing the lock files that must not be held while this worker runs: without a shard,
    every shard's; with one, the unsharded run's and those of shards of another n."""
    pattern = re.compile(re.escape(_stem(lock)) + r"\.shard-(\d+)-of-(\d+)\.lock")

    def listed() -> list[Path]:
        found = [lock] if shard is not None else []
        for path in sorted(lock.parent.glob(f"{_stem(lock)}.shard-*.lock")):
            match = pattern.fullmatch(path.name)
            if match and (shard is None or int(match[2]) != shard.count):
                found.append(path)
        return found

    return listed


def progress_line(path, done, shard: Shard, next_step: str) -> str:
    """What a shard worker says when its examples are written: the store complete (and what to run
    next), or how many examples the other shards still have to write."""
    n, written = len(done), int(sum(bool(d) for d in done))
    if written == n:
        return f"shard {shard}: done; {path} is complete ({n} of {n} examples); next: {next_step}"
    return (
        f"shard {shard}: done; {path} has {written} of {n} examples, {n - written} left to the other shards "
        "(a shard that stopped resumes with its own command)"
    )
