"""A run's output folder: where every output lies, the fingerprint, the model, the start of a run, reading back.

The three experiments (nsneurons.runners: neuronllm, crosstask, naica) write into and read from a
folder laid out as `RunFolder` says; nothing else builds these paths by hand:

    recipe.yaml                      the recipe as run
    scores/<task>-<target>.zarr      IG scores stores (resumable; NA-ICA: scores/naica-qrnca.zarr, dim `query`)
    tasks/<task>.zarr                one task's results, with the recipe fingerprint
    results|neurons|baseline|examples.zarr   the combined datasets
    report.md, figures/              the report and its figures (NA-ICA: naica_*.png beside report.md)
    ksweep/<task>.zarr, ksweep.zarr  the K sweep (selection.k_sweep), per task and combined
    distractors.zarr                 the distractor check (selection.distractor_check)
    crosstask.zarr, crosstask.md     `nsneurons crosstask` (one zarr group per Dataset)
    naica.zarr                       NA-ICA's Datasets (one group each)

The fingerprint holds the model and the data by content (hashes, hub commits), not by path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import xarray as xr

from . import content, preflight
from .faults import checkpoint
from .recipe import Recipe
from .runlock import LOCK_NAME, output_lock
from .vocab import Device, DType
from .zarrio import open_checked, open_store

COMBINED = ("results", "neurons", "baseline", "examples")
CROSSTASK_GROUPS = ("common", "specific", "matrix", "layers", "budget", "table8")
NAICA_GROUPS = ("attribution", "key", "common", "domain_key", "regions", "prediction", "editing")
NAICA_SCORES = "naica-qrnca"  # NA-ICA's scores store: scores/naica-qrnca.zarr


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run's outputs (see the module doc)."""

    root: Path  # the output folder (recipe.output_dir() or --output)

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    @property
    def lock(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def task(self, name: str) -> Path:
        return self.tasks / f"{name}.zarr"

    def scores(self, task: str, target: str) -> Path:
        return self.scores_dir / f"{task}-{target}.zarr"

    def combined(self, name: str) -> Path:
        return self.root / f"{name}.zarr"

    @property
    def crosstask(self) -> Path:
        return self.root / "crosstask.zarr"

    @property
    def crosstask_report(self) -> Path:
        return self.root / "crosstask.md"

    @property
    def ksweep(self) -> Path:
        return self.root / "ksweep.zarr"

    def ksweep_task(self, name: str) -> Path:
        return self.root / "ksweep" / f"{name}.zarr"

    @property
    def distractors(self) -> Path:
        return self.root / "distractors.zarr"

    @property
    def naica(self) -> Path:
        return self.root / "naica.zarr"

    @property
    def naica_scores(self) -> Path:
        return self.scores_dir / f"{NAICA_SCORES}.zarr"

    def naica_figure(self, name: str) -> Path:
        return self.root / f"naica_{name}.png"

    def expected(self, recipe: dict) -> list[Path]:
        """The outputs a finished run of `recipe` (as in recipe.yaml) has."""
        if recipe.get("experiment") == "naica":
            return [self.naica, self.report]
        tasks = [t["name"] if isinstance(t, dict) else str(t) for t in recipe.get("tasks") or ()]
        return [self.task(t) for t in tasks] + [self.combined(n) for n in COMBINED] + [self.report]


# ---- fingerprint -----------------------------------------------------------------------------

# Settings that change a task's results (the rest, such as output folder or description, do not).
# Nor where the model's modules are placed (device_map, max_memory): the same numbers, elsewhere.
_FINGERPRINT_EXCLUDES = ("output", "description", "ndif_host", "crosstask", "device_map", "max_memory")


def fingerprint(recipe: Recipe, model_provenance: dict) -> str:
    return digest(fingerprint_inputs(recipe, model_provenance))


def digest(inputs: dict) -> str:
    """The short sha256 of fingerprint inputs, stored as a task's `fingerprint` attr."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint_inputs(recipe: Recipe, model_provenance: dict) -> dict:
    """What a task's results depend on: the recipe's settings, the model and each task's data, by
    content (a moved folder is the same model; replaced weights or an edited file are not)."""
    data = {k: v for k, v in recipe.to_dict().items() if k not in _FINGERPRINT_EXCLUDES}
    if data.get("prompt_format") == "qatt":  # the default: runs from before prompt formats keep their fingerprint
        data.pop("prompt_format")
    for key in ("k_sweep", "distractor_check"):  # analyses after the tables; they change no task's results
        data["selection"].pop(key)
    # Where the report draws its completeness line changes no number a task computes.
    data["attribution"] = {k: v for k, v in data["attribution"].items() if k != "gap_threshold"}
    # Where it ran (device, NDIF host) does not change the numbers.
    prov = {k: v for k, v in model_provenance.items() if k not in ("device", "device_map") and not k.startswith("ndif_")}
    if prov.get("weights_sha256"):
        data.pop("model"), prov.pop("model", None)
    data["model_provenance"] = prov
    data["tasks"] = [{**t, "source": _task_data(task)} for t, task in zip(data["tasks"], recipe.tasks)]
    return data


def _task_data(task) -> dict:
    from .tasks import get_task
    from .tasks.loading import DATA_DIR

    fixture = get_task(task.name).fixture
    return content.data_identity(task.source, DATA_DIR / fixture if fixture else None, revision=task.revision)


def _changed(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprint inputs."""
    keys = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed(a, b, f"{prefix}{k}.")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b) and a != b:
            keys += _changed(dict(enumerate(a)), dict(enumerate(b)), f"{prefix}{k}.")
        elif a != b:
            keys.append(f"{prefix}{k}")
    return keys


