"""Load a causal LM (hub id, save_pretrained folder or GGUF file) and wrap it for nnsight tracing."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import content
from .architectures import NeuronSite, get_path, neurons_per_layer, site_for, sliding_window
from .placement import check_device_map, check_max_memory, describe_split, input_device, normalized
from .vocab import Device, DType  # noqa: F401  (re-exported; the recipe reads the same choices)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEMO_ALIASES = ("demo", "smollm2-135m-instruct")


class ModelLoadError(ValueError):
    pass


def resolve_device(device: Device) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for but torch sees no CUDA device; use 'cpu' or 'auto'")
    return device


@dataclass
class NeuronModel:
    """An nnsight-wrapped causal LM plus where its FFN neurons live.

    `remote` is passed to every trace: False (local), True (NDIF) or "local"
    (nnsight's serialize-then-execute path, used to test remote-compatibility without a server).
    """

    lm: object  # nnsight LanguageModel
    tokenizer: object
    site: NeuronSite
    n_layers: int
    n_neurons: int
    provenance: dict = field(default_factory=dict)
    remote: bool | str = False
    # nnsight backend for IG sessions: None for nnsight's own; a non-blocking NDIF job backend when many examples are in flight (nsneurons.ndif_jobs)
    session_backend: object = None

    @property
    def total_neurons(self) -> int:
        return self.n_layers * self.n_neurons

    @property
    def hf_model(self):
        return self.lm._module

    @property
    def on_server(self) -> bool:
        """True when traces run on NDIF (remote=True or a host URL); "local" only serializes in-process."""
        return self.remote not in (False, None, "local")

    @property
    def device(self) -> torch.device:
        """Where inputs for a trace go: the model's device locally (a split model's first module's:
        nsneurons.placement); CPU for NDIF (the server moves them)."""
        if self.on_server:
            return torch.device("cpu")
        return input_device(self.hf_model)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype activations have in a trace (for NDIF: the recipe's dtype, which must match the deployment)."""
        if self.on_server:
            return DTYPES.get(self.provenance.get("dtype", ""), torch.float32)  # absent: "" is no dtype either
        return next(self.hf_model.parameters()).dtype

    @property
    def attention_window(self) -> int | None:
        """The sliding attention window of some of the model's layers, or None (all see everything)."""
        return sliding_window(self.hf_model.config)

    def sees_whole_prompt(self, n_tokens: int) -> bool:
        """Whether every layer attends to all n_tokens of a prompt (no sliding window cuts it): the
        shared-prefix computations need that, as they pass one mask for every layer."""
        window = self.attention_window
        return window is None or n_tokens <= window

    def layers(self, root=None):
        """The list of blocks, on the nnsight envoy (default) or on any object with the same paths."""
        return get_path(self.lm if root is None else root, self.site.layers)

    def down_proj(self, layer: int, root=None):
        return get_path(self.layers(root)[layer], self.site.down_proj)

    def describe(self) -> str:
        return (
            f"{self.provenance.get('model', '?')}: {self.hf_model.config.model_type} ({self.site.family}), "
            f"{self.n_layers} layers x {self.n_neurons} neurons = {self.total_neurons:,} FFN neurons, "
            f"dtype {self.provenance.get('dtype')}, device {self.provenance.get('device')}"
        )


def wrap(
    hf_model, tokenizer, *, source: str = "<in-memory>", remote: bool | str = False, extra: dict | None = None
) -> NeuronModel:
    """Wrap an already-built HF causal LM: freeze parameters, find the neuron site, count neurons."""
    from nnsight import LanguageModel

    site = site_for(hf_model.config.model_type)
    hf_model.eval()
    for p in hf_model.parameters():
        p.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    try:
        blocks = get_path(hf_model, site.layers)
        n_neurons = neurons_per_layer(get_path(blocks[0], site.down_proj))
    except AttributeError as err:
        raise ModelLoadError(
            f"model_type {hf_model.config.model_type!r}: the neuron site table says blocks at "
            f"{site.layers!r} and neurons at the input of {site.down_proj!r}, but the model has no such module ({err})"
        ) from None
    with warnings.catch_warnings():
        # nnsight 0.8 renames LanguageModel to TransformersModel; both behave the same.
        warnings.simplefilter("ignore")
        lm = LanguageModel(hf_model, tokenizer=tokenizer)
    dtype = next(hf_model.parameters()).dtype
    prov = {
        "model": source,
        "model_type": hf_model.config.model_type,
        "dtype": str(dtype).removeprefix("torch."),
        "device": input_device(hf_model).type,
    }
    if describe_split(hf_model):
        prov["device_map"] = describe_split(hf_model)  # modules per device of a split model
    prov.update(extra or {})
    return NeuronModel(
        lm=lm, tokenizer=tokenizer, site=site, n_layers=len(blocks), n_neurons=n_neurons, provenance=prov, remote=remote
    )


