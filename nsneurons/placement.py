"""Models split across devices: `device_map` and `max_memory` (passed to HF `from_pretrained`, which
places the modules through accelerate), checked before anything loads; where a split model's
inputs go; and the memory its devices have, summed.

accelerate puts a hook on every placed module that moves the module's inputs to its device (and an
offloaded module's weights there for the call), so a trace's own tensors must be made on the device
of the module they meet (`x.to(neurons.device)`), never on one model-wide device. This module
imports no torch at import time: the recipe checks its values before the heavy imports.
"""

from __future__ import annotations

import functools
import re

# The strategies accelerate computes a map for (from the devices it sees and max_memory).
DEVICE_MAP_NAMES = ("auto", "balanced", "balanced_low_0", "sequential")
# Where a module may go in an explicit map: a GPU index or name, the CPU, or the disk (offloaded).
_DEVICE = re.compile(r"(cpu|disk|mps|cuda|(cuda|xpu|npu|mlu|musa):\d+|\d+)")
# max_memory values: an int of bytes, or a size such as "10GiB" or "500MB".
_SIZE = re.compile(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_OFFLOADED = ("cpu", "disk")


class PlacementError(ValueError):
    """A device_map or max_memory that accelerate would not accept."""


def _device_ok(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 0
    return isinstance(value, str) and _DEVICE.fullmatch(value) is not None


def check_device_map(value, where: str = "device_map") -> None:
    """None, one of DEVICE_MAP_NAMES, or a mapping module name -> device (GPU index, 'cuda:N', 'cpu', 'disk')."""
    if value is None:
        return
    if isinstance(value, str):
        if value not in DEVICE_MAP_NAMES:
            raise PlacementError(f"{where}: expected one of {', '.join(map(repr, DEVICE_MAP_NAMES))} or a mapping, got {value!r}")
        return
    if not isinstance(value, dict) or not value:
        raise PlacementError(f"{where}: expected one of {', '.join(map(repr, DEVICE_MAP_NAMES))} or a mapping, got {value!r}")
    for module, device in value.items():
        if not isinstance(module, str):
            raise PlacementError(f"{where}: module names are strings such as 'model.layers.0', got {module!r}")
        if not _device_ok(device):
            raise PlacementError(f"{where}.{module}: expected a GPU index (0, 1, ...), 'cuda:N', 'cpu' or 'disk', got {device!r}")


def check_max_memory(value, device_map, where: str = "max_memory") -> None:
    """None, or a mapping device (GPU index, 'cpu', 'disk') -> size ('10GiB', '500MB' or an int of bytes)."""
    if value is None:
        return
    if device_map is None:
        raise PlacementError(f"{where}: takes effect only with device_map (e.g. 'auto'), which is not set")
    if not isinstance(value, dict) or not value:
        raise PlacementError(f"{where}: expected a mapping device -> size such as {{0: '20GiB', cpu: '60GiB'}}, got {value!r}")
    for device, size in value.items():
        if not _device_ok(device):
            raise PlacementError(f"{where}: expected devices as GPU indices (0, 1, ...), 'cpu' or 'disk', got {device!r}")
        fine = (isinstance(size, int) and not isinstance(size, bool) and size > 0) or (
            isinstance(size, str) and _SIZE.fullmatch(size) is not None
        )
        if not fine:
            raise PlacementError(f"{where}.{device}: expected a size such as '20GiB' or '500MB' or an int of bytes, got {size!r}")


def _torch_device(value):
    import torch

    return torch.device(f"cuda:{value}" if isinstance(value, int) or str(value).isdigit() else str(value))


def split_devices(hf_model) -> list:
    """The devices a model placed by a device_map runs on (offloaded modules run on its main device),
    the input's first; [] for a model not placed so."""
    placed = getattr(hf_model, "hf_device_map", None) or {}
    devices = [str(v) for v in placed.values()]
    if not devices:
        return []
    # accelerate runs CPU- and disk-offloaded modules on the first other device (the CPU if none).
    main = next((d for d in devices if d not in _OFFLOADED), "cpu")
    running = [main if d in _OFFLOADED else d for d in devices]
    return [_torch_device(d) for d in dict.fromkeys(running)]


def input_device(hf_model):
    """Where a trace's inputs go: the device the model's first module runs on (a split model's
    embedding may be offloaded: its parameters then sit on the meta device until called)."""
    devices = split_devices(hf_model)
    return devices[0] if devices else next(hf_model.parameters()).device


def free_gpu_bytes(hf_model) -> int:
    """Free memory of every GPU the model runs on, summed (a split model's activations are spread over them)."""
    import torch

    devices = split_devices(hf_model) or [next(hf_model.parameters()).device]
    return sum(torch.cuda.mem_get_info(d)[0] for d in devices if d.type == "cuda")


def describe_split(hf_model) -> str:
    """'cuda:0 x 12, cuda:1 x 13' (modules per device) for provenance; '' for a model not placed by a map."""
    placed = getattr(hf_model, "hf_device_map", None) or {}
    counts: dict[str, int] = {}
    for device in placed.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return ", ".join(f"{d} x {n}" for d, n in counts.items())


def normalized(device_map, max_memory):
    """The two values as accelerate wants them: GPU indices as ints ("0" from JSON or the CLI -> 0)."""

    def index(value):
        return int(value) if isinstance(value, str) and value.isdigit() else value

    if isinstance(device_map, dict):
        device_map = {module: index(device) for module, device in device_map.items()}
    if isinstance(max_memory, dict):
        max_memory = {index(device): size for device, size in max_memory.items()}
    return device_map, max_memory


def parse_cli(text: str, what: str):
    """--device-map / --max-memory: a name ('auto'), JSON ('{"model.layers.0": 0}'), or k=v pairs ('0=20GiB,cpu=60GiB')."""
    import json

    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError as err:
            raise PlacementError(f"--{what}: not valid JSON ({err})") from None
    if "=" not in text:
        return text
    pairs = [item.partition("=") for item in text.split(",")]
    if any(not key.strip() or not value.strip() for key, _, value in pairs):
        raise PlacementError(f"--{what}: expected KEY=VALUE pairs separated by commas, got {text!r}")
    return {key.strip(): value.strip() for key, _, value in pairs}


def offloaded(module) -> bool:
    """Whether accelerate keeps the module's weights off its device (CPU or disk offload) and brings
    them in only for its own forward: code that reads them directly then sees placeholders."""
    hook = getattr(module, "_hf_hook", None)
    return any(getattr(h, "offload", False) for h in getattr(hook, "hooks", None) or ([hook] if hook else []))


def gpu_count(device_map, max_memory) -> int:
    """How many GPUs a device_map spreads a model over (for the plan's memory): an explicit map's GPUs,
    else max_memory's GPU entries, else every GPU torch sees (accelerate's "auto" uses them all)."""
    device_map, max_memory = normalized(device_map, max_memory)
    if isinstance(device_map, dict):
        return max(1, len({str(d) for d in device_map.values() if str(d) not in (*_OFFLOADED, "mps")}))
    if max_memory:
        return max(1, sum(1 for d in max_memory if str(d) not in (*_OFFLOADED, "mps")))
    import torch

    return max(1, torch.cuda.device_count())


def without_cudnn_attention(fn):
    """Run `fn(model, ...)` with PyTorch's cuDNN attention kernel excluded when the model runs on a
    local GPU (the flash, memory-efficient and math kernels stay allowed); elsewhere unchanged.

    Why: on Hopper GPUs scaled_dot_product_attention with a mask picks cuDNN first, and cuDNN builds
    a plan for every sequence length it has not seen. Every example's prompts have their own length,
    so a run paid that again and again: measured on an H200 (bench/RESULTS.md, 2026-11-30), IG of an
    example whose length was new took 4.4 s with cuDNN and 0.56-0.83 s without; at a length already
    seen, 0.48 s and 0.53 s. The choice is made for the call only and restored after it."""

    @functools.wraps(fn)
    def call(model, *args, **kwargs):
        if getattr(getattr(model, "device", None), "type", None) != "cuda":  # CPU, NDIF, or checks before any model
            return fn(model, *args, **kwargs)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        allowed = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        with sdpa_kernel(allowed):
            return fn(model, *args, **kwargs)

    return call
