"""A CPU model actor for a local NDIF server (ndif 0.1.2), used by scripts/ndif-local.

The stock actor (``ndif.services.ray.deployments.modeling.base.ModelActor``)
assumes a GPU: it calls ``torch.cuda.set_device`` while loading, dispatches the
weights with accelerate and moves them between GPU and CPU to park a replica.
This subclass keeps every request path of the stock actor (deserialize, run,
timeouts, result upload) and changes only what touches CUDA:

- the weights load on the CPU and stay there, frozen (as on NDIF);
- parking a replica (``to_cache``/``from_cache``) does nothing;
- per-request cleanup does not call ``torch.cuda``.

This module runs inside Ray workers: it must be importable there, so
scripts/ndif-local puts its folder on PYTHONPATH before ``ray start``. Select it
with ``actor_class: ndif_cpu_actor.CPUModelActor`` in the deploy spec.
"""

from __future__ import annotations

import gc
import logging
import time

import ray
from ndif.services.ray.deployments.modeling.base import BaseModelDeployment
from nnsight.modeling.huggingface import HuggingFaceModel

logger = logging.getLogger("ndif.modeling.cpu")


class CPUModelDeployment(BaseModelDeployment):
    """Same request handling as NDIF's model actor; weights on the CPU."""

    # Nothing to gain from parking a CPU replica: let the controller evict it.
    CACHEABLE = False

    def load_from_disk(self) -> HuggingFaceModel:
        started = time.time()
        model = HuggingFaceModel.from_model_key(self.model_key, dispatch=True, dtype=self.dtype_name, device="cpu", **self.kwargs)
        model._module.requires_grad_(False)
        logger.info("Loaded %s on the CPU in %.1fs", self.model_key, time.time() - started)
        return model

    async def to_cache(self) -> None:
        return None

    def from_cache(self, gpu_mem_bytes_by_id: dict[int, int]) -> None:
        self.gpu_mem_bytes_by_id = gpu_mem_bytes_by_id
        self.cached = False

    def cleanup(self) -> None:
        self.kill_switch.clear()
        self.kill_reason = None
        self.execution_ident = None
        self.model.interleaver.cancel()
        gc.collect()


@ray.remote(num_cpus=1, max_restarts=-1)
class CPUModelActor(CPUModelDeployment):
    """The Ray actor named in the deploy spec."""
