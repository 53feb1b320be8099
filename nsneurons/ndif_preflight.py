"""Before any remote work: what the NDIF server serves, which dtype it runs, which libraries it has.

`preflight_remote(source, ...)` runs before a remote model is built (so before any trace) and
by `nsneurons check RECIPE --remote`. Its rules (docs/ndif.md, "Preflight"):

- **Served**: the model (hub id, or a folder's absolute path on a server that deployed the
  folder; revision and ``trust_remote_code`` as in nnsight's model key) must be RUNNING on the
  server, else `RemotePreflightError` listing what is served. Read with nnsight's own
  ``nnsight.status(raw=True)``; nnsight's ``is_model_running`` is not used: it resolves the repo id
  through the Hub (fails offline and for a folder) and does not report the dtype.
- **Dtype**: the deployment's dtype, as ``/status`` reports it, is the run's; a recipe dtype that
  differs is overridden with a warning (NDIF deploys bfloat16, the recipe default is float32).
- **Versions**: the server's torch, transformers and nnsight (nnsight's ``get_remote_env``) must lie
  in `TESTED_VERSIONS` (pyproject.toml's pins: the trace bodies run on the server against its
  transformers internals), else a refusal; ``NSNEURONS_NDIF_ALLOW_UNTESTED=1`` makes it a warning.
  Differences from this client inside the range are warnings (nnsight's ``EnvComparison``).
- A server that cannot say (no ``/status`` or ``/env``) is warned about, not refused: the first
  trace then fails with its own error.

Client and server versions go into the model's provenance (`RemoteFacts.provenance`), hence
into every scores store of the run.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from .remote import NsneuronsRemoteError, RemoteConfig, connect, model_key_of, status_deployments
from .vocab import DType

logger = logging.getLogger("nsneurons")

#: Library versions the trace code is tested with: pyproject.toml's pins, [low, high)
#: (tests/test_ndif_preflight.py keeps the two equal). 5.40 removes `past_key_values`.
TESTED_VERSIONS: dict[str, tuple[str, str]] = {
    "torch": ("2.6", "2.15"),
    "transformers": ("5.0", "5.40"),
    "nnsight": ("0.8.1", "0.9"),
}
ALLOW_UNTESTED_ENV = "NSNEURONS_NDIF_ALLOW_UNTESTED"
_STATE_RANK = {"RUNNING": 0, "DEPLOYING": 1, "NOT_STARTED": 2, "UNHEALTHY": 3}


class RemotePreflightError(NsneuronsRemoteError):
    """The server cannot run this recipe as asked: model not served, or libraries outside the tested range."""


@dataclass(frozen=True)
class Deployment:
    """One model the server runs, folded over its replicas (the healthiest state wins)."""

    repo_id: str  # as in its model key: a hub id, or a folder's path on a server that deployed a folder
    revision: str  # "main" when the key names none
    trust_remote_code: bool  # part of the key: a client reaches the deployment only with the same value
    state: str  # RUNNING, DEPLOYING, NOT_STARTED, UNHEALTHY
    dtype: str | None  # as the server reports it ("bfloat16"); None when it does not
    model_key: str  # nnsight's model key, "<class>:<json>"

    def describe(self) -> str:
        extra = "".join(
            [
                f", revision {self.revision}" if self.revision != "main" else "",
                ", trust_remote_code" if self.trust_remote_code else "",
            ]
        )
        return f"{self.repo_id} ({self.state}{', ' + self.dtype if self.dtype else ''}{extra})"

    def matches(self, repo_id: str, revision: str | None, trust_remote_code: bool) -> bool:
        return (
            self.repo_id.lower() == repo_id.lower()
            and self.revision == (revision or "main")
            and self.trust_remote_code == bool(trust_remote_code)
        )


@dataclass(frozen=True)
class PreflightSettings:
    allow_untested: bool = False  # server libraries outside TESTED_VERSIONS: warn and go on instead of refusing

    @classmethod
    def from_env(cls) -> PreflightSettings:
        return cls(allow_untested=os.environ.get(ALLOW_UNTESTED_ENV, "").lower() in ("1", "true", "yes"))


@dataclass(frozen=True)
class RemoteFacts:
    """What the preflight found; `dtype` is the one the run uses."""

    host: str  # the NDIF host asked
    deployment: Deployment | None  # None: the server could not say what it serves
    dtype: str  # the deployment's dtype where it reports one, else the recipe's
    server_versions: dict[str, str] = field(default_factory=dict)  # empty: the server did not report them
    client_versions: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def provenance(self) -> dict:
        return {"ndif_server_versions": dict(self.server_versions), "ndif_client_versions": dict(self.client_versions)}

    @property
    def answered(self) -> bool:
        """Whether the server said both what it serves and which libraries it has."""
        return self.deployment is not None and bool(self.server_versions)

    def summary(self) -> list[str]:
        """Lines for `nsneurons check RECIPE --remote` (the warnings are logged as they are found)."""
        versions = lambda v: ", ".join(f"{k} {x}" for k, x in sorted(v.items())) or "not reported"  # noqa: E731
        return [
            f"served: {self.deployment.describe() if self.deployment else 'not checked (the server did not say)'} on {self.host}",
            f"dtype for the run: {self.dtype}",
            f"server: {versions(self.server_versions)}",
            f"client: {versions(self.client_versions)}",
        ]


def deployments(config: RemoteConfig) -> list[Deployment] | None:
    """The models the server runs (COLD, merely downloaded checkpoints left out); None when it cannot say."""
    raw = status_deployments(config)
    if raw is None:
        return None
    folded: dict[str, Deployment] = {}
    for name, entry in raw.items():
        key = model_key_of(name, entry) if isinstance(entry, dict) else None
        if key is None or entry.get("deployment_level") == "COLD":
            continue
        fields = _key_fields(key)
        dtype = entry.get("dtype")
        found = Deployment(
            repo_id=str(fields.get("repo_id") or entry.get("repo_id") or key),
            revision=fields.get("revision") or entry.get("revision") or "main",
            trust_remote_code=bool(fields.get("trust_remote_code")),
            state=entry.get("application_state") or "UNHEALTHY",
            dtype=str(dtype).removeprefix("torch.") if dtype else None,
            model_key=key,
        )
        held = folded.get(key)
        if held is None or _STATE_RANK.get(found.state, 9) < _STATE_RANK.get(held.state, 9):
            folded[key] = found
    return sorted(folded.values(), key=lambda d: (d.repo_id, d.revision))


def served_models(config: RemoteConfig) -> dict[str, str] | None:
    """``{model_key: state}`` for the models the server runs; None when the server cannot say.
    The server caches this view for a few seconds, so a model deployed a moment ago may be missing."""
    found = deployments(config)
    return None if found is None else {d.model_key: d.state for d in found}


def require_served(config: RemoteConfig, model_key: str) -> None:
    """Raise `RemotePreflightError` ("model X is not served by H; served: ...") unless the server
    reports ``model_key`` RUNNING. Does nothing when the server cannot say."""
    found = deployments(config)
    if found is None or any(d.model_key == model_key and d.state == "RUNNING" for d in found):
        return
    repo = _key_fields(model_key).get("repo_id") or model_key
    raise RemotePreflightError(_not_served(repo, config.host, found), context=f"model key {model_key}")


def _not_served(repo_id: str, host: str, found: list[Deployment]) -> str:
    listing = ", ".join(d.describe() for d in found) or "none"
    return f"model {repo_id} is not served by {host}; served: {listing} (`nsneurons check RECIPE --remote` checks a recipe)"


def _key_fields(model_key: str) -> dict:
    try:
        data = json.loads(model_key.split(":", 1)[1])
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def repo_id_for(source: str) -> str:
    """The repo id a remote model is built with: a folder's absolute path (as `register_local_model_path`), else the hub id."""
    from .models import DEMO_ALIASES

    if source.lower() in DEMO_ALIASES:
        from .content import cache_root
        from .demo_model import HF_DIR_NAME

        return str((cache_root() / HF_DIR_NAME).resolve())
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_dir() else source


