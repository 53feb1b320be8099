"""Recipes: one frozen, typed, validated object per experiment, loaded from YAML once at the edge.

Every field is documented where it is declared. Unknown keys, wrong types and bad values are
refused with the key's path (e.g. `selection.k: expected an int, got 'ten'`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from .budget import describe as describe_budget
from .budget import resolve as resolve_budget
from .ig_settings import IGSettings  # the IG fields shared with AttributionConfig
from .recipe_checks import (
    BUDGET,
    RecipeBudget,
    RecipeError,
    check_crosstask,
    check_naica,
    check_name,
    check_neuronllm,
    check_prompt_format,
    check_scoring,
    check_table8,
    check_tasks,
    need,
    not_blank,
    unique_key_loader,
)
from .recipe_sections import CrossTask, Naica, Table8, Table8Budget  # noqa: F401  (Table8*: re-exported)

# The choices are the library's own (one spelling each, shared with the configs and registries).
from .vocab import AnswerFormat, Backend, BestBy, Device, DType, Experiment, MethodName, Position, PromptFormat


@dataclass(frozen=True)
class TaskSource:
    name: str  # a task adapter: sentiment, ner, chunking, commonsense, generic (see nsneurons.tasks)
    source: str | None = None  # None: the packaged fixture file; or a local .jsonl/.json/.csv path; or a hub dataset id
    config: str | None = None  # hub dataset config name (e.g. "supervised" for Few-NERD)
    revision: str | None = None  # hub dataset revision (a commit or tag) to pin; recorded either way
    scored_split: str | None = None  # split scored and evaluated (default: the task's test split)
    demo_split: str | None = None  # split the one-shot demonstration comes from (default: train)
    max_questions: int | None = None  # cap on scored questions read (None: all)
    options: dict = field(default_factory=dict)  # adapter options, e.g. column names for "generic"


@dataclass(frozen=True)
class Attribution(IGSettings):
    """IG: the settings shared with AttributionConfig (nsneurons/ig_settings.py), then the run's own."""

    layers: tuple[int, ...] | None = None  # layers to attribute (None: all)
    gap_threshold: float = 0.1  # report flags layers whose median |sum IG - (F(x) - F(zeroed))| / |F(x) - F(zeroed)| exceeds it


@dataclass(frozen=True)
class Selection:
    methods: tuple[MethodName, ...] = ("neuronllm", "tn", "qrnca", "kn", "act", "random")  # which selections to run
    # K: neurons per role (good, bad) and the intervention budget; a count, or a share of the model's FFN neurons ("0.028%")
    k: Annotated[int | str, BUDGET] = 100
    # K values swept after the run from the stored scores (counts or shares; empty: no sweep; see docs/scoring.md)
    k_sweep: tuple[Annotated[int | str, BUDGET], ...] = ()
    # Score the identification examples again with a second draw of distractors; report the top-K overlap and RAC/RCC
    distractor_check: bool = False
    z: int = 5000  # z: per-example top/bottom set size of additive reordering (Eq. 5)
    kn_threshold: float = 0.2  # t: KN keeps neurons scoring >= t x the example's maximum
    random_draws: int = 5  # RANDOM is drawn this many times (seeds seed, seed + 1, ...); its cells are the mean over draws


@dataclass(frozen=True)
class Evaluation:
    understood: int = 50  # evaluation examples the unmodified model understands (Com), per task
    not_understood: int = 50  # and examples it does not understand
    candidates: int | None = None  # how many scored-split examples to screen for the evaluation set (None: all)
    ratios: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)  # good:bad ratios swept under budget K
    position: Position = "answer"  # switch neurons at the answer position or at every position
    ablation: bool = True  # also run good-only and bad-only interventions (Table 3)
    batch_size: int = 16  # prompts per forward pass
    # The one ratio a (task, method, direction) cell is reported at: "mean" of directed RAC and RCC,
    # "rac", "rcc", or "per_metric" (each metric's own best ratio: one cell may mix two ratios).
    best_by: BestBy = "mean"
    bootstrap: int = 1000  # resamples of evaluation examples for the 95% intervals (at least 1000)
    confidence: float = 0.95  # level of the bootstrap intervals
    # Reuse the evaluation examples of an earlier run (its folder or its examples.zarr) so several
    # models are scored on the same examples (appendix A.1 screened once, with LLaMA 2-7B).
    examples_from: str | None = None
    screen_model: str | None = None  # screen the candidates with this model instead (hub id, folder, .gguf, demo)


