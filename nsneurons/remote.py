"""Running traces on NDIF (nnsight's remote backend): host and API key, retries, clear errors.

- `RemoteConfig.resolve(host)`: the host comes from the argument, else ``NDIF_HOST``, else
  nnsight's config; the API key only from ``NDIF_API_KEY`` or nnsight's config, and it never
  appears in a repr, a str or `provenance()`.
- `configure_nnsight(config)` applies them to nnsight's process-wide ``CONFIG``.
- `register_local_model_path(path)` lets a local ``save_pretrained`` folder run remotely (its
  model key then names the folder, as on a server that deployed that folder).
- `with_retries(fn, ...)` re-runs ``fn`` (a whole trace or session) on transient failures
  (connection refused or reset, timeouts, HTTP 429/5xx, NDIF's "try again later") with
  exponential backoff, and turns a failure on the server into `NsneuronsRemoteError`.
- What the server serves and runs with (models, dtypes, library versions): nsneurons.ndif_preflight.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

#: HTTP statuses worth retrying: timeouts, rate limits, server or gateway trouble.
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_ERRNO = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EPIPE,
    }
)
#: NDIF's own wording for server-side failures that a later try can survive (an evicted or
#: restarting replica, a failed dispatch, a critical error that purged the queue).
_TRANSIENT_SERVER_PHRASES = ("try again later",)
_PERMANENT_SERVER_PHRASES = ("could not deploy this model",)


class NsneuronsRemoteError(RuntimeError):
    """A remote (NDIF) run failed: the server's message plus which work it was for.

    `server_message` is the server's text (usually a traceback of the user's block),
    `context` what the caller was doing (e.g. ``"example q17, proxy 2"``), `transient`
    whether it was a transient failure that outlasted the retries, `tries` how many were made.
    """

    def __init__(self, server_message: str, *, context: str = "", transient: bool = False, tries: int = 1):
        self.server_message = server_message
        self.context = context
        self.transient = transient
        self.tries = tries
        super().__init__(self._format())

    @property
    def summary(self) -> str:
        """The last non-empty line of the server message (the exception line of a traceback)."""
        lines = [ln.strip() for ln in self.server_message.strip().splitlines() if ln.strip()]
        return lines[-1] if lines else "(no message)"

    def _format(self) -> str:
        where = f"{self.context}: " if self.context else ""
        if self.transient:
            head = f"{where}NDIF unreachable or busy after {self.tries} tries: {self.summary}"
        else:
            head = f"{where}NDIF error: {self.summary}"
        body = self.server_message.strip()
        return head if body == self.summary else f"{head}\n--- server message ---\n{body}"


# ----------------------------------------------------------------------------- configuration


def _normalize_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if not host:
        raise ValueError("empty NDIF host")
    if "://" not in host:
        bare = host.split("/")[0].rsplit(":", 1)[0].strip("[]")
        local = bare in ("localhost", "::1") or bare.startswith("127.")
        host = ("http://" if local else "https://") + host
    if not host.startswith(("http://", "https://")):
        raise ValueError(f"NDIF host {host!r} must be an http:// or https:// URL")
    return host


class RemoteConfig:
    """Where NDIF is and how to authenticate. The key is kept out of every printable form."""

    __slots__ = ("host", "host_source", "_api_key", "key_source")

    def __init__(self, host: str, *, api_key: str | None = None, host_source: str = "argument", key_source: str = "none"):
        self.host = _normalize_host(host)
        self.host_source = host_source
        self._api_key = api_key or None
        self.key_source = key_source if self._api_key else "none"

    @classmethod
    def resolve(cls, host: str | None = None) -> RemoteConfig:
        """Host: argument, else ``NDIF_HOST``, else nnsight's config. Key: ``NDIF_API_KEY``, else nnsight's config."""
        from nnsight import CONFIG

        if host:
            h, hs = host, "argument"
        elif os.environ.get("NDIF_HOST"):
            h, hs = os.environ["NDIF_HOST"], "NDIF_HOST"
        else:
            h, hs = CONFIG.API.HOST, "nnsight config"
        if os.environ.get("NDIF_API_KEY"):
            key, ks = os.environ["NDIF_API_KEY"], "NDIF_API_KEY"
        elif CONFIG.API.APIKEY:
            key, ks = CONFIG.API.APIKEY, "nnsight config"
        else:
            key, ks = None, "none"
        return cls(h, api_key=key, host_source=hs, key_source=ks)

    @property
    def api_key(self) -> str | None:
        return self._api_key

    @property
    def has_api_key(self) -> bool:
        return self._api_key is not None

    def provenance(self) -> dict:
        """What may be recorded with results: the host and whether a key was used, never the key."""
        return {
            "ndif_host": self.host,
            "ndif_host_source": self.host_source,
            "ndif_api_key": "set" if self.has_api_key else "unset",
            "ndif_api_key_source": self.key_source,
        }

    def __repr__(self) -> str:
        return (
            f"RemoteConfig(host={self.host!r}, host_source={self.host_source!r}, "
            f"api_key={'<set>' if self.has_api_key else None}, key_source={self.key_source!r})"
        )

    __str__ = __repr__

    def __reduce__(self):  # never pickle the key along with a config
        raise TypeError("RemoteConfig is not picklable (it holds an API key); pass the host instead")


def configure_nnsight(config: RemoteConfig) -> None:
    """Point nnsight's process-wide config at ``config.host`` and set its key (in memory only)."""
    from nnsight import CONFIG

    CONFIG.API.HOST = config.host
    if config.api_key:
        CONFIG.API.APIKEY = config.api_key


