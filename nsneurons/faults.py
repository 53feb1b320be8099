"""Fault injection: interrupt a run at a named instant, so tests kill it where they mean to (no sleeps).

Every write that matters for resuming calls `checkpoint(name)`. Nothing happens unless
NSNEURONS_FAULT_AT is set:
- "N": stop at the N-th checkpoint this process reaches (any name), counting from 1;
- "NAME" or "NAME#N": stop the first (or N-th) time checkpoint NAME is reached.
NSNEURONS_FAULT_ACTION says how: "kill" (SIGKILL: no cleanup at all, like `kill -9` or a power
cut; the default), "interrupt" (KeyboardInterrupt, like Ctrl-C), "term" (SIGTERM) or "stop"
(SIGSTOP: frozen in place, holding whatever it holds). NSNEURONS_FAULT_LOG names a file that gets
one line per checkpoint reached, to count a run's kill points.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ACTIONS = ("kill", "interrupt", "term", "stop")

# Checkpoints reached by this process, per name and in all (key ""): the kill points are counted
# per process, so the count lives as long as the process. Only read when NSNEURONS_FAULT_AT is set.
_REACHED: Counter = Counter()


def checkpoint(name: str) -> None:
    """A named instant where tests may interrupt the process (see the module doc)."""
    at, log = os.environ.get("NSNEURONS_FAULT_AT"), os.environ.get("NSNEURONS_FAULT_LOG")
    if not at and not log:
        return
    _REACHED[""] += 1
    _REACHED[name] += 1
    if log:
        with open(log, "a") as f:
            f.write(name + "\n")
    if at and _due(at, name):
        _act(os.environ.get("NSNEURONS_FAULT_ACTION", "kill"), name)


def reset() -> None:
    """Count checkpoints from zero again (for tests that inject several faults in one process)."""
    _REACHED.clear()


def _due(at: str, name: str) -> bool:
    if at.isdigit():
        return _REACHED[""] == int(at)
    wanted, _, nth = at.partition("#")
    return wanted == name and _REACHED[name] == int(nth or 1)


def _act(action: str, name: str) -> None:
    if action == "interrupt":
        raise KeyboardInterrupt(f"fault injected at {name}")
    sig = {"kill": signal.SIGKILL, "term": signal.SIGTERM, "stop": signal.SIGSTOP}.get(action)
    if sig is None:
        raise ValueError(f"NSNEURONS_FAULT_ACTION: expected one of {', '.join(ACTIONS)}, got {action!r}")
    os.kill(os.getpid(), sig)