@dataclass(frozen=True)
class Recipe:
    name: str  # outputs go to <output>/<name>/
    model: str  # hub id, save_pretrained folder, .gguf file, or "demo" (SmolLM2-135M-Instruct)
    tasks: tuple[TaskSource, ...] = ()  # the tasks to run (experiment "neuronllm")
    experiment: Experiment = "neuronllm"  # NeuronLLM and its baselines, or NA-ICA / QRNCA
    naica: Naica = Naica()  # settings of experiment "naica"
    crosstask: CrossTask = CrossTask()  # settings of `nsneurons crosstask` (after `nsneurons run`)
    revision: str | None = None  # hub revision of the model
    trust_remote_code: bool = False  # allow the model's own code from the hub (Baichuan 2 needs it)
    backend: Backend = "local"  # "local" (this machine) or "remote" (NDIF)
    ndif_host: str | None = None  # NDIF host for backend "remote" (else NDIF_HOST or nnsight's config); never the API key
    device: Device = "auto"  # where a local model runs
    # Split a local model across devices (HF/accelerate): "auto", "balanced", "balanced_low_0",
    # "sequential", or module -> device (GPU index, "cpu", "disk"); `device` is then unused.
    device_map: str | dict | None = None
    max_memory: dict | None = None  # with device_map: the most memory per device, e.g. {0: 70GiB, 1: 70GiB, cpu: 100GiB}
    dtype: DType = "float32"  # model weights and compute dtype
    answer_format: AnswerFormat = "letters"  # answer tokens: option letters (the paper) or option words
    # How questions are put to the model: "qatt" (the paper's prompt), "chat" (it inside the model's chat
    # template) or "cloze" (no options listed, solved examples, option texts scored; needs answer_format words).
    prompt_format: PromptFormat = "qatt"
    seed: int = 0  # every sampling and shuffle derives from it
    identification_examples: int = 5  # tr: examples per task used to identify neurons
    attribution: Attribution = Attribution()  # how neurons are scored: integrated gradients (Eq. 1)
    selection: Selection = Selection()  # which neuron sets are picked from the scores
    evaluation: Evaluation = Evaluation()  # how the interventions are evaluated and scored
    output: str = "store"  # output root folder
    description: str = ""  # free text for the report

    def output_dir(self) -> Path:
        return Path(self.output) / self.name

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def type_name(tp) -> str:
    """How a field's type reads in an error or the reference ('one of ...', 'a list of an int')."""
    origin = typing.get_origin(tp)
    if origin is Annotated and isinstance(typing.get_args(tp)[1], RecipeBudget):
        return typing.get_args(tp)[1].name
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an int", float: "a number", str: "a string", bool: "true or false", dict: "a mapping", type(None): "null"}.get(
        tp, str(tp)
    )