def connect(host: str | None = None) -> dict:
    """Resolve the NDIF host and key (argument, else the environment), point nnsight at them, and
    return what may be recorded with results: the host and whether a key was set, never the key."""
    config = RemoteConfig.resolve(host=host)
    configure_nnsight(config)
    return config.provenance()


def register_local_model_path(path: str | os.PathLike) -> str:
    """Let a local ``save_pretrained`` folder run remotely; returns the path string to load it with.

    nnsight 0.8.1 canonicalizes a repo id through the Hub before building a model key, which
    fails for a folder. Registering the folder in nnsight's repo-id cache (a private dict,
    ``nnsight.modeling.huggingface._ID_CACHE``) keeps the key as the folder's absolute path,
    which is what scripts/ndif-local deploys. Build the model with the returned string:
    ``LanguageModel(p, tokenizer=AutoTokenizer.from_pretrained(p))``.
    """
    from nnsight.modeling import huggingface

    p = str(Path(path).expanduser().resolve())
    if not (Path(p) / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a save_pretrained folder (no config.json)")
    huggingface._ID_CACHE[p] = p
    return p


# ----------------------------------------------------------------------------- errors and retries


def _chain(err: BaseException | None):
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is_server_error(err: BaseException) -> bool:
    from nnsight.intervention.backends.remote import RemoteError

    return isinstance(err, RemoteError)


def is_transient(err: BaseException) -> bool:
    """Whether a failure of a remote run may succeed on another try.

    From nnsight 0.8.1's remote backend: the websocket connect raises ``ConnectionRefusedError``
    (and other ``OSError``s) directly; the HTTP POST wraps httpx errors in ``RemoteError`` with
    the httpx error as ``__cause__`` (``httpx.TransportError`` for connect/read failures and
    timeouts, ``httpx.HTTPStatusError`` for 503 "compute backend is reconnecting" and the like);
    result downloads raise httpx errors directly; the status stream raises websocket-client
    exceptions when the socket drops. A job the server failed comes back as a ``RemoteError``
    with no cause: transient only when NDIF says to try again later.
    """
    import httpx  # nnsight depends on httpx and websocket-client
    import websocket

    for e in _chain(err):
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO:
            return True
        if isinstance(e, httpx.TransportError):
            return True
        if isinstance(e, httpx.HTTPStatusError):
            return e.response.status_code in TRANSIENT_HTTP
        if isinstance(e, (websocket.WebSocketConnectionClosedException, websocket.WebSocketTimeoutException)):
            return True
        if isinstance(e, websocket.WebSocketBadStatusException):
            return getattr(e, "status_code", None) in TRANSIENT_HTTP
        if _is_server_error(e) and e.__cause__ is None:
            text = str(e).lower()
            if any(p in text for p in _PERMANENT_SERVER_PHRASES):
                return False
            return any(p in text for p in _TRANSIENT_SERVER_PHRASES)
    return False


def with_retries(
    fn: Callable[[], T],
    *,
    tries: int = 4,
    backoff: float = 1.0,
    describe: str = "",
    max_delay: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn()``; retry transient failures up to ``tries`` calls in all, waiting
    ``backoff * 2**k`` seconds (capped at ``max_delay``) before retry k+1.

    ``fn`` must redo the whole remote run (build and exit the trace or session inside it): a
    ``with`` block cannot be re-entered. A server-side failure becomes `NsneuronsRemoteError`
    carrying the server's message and ``describe``; so does a transient failure that
    outlasts the tries. Any other exception (a bug on this side) propagates unchanged.
    """
    if tries < 1:
        raise ValueError("tries must be >= 1")
    for attempt in range(1, tries + 1):
        try:
            return fn()
        except NsneuronsRemoteError:
            raise
        except Exception as err:
            if is_transient(err):
                if attempt < tries:
                    sleep(min(max_delay, backoff * 2 ** (attempt - 1)))
                    continue
                raise NsneuronsRemoteError(
                    f"{type(err).__name__}: {err}", context=describe, transient=True, tries=attempt
                ) from err
            if any(_is_server_error(e) for e in _chain(err)):
                raise NsneuronsRemoteError(str(err), context=describe, tries=attempt) from err
            raise
    raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------- what the server says about itself


def status_deployments(config: RemoteConfig) -> dict | None:
    """The server's ``GET /status`` deployments (``{name: entry}``) through nnsight's own
    ``nnsight.status(raw=True)``, asked of ``config.host``; None when the server cannot say."""
    import nnsight

    with _nnsight_host(config), contextlib.redirect_stderr(io.StringIO()):  # nnsight prints its own "Down" line
        raw = nnsight.status(raw=True)
    deployments = raw.get("deployments") if isinstance(raw, dict) else None
    return deployments if isinstance(deployments, dict) else None


def remote_env(config: RemoteConfig) -> dict | None:
    """The server's Python and package versions (``{"python_version", "packages"}``) through nnsight's
    ``get_remote_env`` (``GET /env``, refreshed: nnsight caches it per process); None when it cannot say."""
    from nnsight.ndif import get_remote_env

    try:
        with _nnsight_host(config):
            env = get_remote_env(force_refresh=True)
    except Exception:  # noqa: BLE001 - no /env (an older server), unreachable, a bad answer: all "cannot say"
        return None
    return env if isinstance(env, dict) and isinstance(env.get("packages"), dict) else None


@contextlib.contextmanager
def _nnsight_host(config: RemoteConfig):
    """nnsight's status helpers read its process-wide host: point it at ``config.host`` meanwhile."""
    from nnsight import CONFIG

    before = CONFIG.API.HOST
    CONFIG.API.HOST = config.host
    try:
        yield
    finally:
        CONFIG.API.HOST = before


def model_key_of(name: str, entry: dict) -> str | None:
    """The model key of one ``/status`` entry (a COLD, downloaded checkpoint has none)."""
    if entry.get("model_key"):
        return entry["model_key"]
    if ":ModelActor:" in name:  # "<replica>:ModelActor:<model_key>"
        return name.split(":ModelActor:", 1)[1]
    return None
