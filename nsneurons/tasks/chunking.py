"""Chunking: CoNLL-2000 (`eriktks/conll2000`: tokens, pos_tags, chunk_tags), simplified.

Appendix A.1: a small, simplified set of short sentences. Options are bracketed segmentations,
"[NP The cat] [VP sat] [PP on] [NP the mat] ." (tokens outside any chunk stay bare).
Appendix C.9 had an LLM write wrong segmentations; here they are made deterministically from the
gold chunks, one per rule, so they stay close to the truth and need no review:
  shift  - a boundary between two adjacent chunks moved by one token,
  retype - one chunk's phrase type changed,
  merge/split - two adjacent chunks merged, or one chunk split in two.
When a rule cannot apply (or repeats an option) another rule's candidate is used; a sentence
with fewer than four distinct options, or longer than `max_tokens`, is skipped.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from .adapter import Conversion, Row, Skipped, TaskAdapter, convert_each, example_id, row_field
from .base import N_OPTIONS, Question, TaskDataError, TaskSpec

TASK = "chunking"
# CoNLL-2000 `chunk_tags` ids in order (0 is O).
CHUNK_TAGS = (
    "O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ", "I-INTJ", "B-LST", "I-LST",
    "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT", "B-SBAR", "I-SBAR", "B-UCP", "I-UCP", "B-VP", "I-VP",
)  # fmt: skip
# Types a retyped chunk may take: the common ones, so a wrong option is still plausible.
RETYPE_TO = ("NP", "VP", "PP", "ADJP", "ADVP", "PRT", "SBAR")
DEFAULT_MAX_TOKENS = 12

SPEC = TaskSpec(
    name=TASK,
    role="You are an expert in syntax and phrase chunking.",
    instruction=(
        "Choose the correct division of the sentence into chunks (NP noun phrase, VP verb phrase, "
        "PP prepositional phrase, ADJP adjective phrase, ADVP adverb phrase, PRT particle, "
        "SBAR subordinating conjunction); words outside any chunk are left unbracketed."
    ),
    word_answers=False,  # options are whole segmentations, not single words
)

# A segmentation: consecutive (type, tokens) segments covering the sentence; type None = outside (O).
Segment = tuple[str | None, tuple[str, ...]]


def chunks_from_tags(tokens: Sequence[str], tags: Sequence[str]) -> list[Segment]:
    """Read BIO tags into segments. An I- tag that does not continue its type starts a chunk (lenient, like conlleval)."""
    segments: list[list] = []
    for token, tag in zip(tokens, tags):
        if tag == "O":
            segments.append([None, [token]])
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and segments and segments[-1][0] == kind:
            segments[-1][1].append(token)
        else:
            segments.append([kind, [token]])
    return [(kind, tuple(words)) for kind, words in segments]


def render_segmentation(segments: Sequence[Segment]) -> str:
    return " ".join(" ".join(words) if kind is None else f"[{kind} {' '.join(words)}]" for kind, words in segments)


def _adjacent_chunk_pairs(segments: Sequence[Segment]) -> list[int]:
    return [i for i in range(len(segments) - 1) if segments[i][0] and segments[i + 1][0]]


def shift_candidates(segments: Sequence[Segment]) -> list[list[Segment]]:
    """Move one token across the boundary of two adjacent chunks (neither may become empty)."""
    out = []
    for i in _adjacent_chunk_pairs(segments):
        (left_kind, left), (right_kind, right) = segments[i], segments[i + 1]
        if len(left) > 1:
            out.append([*segments[:i], (left_kind, left[:-1]), (right_kind, left[-1:] + right), *segments[i + 2 :]])
        if len(right) > 1:
            out.append([*segments[:i], (left_kind, left + right[:1]), (right_kind, right[1:]), *segments[i + 2 :]])
    return out


def retype_candidates(segments: Sequence[Segment]) -> list[list[Segment]]:
    """Give one chunk another common phrase type."""
    out = []
    for i, (kind, words) in enumerate(segments):
        if kind is None:
            continue
        for other in RETYPE_TO:
            if other != kind:
                out.append([*segments[:i], (other, words), *segments[i + 1 :]])
    return out


def merge_split_candidates(segments: Sequence[Segment]) -> list[list[Segment]]:
    """Merge two adjacent chunks (under the left one's type) or split one chunk in two of its type."""
    out = []
    for i in _adjacent_chunk_pairs(segments):
        (kind, left), (_, right) = segments[i], segments[i + 1]
        out.append([*segments[:i], (kind, left + right), *segments[i + 2 :]])
    for i, (kind, words) in enumerate(segments):
        if kind is None:
            continue
        for cut in range(1, len(words)):
            out.append([*segments[:i], (kind, words[:cut]), (kind, words[cut:]), *segments[i + 1 :]])
    return out


RULES = (("shift", shift_candidates), ("retype", retype_candidates), ("merge_split", merge_split_candidates))


def distractor_segmentations(segments: Sequence[Segment], rng: random.Random) -> list[tuple[str, str]]:
    """Up to three (rule, text) distractors, one per rule where possible, all distinct from the gold and each other."""
    taken = {render_segmentation(segments)}
    pools = {}
    for name, rule in RULES:
        candidates = [render_segmentation(c) for c in rule(segments)]
        rng.shuffle(candidates)
        pools[name] = candidates
    chosen: list[tuple[str, str]] = []

    def take(name: str) -> bool:
        for text in pools[name]:
            if text not in taken:
                taken.add(text)
                chosen.append((name, text))
                return True
        return False

    missing = [name for name, _ in RULES if not take(name)]
    # A rule that could not apply is replaced by another rule's next candidate, in rule order.
    for _ in missing:
        any(take(name) for name, _ in RULES)
    return chosen[: N_OPTIONS - 1]


def chunking_stem(tokens: Sequence[str]) -> str:
    return f'How is the sentence "{" ".join(tokens)}" divided into chunks?'


def _tags(row: Row, where: str) -> tuple[list[str], list[str]]:
    tokens = [str(t) for t in row_field(row, "tokens", where, "list of words")]
    ids = list(row_field(row, "chunk_tags", where, "chunk tag ids 0..22"))
    if len(tokens) != len(ids):
        raise TaskDataError(f"{where}: {len(tokens)} tokens but {len(ids)} chunk_tags; expected one tag per token")
    for tag in ids:
        if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag < len(CHUNK_TAGS):
            raise TaskDataError(f"{where}: field 'chunk_tags' has {tag!r}; expected chunk tag ids 0..{len(CHUNK_TAGS) - 1}")
    return tokens, [CHUNK_TAGS[t] for t in ids]


def questions_from_rows(
    rows: Iterable[Row],
    *,
    seed: int = 0,
    split: str = "test",
    source: str = "<rows>",
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> Conversion:
    """One question per short sentence: the gold segmentation (option A before shuffling) and three distractors."""

    def convert(row: Row, index: int, key: str, where: str) -> list[Question] | Skipped:
        tokens, tags = _tags(row, where)
        if len(tokens) > max_tokens:
            return Skipped(where, f"longer than max_tokens={max_tokens}")
        gold = chunks_from_tags(tokens, tags)
        qid = example_id(split, key)
        distractors = distractor_segmentations(gold, random.Random(f"{seed}:{qid}:distractors"))
        if len(distractors) < N_OPTIONS - 1:
            return Skipped(where, f"only {len(distractors) + 1} distinct segmentations could be made")
        options = (render_segmentation(gold), *(text for _, text in distractors))
        meta = {"source": source, "split": split, "row": index, "distractor_rules": tuple(r for r, _ in distractors)}
        return [Question(qid, chunking_stem(tokens), options, 0, TASK, meta)]

    return convert_each(rows, convert, source=source)


ADAPTER = TaskAdapter(
    name=TASK,
    spec=SPEC,
    convert=questions_from_rows,
    hub_id="eriktks/conll2000",
    fixture="chunking.jsonl",
    demo_split="train",
    scored_split="test",
    aliases=("conll2000", "conll-2000"),
)
