"""What the `nsneurons` command prints and returns when something fails: one `error:` line and an exit code.

Exit codes (also in `nsneurons --help` and the README):
  0    success
  1    an unexpected error: a bug in nsneurons (rerun with --debug and report the traceback)
  2    usage: unknown command or option, or an option value of the wrong kind (argparse)
  3    bad input: recipe, data file, model files, a damaged store, a prompt longer than the model takes
  4    runtime failure: NDIF unreachable or failing, out of memory, output folder in use by another run
  130  interrupted (Ctrl-C); rerun the same command to resume
  143  terminated (SIGTERM); rerun the same command to resume
"""

from __future__ import annotations

import sys
import traceback

EXIT_BUG, EXIT_USAGE, EXIT_INPUT, EXIT_RUNTIME, EXIT_INTERRUPT, EXIT_TERMINATED = 1, 2, 3, 4, 130, 143

EPILOG = """exit codes:
  0    success
  1    unexpected error (a bug: rerun with --debug and report the traceback)
  2    usage error: unknown command or option, bad option value
  3    bad input: recipe, data file, model files, damaged store, prompt too long for the model
  4    runtime failure: NDIF unreachable or failing, out of memory, output folder in use by another run
  130  interrupted (Ctrl-C); rerun the same command to resume
  143  terminated (SIGTERM); rerun the same command to resume
--debug (or NSNEURONS_DEBUG=1) prints the traceback of an error as well."""

_OOM_HINT = (
    "lower evaluation.batch_size or attribution.layers_per_pass in the recipe (score: --layers-per-pass), "
    "attribute fewer layers, or use a smaller dtype"
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _damaged_store(err: BaseException) -> str:
    """The zarr store and variable a chunk failed to decode in, from the traceback's frames ('' if not found)."""
    found = ""
    for frame, _ in traceback.walk_tb(err.__traceback__):
        for value in list(frame.f_locals.values()):
            if type(value).__name__ == "StorePath":
                found = str(value)  # the deepest one names the array being read
    if not found:
        return ""
    path = found.removeprefix("file://")
    store, _, variable = path.rpartition(".zarr/")
    return f"{store}.zarr, variable {variable}" if store else path


def _is_oom(err: BaseException) -> bool:
    if isinstance(err, ValueError):  # our messages may quote data rows, which may say anything
        return False
    text = str(err)
    return (
        type(err).__name__ == "OutOfMemoryError"
        or isinstance(err, MemoryError)
        or "out of memory" in text.lower()
        or "can't allocate memory" in text
    )


def _unreachable(err: BaseException) -> bool:
    """A connection failure (nnsight's client raises httpx, websocket or socket errors directly)."""
    modules = {type(e).__module__.split(".")[0] for e in _chain(err)}
    return any(isinstance(e, ConnectionError) for e in _chain(err)) or bool(modules & {"httpx", "httpcore", "websocket"})


def _chain(err: BaseException | None):
    """The error and its causes, as a traceback shows them (`raise ... from None` hides the context)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def classify(err: BaseException) -> tuple[int, str]:
    """(exit code, one-line message) of a failure."""
    from .remote import NsneuronsRemoteError

    if isinstance(err, NsneuronsRemoteError):  # its first line is the summary; the rest is the server's traceback
        more = " (--debug shows the server's message)" if "\n" in str(err) else ""
        return EXIT_RUNTIME, str(err).splitlines()[0] + more
    if _is_oom(err):
        return EXIT_RUNTIME, f"out of memory ({type(err).__name__}: {_one_line(err)[:200]}); {_OOM_HINT}"
    if isinstance(err, RuntimeError) and "decompression error" in str(err).lower():
        where = _damaged_store(err) or "a zarr store"
        return EXIT_INPUT, (
            f"{where}: a chunk is damaged ({_one_line(err)}); delete that store "
            "(its results are recomputed on the next run) and rerun"
        )
    from .runlock import OutputLockedError

    if isinstance(err, OutputLockedError):  # not bad input: another run holds the folder right now
        return EXIT_RUNTIME, _one_line(err)
    if isinstance(err, ValueError):  # nsneurons' own errors (recipe, data, model, prompts) name the key/file/value
        return EXIT_INPUT, _one_line(err)
    if _unreachable(err):
        return EXIT_RUNTIME, f"could not connect (NDIF or the hub): {type(err).__name__}: {_one_line(err)}"
    if isinstance(err, OSError):
        if err.filename is not None:
            return EXIT_INPUT, f"{err.filename}: {err.strerror or _one_line(err)}"
        return EXIT_INPUT, _one_line(err)
    return (
        EXIT_BUG,
        f"unexpected {type(err).__name__}: {_one_line(err)[:300]} (a bug; rerun with --debug and report the traceback)",
    )


def report(err: BaseException, *, debug: bool = False) -> int:
    """Print one `error:` line (after the traceback when debugging) and return the exit code."""
    if debug:
        traceback.print_exception(err, file=sys.stderr)
    code, message = classify(err)
    print(f"error: {message}", file=sys.stderr)
    return code


# ---- SIGTERM, handled like Ctrl-C ---------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the stores are left resumable."""


def raise_terminated(signum, frame):
    raise Terminated()


def on_sigterm(handler):
    import signal

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an embedding program): leave signals alone
        return None