# ---- versions --------------------------------------------------------------------------------


def client_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in TESTED_VERSIONS:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "-"
    return found


def outside_tested(versions: dict[str, str]) -> list[str]:
    """'name version (tested: >=low,<high)' for each library outside `TESTED_VERSIONS` (absent ones are not judged)."""
    from packaging.version import InvalidVersion, Version

    out = []
    for name, (low, high) in TESTED_VERSIONS.items():
        if name not in versions:
            continue
        try:
            inside = Version(low) <= Version(versions[name]) < Version(high)
        except InvalidVersion:
            inside = False
        if not inside:
            out.append(f"{name} {versions[name]} (tested: >={low},<{high})")
    return out


def check_versions(config: RemoteConfig, settings: PreflightSettings) -> tuple[dict[str, str], list[str]]:
    """(the server's versions, warnings); refuses libraries outside the tested range unless settings allow it."""
    from nnsight.ndif import EnvComparison

    from .remote import remote_env

    env = remote_env(config)
    if env is None:
        return {}, [f"{config.host} did not report its library versions (GET /env); they were not checked"]
    server = {k: str(env["packages"][k]) for k in TESTED_VERSIONS if k in env["packages"]}
    server["python"] = str(env.get("python_version", "?")).split()[0]
    bad = outside_tested(server)
    if bad and not settings.allow_untested:
        raise RemotePreflightError(
            f"{config.host} runs {', '.join(bad)}: outside the versions nsneurons is tested with, refusing "
            f"(the trace code depends on transformers internals); {ALLOW_UNTESTED_ENV}=1 runs anyway"
        )
    warnings = [f"{config.host} runs untested {', '.join(bad)} ({ALLOW_UNTESTED_ENV} is set)"] if bad else []
    local = client_versions()
    differ = EnvComparison({"python_version": local["python"], "packages": local}, env).critical_mismatches
    warnings += [f"{name} differs: {v['local']} here, {v['remote']} on the server" for name, v in sorted(differ.items())]
    return server, warnings


