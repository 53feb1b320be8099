"""The four answers of a proxy question: the classes the targets and the accuracy compare.

`letters` (the paper's format): the token the model would emit for " A".." D" after the prompt
(one token each). `words`: each option's own text as it follows "Answer:" (e.g. " not sure"),
ALL of its tokens: an option is scored by the summed log-probability of its tokens (the paper's
Eq. 2; docs/ig.md, "Answers longer than one token"). Either way the tokens are resolved in context
(tokenize prompt + continuation and take the new tokens), so "A" versus " A" is decided by the
tokenizer, not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

from .tasks.base import LETTERS, AnswerFormat, Proxy


class AnswerTokenError(ValueError):
    pass


def _new_tokens(tokenizer, prompt_ids: list[int], prompt: str, continuation: str) -> tuple[int, ...]:
    """The tokens that follow the prompt's own in prompt + continuation (refused if the prompt's change)."""
    full = tokenizer(prompt + continuation, add_special_tokens=True)["input_ids"]
    if full[: len(prompt_ids)] != prompt_ids or len(full) <= len(prompt_ids):
        raise AnswerTokenError(
            f"the prompt's tokens change when {continuation!r} follows it; end prompts with 'Answer:' "
            "(no trailing space) so the answer starts a new token"
        )
    return tuple(int(t) for t in full[len(prompt_ids) :])


def _continuations(options: Sequence[str], answer_format: AnswerFormat) -> list[str]:
    if answer_format == "letters":
        return [" " + letter for letter in LETTERS]
    if answer_format == "words":
        return [" " + text.strip() for text in options]
    raise AnswerTokenError(f"answer_format {answer_format!r} is not 'letters' or 'words'")


def option_token_ids(tokenizer, prompt: str, options: Sequence[str], answer_format: AnswerFormat) -> tuple[tuple[int, ...], ...]:
    """The four options' token sequences after the prompt, in A..D order: one token each (letters) or
    all the tokens of each option's text (words). Options with identical sequences are refused (the
    model could not tell them apart); sequences that share a first token are fine."""
    prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    sequences = tuple(_new_tokens(tokenizer, prompt_ids, prompt, c) for c in _continuations(options, answer_format))
    lengths = [len(s) for s in sequences]
    if answer_format == "letters" and max(lengths) > 1:
        raise AnswerTokenError(f"option letters are not single tokens after the prompt: lengths {dict(zip(LETTERS, lengths))}")
    labels = list(LETTERS) if answer_format == "letters" else list(options)
    for i in range(4):
        for j in range(i + 1, 4):
            if sequences[i] == sequences[j]:
                raise AnswerTokenError(
                    f"options {labels[i]!r} and {labels[j]!r} have the same tokens after the prompt "
                    f"{tokenizer.convert_ids_to_tokens(list(sequences[i]))}; the four options must differ"
                )
    return sequences


def answer_token_ids(tokenizer, prompt: str, options: Sequence[str], answer_format: AnswerFormat) -> tuple[int, ...]:
    """The FIRST token of each of the four answers, in A..D order, refused unless they are distinct
    (the single-token view; nsneurons scores options by `option_token_ids`)."""
    firsts = tuple(s[0] for s in option_token_ids(tokenizer, prompt, options, answer_format))
    if len(set(firsts)) < 4:
        labels = list(LETTERS) if answer_format == "letters" else list(options)
        collisions: dict[int, list[str]] = {}
        for label, tid in zip(labels, firsts):
            collisions.setdefault(tid, []).append(label)
        shown = "; ".join(
            " / ".join(repr(n) for n in names) + f" -> {tokenizer.convert_ids_to_tokens(tid)!r}"
            for tid, names in collisions.items()
            if len(names) > 1
        )
        raise AnswerTokenError(
            f"answer tokens collide ({answer_format}): {shown}. The first token of each option's text must "
            "differ for a single-token view; nsneurons itself scores every token of an option (option_token_ids)"
        )
    return firsts


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


def proxy_option_ids(tokenizer, proxy: Proxy) -> tuple[tuple[int, ...], ...]:
    """The four options' token sequences of a proxy, in the answer format it was rendered for;
    an error names the task and example."""
    try:
        return option_token_ids(tokenizer, proxy.prompt, proxy.options, proxy.answer_format)
    except AnswerTokenError as err:
        raise AnswerTokenError(f"task {proxy.task!r}, example {proxy.example_id!r}: {err}") from None


def proxy_answer_ids(tokenizer, proxy: Proxy) -> tuple[int, ...]:
    """The four FIRST answer tokens of a proxy (`answer_token_ids`), in the format it was rendered for."""
    return answer_token_ids(tokenizer, proxy.prompt, proxy.options, proxy.answer_format)


def check_answer_tokens(tokenizer, proxies: Sequence[Proxy], answer_format: AnswerFormat | None = None) -> None:
    """Resolve every proxy's option tokens up front, so a bad option stops a run before hours of work."""
    check_answer_format(proxies, answer_format)
    for proxy in proxies:
        proxy_option_ids(tokenizer, proxy)
