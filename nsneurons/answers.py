"""The four answer tokens of a proxy question: the classes the targets and the accuracy compare.

`letters` (the paper's format): the token the model would emit for " A".." D" after the prompt.
`words`: the first token of each option's own text as it follows "Answer:" (e.g. " positive").
Either way the token is resolved in context (tokenize prompt + continuation and take the first
new token), so "A" versus " A" is decided by the tokenizer, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .tasks.base import LETTERS, AnswerFormat, Proxy


class AnswerTokenError(ValueError):
    pass


def _first_new_token(tokenizer, prompt_ids: list[int], prompt: str, continuation: str) -> tuple[int, int]:
    """(first token after the prompt, number of new tokens) for prompt + continuation."""
    full = tokenizer(prompt + continuation, add_special_tokens=True)["input_ids"]
    if full[: len(prompt_ids)] != prompt_ids or len(full) <= len(prompt_ids):
        raise AnswerTokenError(
            f"the prompt's tokens change when {continuation!r} follows it; end prompts with 'Answer:' "
            "(no trailing space) so the answer starts a new token"
        )
    return full[len(prompt_ids)], len(full) - len(prompt_ids)


def answer_token_ids(tokenizer, prompt: str, options: Sequence[str], answer_format: AnswerFormat) -> tuple[int, ...]:
    """Token ids of the four answers, in A..D order; distinct, each a single token (letters) or a first token (words)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if answer_format == "letters":
        continuations = [" " + letter for letter in LETTERS]
    elif answer_format == "words":
        continuations = [" " + text.strip() for text in options]
    else:
        raise AnswerTokenError(f"answer_format {answer_format!r} is not 'letters' or 'words'")
    ids, lengths = zip(*(_first_new_token(tokenizer, prompt_ids, prompt, c) for c in continuations))
    if answer_format == "letters" and max(lengths) > 1:
        raise AnswerTokenError(f"option letters are not single tokens after the prompt: lengths {dict(zip(LETTERS, lengths))}")
    if len(set(ids)) < 4:
        labels = list(LETTERS) if answer_format == "letters" else list(options)
        collisions: dict[int, list[str]] = {}
        for label, tid in zip(labels, ids):
            collisions.setdefault(tid, []).append(label)
        clash = [names for names in collisions.values() if len(names) > 1]
        shown = "; ".join(
            " / ".join(repr(n) for n in names) + f" -> {tokenizer.convert_ids_to_tokens(ids[labels.index(names[0])])!r}"
            for names in clash
        )
        raise AnswerTokenError(
            f"answer tokens collide ({answer_format}): {shown}. With option words, the first token of each "
            "option's text must differ; use answer_format 'letters' or reword the options"
        )
    return tuple(int(i) for i in ids)


def check_answer_format(proxies: Sequence[Proxy], answer_format: AnswerFormat | None) -> None:
    """Callers may still pass the format the proxies were built with; a different one is a mistake."""
    if answer_format is None:
        return
    for proxy in proxies:
        if proxy.answer_format != answer_format:
            raise ValueError(
                f"answer_format={answer_format!r} disagrees with the proxies: task {proxy.task!r}, example "
                f"{proxy.example_id!r} was rendered for {proxy.answer_format!r} (the format travels with the "
                "proxies; leave answer_format out)"
            )


def proxy_answer_ids(tokenizer, proxy: Proxy) -> tuple[int, ...]:
    """The four answer token ids of a proxy, in the answer format it was rendered for."""
    return answer_token_ids(tokenizer, proxy.prompt, proxy.options, proxy.answer_format)


def check_answer_tokens(tokenizer, proxies: Sequence[Proxy], answer_format: AnswerFormat | None = None) -> None:
    """Resolve every proxy's answer tokens up front, so a collision stops a run before hours of work."""
    check_answer_format(proxies, answer_format)
    for proxy in proxies:
        try:
            proxy_answer_ids(tokenizer, proxy)
        except AnswerTokenError as err:
            raise AnswerTokenError(f"task {proxy.task!r}, example {proxy.example_id!r}: {err}") from None