def cached_task(path: Path, inputs: dict) -> xr.Dataset | None:
    """A task's stored results if made with these inputs; a damaged store is an error, never reused."""
    if not path.exists():
        return None
    cached = open_checked(path).load()
    if cached.attrs.get("fingerprint") == digest(inputs):
        return cached
    try:
        what = ", ".join(_changed(json.loads(cached.attrs["settings"]), json.loads(json.dumps(inputs, default=str)))[:6])
    except (KeyError, ValueError):
        what = "settings not recorded (an older nsneurons)"
    print(f"task {cached.attrs.get('task', path.stem)}: stored results were made differently ({what}); recomputing")
    return None


# ---- the model and the start of a run --------------------------------------------------------


def load_run_model(
    source: str,
    *,
    device: Device = "auto",
    dtype: DType = "float32",
    revision: str | None = None,
    remote: bool = False,
    host: str | None = None,
    trust_remote_code: bool = False,
    device_map=None,
    max_memory=None,
):
    """The model, local or on NDIF (host: argument, else the environment), with where it ran in its
    provenance; device_map / max_memory split a local model across devices (nsneurons.placement)."""
    from .models import load_model

    where: dict = {}
    if remote:  # served model, server versions and dtype checked before any trace (nsneurons.ndif_preflight)
        from .ndif_preflight import connect_checked

        where, dtype = connect_checked(source, host=host, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype)
    placing = {"device_map": device_map, "max_memory": max_memory} if device_map is not None else {}
    model = load_model(
        source, device=device, dtype=dtype, revision=revision, remote=remote, trust_remote_code=trust_remote_code, **placing
    )
    model.provenance.update(where)
    return model


def model_for(recipe: Recipe):
    """The model a recipe names, where it says to run it."""
    return load_run_model(
        recipe.model,
        device=recipe.device,
        dtype=recipe.dtype,
        revision=recipe.revision,
        remote=recipe.backend == "remote",
        host=recipe.ndif_host,
        trust_remote_code=recipe.trust_remote_code,
        device_map=recipe.device_map,
        max_memory=recipe.max_memory,
    )


def write_text_atomically(path: Path, text: str) -> None:
    """A text file written whole or not at all (a temporary name, then a rename). The temporary name is
    the process's own: shard workers starting together each write recipe.yaml."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    tmp.write_text(text)
    tmp.replace(path)


def run_in_folder(recipe: Recipe, body: Callable, *, model=None, progress: bool = True, shard=None) -> Path:
    """The start every experiment shares, then `body(recipe, model, folder, progress=...)`; returns the folder.

    The data is read before anything is written or loaded (preflight), one run per output folder at a
    time (OutputLockedError names the holder; with `shard`, one per shard: nsneurons.shards),
    recipe.yaml written, the model loaded, every prompt checked against its positions and answer
    tokens before any IG."""
    import yaml

    from .shards import conflicting_locks, shard_lock

    prompts = preflight.recipe_prompts(recipe)  # data errors stop the run before it writes or loads anything
    folder = RunFolder(recipe.output_dir())
    with output_lock(shard_lock(folder.lock, shard), conflicting=conflicting_locks(folder.lock, shard)):
        folder.root.mkdir(parents=True, exist_ok=True)
        write_text_atomically(folder.recipe, yaml.safe_dump(json.loads(json.dumps(recipe.to_dict())), sort_keys=False))
        checkpoint("run.recipe-written")
        model = model or model_for(recipe)
        print(model.describe())
        print(plan_line(recipe, model))
        preflight.check_prompts(model, recipe, prompts)  # lengths and answer tokens, before any IG
        body(recipe, model, folder, progress=progress)
    return folder.root


def plan_line(recipe: Recipe, model) -> str:
    """`nsneurons plan`'s one-line summary (uncalibrated) for the loaded model's config, printed as a
    run starts; the plan is advice, so a failure to plan gives a line saying so, not a failed run."""
    from .plan import summary_line
    from .plan_inputs import shape_from_config

    try:
        return summary_line(recipe, shape_from_config(model.hf_model.config.to_dict(), recipe.model))
    except Exception as err:  # noqa: BLE001 - any failure to plan leaves the run as it was
        return f"plan: not available ({type(err).__name__}: {' '.join(str(err).split())[:200]})"


# ---- reading outputs back --------------------------------------------------------------------


def open_outputs(out) -> dict[str, xr.Dataset]:
    """The combined datasets of a finished run: results, neurons, baseline, examples."""
    folder = RunFolder(out)
    return {name: open_checked(folder.combined(name)) for name in COMBINED}


def open_crosstask(out) -> dict[str, xr.Dataset]:
    """The Datasets of `nsneurons crosstask`: common, specific, matrix, layers, budget, table8 (lazy)."""
    path = RunFolder(out).crosstask
    if not path.exists():
        raise FileNotFoundError(f"no {path}; run `nsneurons crosstask RECIPE` after `nsneurons run RECIPE`")
    return {name: open_store(path, group=name) for name in CROSSTASK_GROUPS}


def load_naica(path, groups: Sequence[str] = NAICA_GROUPS) -> dict[str, xr.Dataset]:
    """NA-ICA's Datasets from its naica.zarr (`path`), loaded; groups it does not have are left out."""
    return {g: open_store(path, group=g).load() for g in groups if (Path(path) / g).exists()}


def evaluation_proxies(recipe: Recipe, task, out, tokenizer=None) -> list:
    """The evaluation proxies a finished run used for `task` (read back from its results; chat: the model's tokenizer)."""
    from .splits import task_proxies

    ids = set(open_checked(RunFolder(out).task(task.name)).evaluation_example.values.tolist())
    _, candidates = task_proxies(recipe, task, tokenizer)
    return [p for p in candidates if p.example_id in ids]