def load_model(
    source: str,
    *,
    device: Device = "auto",
    dtype: DType = "float32",
    revision: str | None = None,
    remote: bool | str = False,
    trust_remote_code: bool = False,
    device_map=None,
    max_memory=None,
    offload_folder=None,
) -> NeuronModel:
    """Load from a hub id, a local `save_pretrained` folder, a local `.gguf` file, or "demo".

    With `remote=True` a hub id is not downloaded: nnsight builds the model skeleton and NDIF runs it.
    device_map ("auto", "balanced", ... or module -> device) and max_memory (device -> size) split a
    local model across devices (HF/accelerate; `device` is then unused); offload_folder: where modules
    mapped to "disk" are kept (default: a temporary folder).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelLoadError(f"dtype {dtype!r} is not one of {sorted(DTYPES)}")
    if device_map is not None and remote not in (False, None, "local"):
        raise ModelLoadError("device_map: NDIF places the model itself; device_map and max_memory are for local models")
    if source.lower() in DEMO_ALIASES:
        from .demo_model import ensure_demo_model_dir

        # A save_pretrained copy of the GGUF weights (identical logits) loads ~7x faster than the GGUF.
        source = str(ensure_demo_model_dir())
    torch_dtype = DTYPES[dtype]
    path = Path(source).expanduser()
    extra: dict = {"revision": revision or ""}
    if remote not in (False, None, "local"):
        return _remote_model(source, dtype=dtype, revision=revision, remote=remote, trust_remote_code=trust_remote_code)
    check_device_map(device_map)
    check_max_memory(max_memory, device_map)
    device_map, max_memory = normalized(device_map, max_memory)
    placing = _placement(device_map, max_memory, offload_folder)
    dev = resolve_device(device) if device_map is None else None
    try:
        if path.suffix == ".gguf":
            if not path.is_file():
                raise ModelLoadError(f"GGUF file {str(path)!r} does not exist")
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch_dtype, **placing)
            extra["weights_sha256"] = content.file_sha256(path)
        elif path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"folder {str(path)!r} has no config.json (expected a save_pretrained folder)")
            tok = AutoTokenizer.from_pretrained(str(path))
            hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype, **placing)
            # Content, not the path: replacing the weights at the same path must not reuse results.
            extra["weights_sha256"] = content.folder_sha256(path)
        else:
            if _looks_like_path(source):
                raise ModelLoadError(
                    f"model {source!r}: no such file or folder (expected a save_pretrained folder, "
                    "a .gguf file, a hub id owner/name or 'demo')"
                )
            tok = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
            hf = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch_dtype, revision=revision, trust_remote_code=trust_remote_code, **placing
            )
            extra["commit"] = content.hub_model_commit(source, revision)  # what `revision` (or main) resolved to today
    except Exception as err:  # noqa: BLE001 - transformers, safetensors and gguf (struct.error, ...) each raise their own types
        if isinstance(err, ModelLoadError) or not (path.suffix == ".gguf" or _is_model_file_error(err)):
            raise
        weights = sorted(p.name for p in path.glob("*.safetensors")) if path.is_dir() else []
        damaged = (
            f" (weights file {', '.join(weights)} damaged or truncated?)"
            if "Safetensor" in type(err).__name__ and weights
            else ""
        )
        raise ModelLoadError(f"could not load model {source!r}{damaged}: {_one_line(err)}") from None
    if dev is not None:  # a model placed by a device_map stays where accelerate put it
        hf.to(dev)  # type: ignore[arg-type]  # transformers' decorator stub on .to() drops the bound self
    return wrap(hf, tok, source=source, remote=remote, extra=extra)


def _placement(device_map, max_memory, offload_folder) -> dict:
    """from_pretrained's placement arguments: none without a device_map (the model is moved whole)."""
    if device_map is None:
        return {}
    placing = {"device_map": device_map, "max_memory": max_memory}
    if isinstance(device_map, str) or "disk" in device_map.values():
        import tempfile

        # Modules accelerate sends to the disk need a folder; its files live as long as the process.
        placing["offload_folder"] = str(offload_folder or tempfile.mkdtemp(prefix="nsneurons-offload-"))
    return placing


def _looks_like_path(source: str) -> bool:
    """A source written as a path, not a hub id "owner/name": absolute, or starting with ~, ./ or ../."""
    return source.startswith(("/", "~", "./", "../", ".\\", "..\\")) or Path(source).is_absolute()


def _is_model_file_error(err: BaseException) -> bool:
    """Errors that mean the model's files are missing or damaged (not a bug on this side)."""
    file_errors: tuple[type[BaseException], ...] = (OSError, ValueError, EOFError, KeyError)
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - transformers depends on safetensors
        pass
    else:
        file_errors += (SafetensorError,)
    return isinstance(err, file_errors) or "gguf" in type(err).__module__


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def _remote_model(
    source: str, *, dtype: str, revision: str | None, remote: bool | str = True, trust_remote_code: bool = False
) -> NeuronModel:
    """A model that NDIF runs: nnsight builds it from its config (no weights here).

    A local save_pretrained folder works too (for a server that deployed that folder, such as
    scripts/ndif-local): its absolute path is the model's repo id. `trust_remote_code` reaches the
    tokenizer and the model, and so nnsight's model key (a deployment is reached only with the same value).
    """
    from nnsight import LanguageModel
    from transformers import AutoTokenizer

    identity = {}
    if Path(source).expanduser().is_dir():
        from .remote import register_local_model_path

        identity["weights_sha256"] = content.folder_sha256(Path(source).expanduser())
        source = register_local_model_path(source)
    tok = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, object] = {"revision": revision} if revision else {}
        if trust_remote_code:  # only when set: nnsight's model key then names it
            kwargs["trust_remote_code"] = True
        lm = LanguageModel(source, tokenizer=tok, **kwargs)
    hf = lm._module
    site = site_for(hf.config.model_type)
    blocks = get_path(hf, site.layers)
    n_neurons = neurons_per_layer(get_path(blocks[0], site.down_proj))
    identity = identity or {"commit": content.hub_model_commit(source, revision)}
    prov = {
        "model": source,
        "model_type": hf.config.model_type,
        "dtype": dtype,
        "device": "remote",
        "revision": revision or "",
        **identity,
    }
    return NeuronModel(lm=lm, tokenizer=tok, site=site, n_layers=len(blocks), n_neurons=n_neurons, provenance=prov, remote=remote)