def _convert(value, tp, where: str):
    origin = typing.get_origin(tp)
    if origin is Annotated and isinstance(typing.get_args(tp)[1], RecipeBudget):
        return typing.get_args(tp)[1].convert(value, where)  # a budget: a count or a share (nsneurons.budget)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(value, arg, where)
            except RecipeError as err:
                errors.append(err)
        if len(errors) == 1:  # Optional[X]: X's own error names the inner key (e.g. budgets[0].bad)
            raise errors[0]
        raise RecipeError(f"{where}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise RecipeError(f"{where}: expected {type_name(tp)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{where}: expected {type_name(tp)}, got {value!r}")
        item = typing.get_args(tp)[0]
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise RecipeError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"{where}: expected an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise RecipeError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    raise RecipeError(f"{where}: unsupported type {tp}")


def _build(cls, data, where: str):
    if isinstance(data, str) and cls is TaskSource:
        data = {"name": data}  # shorthand: `tasks: [sentiment, ner]`
    if not isinstance(data, dict):
        raise RecipeError(f"{where or 'recipe'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls, include_extras=True)  # keeps Annotated budgets
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        prefix = f"{where}." if where else ""
        raise RecipeError(f"unknown key {prefix}{unknown[0]} (known keys: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(f"missing required key {key}")
            continue
        kwargs[name] = _convert(data[name], hints[name], key)
    return cls(**kwargs)


def _check_values(recipe: Recipe) -> None:
    """Every value that can be checked without the model or the data, each error naming its key."""
    check_name(recipe.name)
    need(recipe.model.strip() != "", "model", "expected a hub id, a folder, a .gguf file or 'demo', got ''")
    need(recipe.output.strip() != "", "output", "expected a folder, got ''")
    not_blank(recipe.revision, "revision")
    for i, task in enumerate(recipe.tasks):
        not_blank(task.revision, f"tasks[{i}].revision")
    not_blank(recipe.ndif_host, "ndif_host")
    _check_placement(recipe)
    need(recipe.seed >= 0, "seed", f"expected an int >= 0, got {recipe.seed}")  # numpy's generators refuse negative seeds
    check_prompt_format(recipe)
    check_tasks(recipe.tasks, recipe.experiment, recipe.identification_examples)
    check_neuronllm(recipe)
    check_naica(recipe.naica)
    check_crosstask(recipe.crosstask)
    check_table8(recipe)
    check_scoring(recipe.evaluation, recipe.selection)


def _check_placement(recipe: Recipe) -> None:
    from .placement import PlacementError, check_device_map, check_max_memory

    try:
        check_device_map(recipe.device_map)
        check_max_memory(recipe.max_memory, recipe.device_map)
    except PlacementError as err:
        raise RecipeError(str(err)) from None


def recipe_from_dict(data: dict, where: str = "") -> Recipe:
    recipe = _build(Recipe, data, "")
    _check_values(recipe)
    return recipe


def apply_overrides(data: dict, overrides) -> dict:
    """`--set a.b=value` on top of a recipe's mapping; the value is read as YAML (`k=50` is an int,
    `methods=[tn, kn]` a list), and the result is validated like the file itself."""
    import copy

    import yaml

    data = copy.deepcopy(data)
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected KEY=VALUE, e.g. selection.k=50")
        *parents, leaf = key.strip().split(".")
        node = data
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"--set {item!r}: {'.'.join(parents[: i + 1])} is not a mapping")
        try:
            node[leaf] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise RecipeError(f"--set {item!r}: the value is not valid YAML ({' '.join(str(err).split())})") from None
    return data


def load_recipe(path, overrides=()) -> Recipe:
    """Read and validate a YAML recipe (with `--set` overrides); errors name the file and the key."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise RecipeError(f"cannot read recipe {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    try:
        data = yaml.load(text, Loader=unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise RecipeError(f"{path}: expected a mapping of recipe keys at the top level, got {type(data).__name__}")
    data = apply_overrides(data or {}, overrides)
    try:
        return recipe_from_dict(data)
    except RecipeError as err:
        raise RecipeError(f"{path}{' with --set' if overrides else ''}: {err}") from None


def check_against_model(recipe: Recipe, n_layers: int, n_neurons: int) -> None:
    """Checks that need the model's size: K (and the K sweep) and the layer list."""
    total = (len(recipe.attribution.layers) if recipe.attribution.layers else n_layers) * n_neurons
    from .selection import METHODS

    with_bad = any(METHODS[m].with_bad for m in recipe.selection.methods)
    limit = total // 2 if with_bad else total
    s = recipe.selection
    for key, spec in [("selection.k", s.k)] + [(f"selection.k_sweep[{i}]", v) for i, v in enumerate(s.k_sweep)]:
        count = resolve_budget(spec, n_layers * n_neurons)
        if count > limit:
            raise RecipeError(
                f"{key}: {describe_budget(count, n_layers * n_neurons, spec) if isinstance(spec, str) else count} "
                f"is larger than the {limit} neurons available per role "
                f"({total} FFN neurons attributed{', split between good and bad' if with_bad else ''})"
            )
    for layer in recipe.attribution.layers or ():
        if not 0 <= layer < n_layers:
            raise RecipeError(f"attribution.layers: layer {layer} is outside 0..{n_layers - 1}")