# ---- the preflight ---------------------------------------------------------------------------


def preflight_remote(
    source: str,
    *,
    host: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    settings: PreflightSettings | None = None,
) -> RemoteFacts:
    """Check the server before any remote work (module docstring); warnings are also logged."""
    from .models import DTYPES

    config = RemoteConfig.resolve(host)
    settings = settings or PreflightSettings.from_env()
    repo_id, warnings = repo_id_for(source), []
    found = deployments(config)
    deployment = None
    if found is None:
        warnings.append(f"could not read what {config.host} serves (GET /status); the model was not checked")
    else:
        deployment = next((d for d in found if d.matches(repo_id, revision, trust_remote_code) and d.state == "RUNNING"), None)
        if deployment is None:
            raise RemotePreflightError(_not_served(repo_id, config.host, found))
    if deployment is not None and deployment.dtype and deployment.dtype != dtype:
        if deployment.dtype in DTYPES:
            warnings.append(f"dtype {dtype!r} of the recipe overridden by the deployment's {deployment.dtype!r}")
            dtype = deployment.dtype
        else:
            warnings.append(
                f"the deployment reports dtype {deployment.dtype!r}, not one of {sorted(DTYPES)}; computing in {dtype}"
            )
    server, version_warnings = check_versions(config, settings)
    facts = RemoteFacts(config.host, deployment, dtype, server, client_versions(), tuple(warnings + version_warnings))
    for line in facts.warnings:
        logger.warning("NDIF preflight: %s", line)
    return facts


def connect_checked(
    source: str, *, host: str | None, revision: str | None, trust_remote_code: bool, dtype: DType
) -> tuple[dict, DType]:
    """Point nnsight at the host and run the preflight: (provenance to record, the dtype to load with)."""
    where = connect(host=host)
    facts = preflight_remote(source, host=host, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype)
    return {**where, **facts.provenance()}, cast("DType", facts.dtype)  # a key of DTYPES: checked above
