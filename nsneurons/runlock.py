"""One run per output at a time: an advisory lock file naming its holder (pid, host, start, command).

The lock is an `flock` on the file, which the kernel drops when the holder exits in any way (even
`kill -9`), so a lock file left behind by a dead run is simply taken over. On file systems without
`flock` the holder's pid is checked instead (a lock of a pid that is gone from this host is stale).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import sys
from pathlib import Path

LOCK_NAME = ".nsneurons.lock"


class OutputLockedError(ValueError):
    """Another run holds the output."""


def _holder_text(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not holder:
        return "another process (the lock file names no holder yet)"
    return f"pid {holder.get('pid')} on host {holder.get('host')}, started {holder.get('started')}" + (
        f": {holder['command']}" if holder.get("command") else ""
    )


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True  # someone else's process, or no pid to judge by: assume it is alive
    return True


def _take(fd: int, path: Path, wait: bool = False) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputLockedError(
            f"{path.parent} is in use by another nsneurons run ({_describe(_holder_text(fd))}); "
            f"wait for it to finish or stop it (its lock: {path})"
        ) from None
    except OSError as err:
        if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        holder = _holder_text(fd)  # no flock here: judge the holder by its pid
        if holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() and _pid_alive(holder.get("pid")):
            raise OutputLockedError(
                f"{path.parent} is in use by another nsneurons run ({_describe(holder)}); "
                f"wait for it to finish or stop it (its lock: {path})"
            ) from None


def _command() -> str:
    prog = "nsneurons" if Path(sys.argv[0]).name in ("nsneurons", "cli.py") else sys.argv[0]
    return " ".join([prog, *sys.argv[1:]])[:300]


def held_by_another(path: Path) -> dict | None:
    """The holder of the lock file `path` if a live process holds it, else None (no file, or a stale one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder_text(fd)
    except OSError:
        return None  # no flock here: only the file's own lock is judged (by pid, in _take)
    finally:
        os.close(fd)
    return None


def _refuse_conflicts(path: Path, conflicting) -> None:
    """OutputLockedError if a live run holds one of the `conflicting` lock files (they exclude `path`'s)."""
    for other in conflicting():
        holder = None if Path(other) == path else held_by_another(Path(other))
        if holder is not None:
            raise OutputLockedError(
                f"{path.parent} is in use by another nsneurons run that conflicts with this one ({_describe(holder)}; "
                f"its lock: {other}); wait for it to finish or stop it"
            )


@contextlib.contextmanager
def output_lock(path, *, wait: bool = False, conflicting=None):
    """Hold the lock file `path` for the block; OutputLockedError names the holder if another run has it.
    wait: block until the holder is done instead. conflicting: a callable listing lock files that must
    not be held meanwhile (checked once ours is held: of two such runs starting together, neither
    goes on unseen by the other)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _take(fd, path, wait)
            if conflicting is not None:
                try:
                    _refuse_conflicts(path, conflicting)
                except OutputLockedError:
                    with contextlib.suppress(OSError):
                        os.unlink(path)  # ours, held: no lock file of a run that did not start is left
                    raise
            # The previous holder may have removed the file between our open and our lock: then
            # ours is a lock on a deleted file, and the next run could lock a new one. Retry.
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    stale = _holder_text(fd)
    if stale.get("pid") is not None:
        print(f"note: {path} was left by a run that is gone ({_describe(stale)}); taking it over", file=sys.stderr)
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": _command(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it, so no other run can be between lock and removal
        os.close(fd)
