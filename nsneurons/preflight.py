"""Checks that need the data or the tokenizer, run before any integrated gradients.

`run_recipe` loads every task's proxies before it loads the model (a bad data file or a
task without evaluation candidates stops the run in seconds, not after the first task ran),
then checks every prompt against the model's positions and answer tokens once the tokenizer
is there. A prompt longer than the model's positions would otherwise fail deep inside a trace
(GPT-2) or run silently on positions the model never learned (rotary models).
"""

from __future__ import annotations

from collections.abc import Sequence

from .tasks.base import Proxy

# Config attributes that hold the most positions a model takes, by family (first found wins).
_POSITION_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")


class InputError(ValueError):
    """Bad input found before the work starts: names the task, example or file, and the numbers."""


def max_positions(config) -> tuple[int, str] | None:
    """(most tokens the model takes, the config attribute saying so), or None when the config has no limit."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in _POSITION_ATTRS:
        value = getattr(config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value, attr
    return None


def longest_prompt(tokenizer, proxies: Sequence[Proxy]) -> tuple[int, Proxy | None]:
    """(token count, proxy) of the longest prompt, counted as the traces tokenize it (special tokens included)."""
    if not proxies:
        return 0, None
    counts = [len(ids) for ids in tokenizer([p.prompt for p in proxies])["input_ids"]]
    index = max(range(len(counts)), key=counts.__getitem__)
    return counts[index], proxies[index]


def check_prompt_lengths(model, proxies: Sequence[Proxy]) -> None:
    """Refuse a prompt longer than the model's positions, naming the task, example and both numbers."""
    limit = max_positions(model.hf_model.config)
    if limit is None:
        return
    n_tokens, proxy = longest_prompt(model.tokenizer, proxies)
    if n_tokens > limit[0]:
        assert proxy is not None  # a positive count comes with its proxy
        raise InputError(
            f"task {proxy.task!r}, example {proxy.example_id!r}, proxy {proxy.proxy}: the prompt is {n_tokens} tokens "
            f"({len(proxy.prompt.split())} words), more than the model's {limit[0]} positions (config {limit[1]}); "
            "shorten or drop that row, or use a model with more positions"
        )


def task_inputs(recipe) -> dict[str, tuple[list[Proxy], list[Proxy]]]:
    """Each task's (identification, evaluation-candidate) proxies, loaded before the model; errors name the task."""
    from .splits import task_proxies, unwrapped

    inputs = {}
    for i, task in enumerate(recipe.tasks):
        try:
            identification, candidates = task_proxies(unwrapped(recipe), task)  # chat: wrapped in check_prompts
        except ValueError as err:
            raise InputError(f"tasks[{i}] ({task.name}): {err}") from None
        if not candidates:
            raise InputError(
                f"tasks[{i}] ({task.name}): no evaluation candidates remain after the "
                f"{recipe.identification_examples} identification examples; give the task more questions"
            )
        inputs[task.name] = identification, candidates
    return inputs


def naica_inputs(recipe) -> list[Proxy]:
    """The NA-ICA prompts of a recipe (experiment "naica"), loaded before the model."""
    from .splits import unwrapped
    from .tasks.domain_qa import domain_proxies, load_domain_qa

    n = recipe.naica
    try:
        questions = load_domain_qa(
            n.source, seed=recipe.seed, domains=n.domains, max_per_domain=n.max_per_domain, config=n.config
        )
    except ValueError as err:
        raise InputError(f"naica.source: {err}") from None
    # chat: the QATT prompts here, put in the model's template by check_prompts once the tokenizer is there.
    prompt_format = unwrapped(recipe).prompt_format
    proxies = domain_proxies(questions, seed=recipe.seed, answer_format=recipe.answer_format, prompt_format=prompt_format)
    return [p for ps in proxies.values() for p in ps]


def recipe_prompts(recipe) -> list[Proxy]:
    """Every prompt a recipe will attribute or evaluate, read before the model loads."""
    if recipe.experiment == "naica":
        return naica_inputs(recipe)
    return [p for pair in task_inputs(recipe).values() for part in pair for p in part]


def check_prompts(model, recipe, prompts: Sequence[Proxy]) -> None:
    """Once the tokenizer is there, before any IG: every prompt fits the model, every answer is one token.
    Chat prompts are checked as the model sees them (a tokenizer without a chat template is refused here)."""
    from .answers import check_answer_tokens
    from .tasks.formats import apply_prompt_format

    prompts = apply_prompt_format(prompts, recipe.prompt_format, model.tokenizer)
    check_prompt_lengths(model, prompts)
    check_answer_tokens(model.tokenizer, prompts)


def check_evaluation_set(task_name: str, sample) -> None:
    """After the baseline screen, before any IG: an empty evaluation set would leave nothing to measure."""
    if not sample.ids:
        raise InputError(
            f"task {task_name!r}: the evaluation set is empty ({sample.message()}); the unmodified model "
            "understands all or none of the candidates, so ask for both kinds or screen more candidates "
            "(evaluation.candidates, tasks[].max_questions)"
        )
