"""The local NDIF server's controller (scripts/ndif-local): NDIF's, with two changes for tests.

- `status()` (``GET /status``, nnsight's ``status()``): NDIF reports a deployment's model key,
  level and dtype only for models its controller sized itself; scripts/ndif-local deploys with
  ``size_bytes`` given (see docs/ndif.md), which left its entries bare (``application_state``
  only). Bare entries of deployed replicas get the fields NDIF reports for a sized model
  (``model_key``, ``deployment_level``, ``dtype``, ``repo_id``, ``revision``, ``task``), from
  the deployment itself.
- `env()` (``GET /env``, nnsight's ``get_remote_env``/``compare``) applies the package versions
  written by ``scripts/ndif-local report-versions NAME=VERSION ...`` over the real ones, so a test
  can see how nsneurons treats a server with another transformers without installing one. With
  no such file it answers what NDIF's answers.

scripts/ndif-local selects it with NDIF_CONTROLLER_IMPORT_PATH and names the file in
NSNEURONS_NDIF_REPORTED_VERSIONS; the controller's Ray worker inherits both from the Ray head.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import ray
from ndif.services.ray.deployments.controller.controller import _ControllerActor

REPORTED_VERSIONS_ENV = "NSNEURONS_NDIF_REPORTED_VERSIONS"


class ReportingController(_ControllerActor):
    def status(self):
        status = super().status()
        entries = status["deployments"]
        for node in self.cluster.nodes.values():
            for _, _, deployment in node.iter_deployments():
                entry = entries.get(deployment.name)
                if entry is None or entry.get("model_key"):
                    continue
                key = json.loads(deployment.model_key.split(":", 1)[1])
                entry.update(
                    model_key=deployment.model_key,
                    deployment_level=deployment.deployment_level.name,
                    dtype=deployment.dtype,
                    repo_id=key.get("repo_id"),
                    revision=key.get("revision"),
                    task=key.get("task"),
                )
        return status

    def env(self):
        env = super().env()
        path = os.environ.get(REPORTED_VERSIONS_ENV)
        if path and Path(path).is_file():
            env["packages"] = {**env["packages"], **json.loads(Path(path).read_text())}
        return env


@ray.remote(num_cpus=1, num_gpus=0, max_restarts=-1, resources={"head": 1})
class ReportingControllerActor(ReportingController):
    """The actor app() launches (same options as NDIF's ControllerActor)."""
