"""QATT task layer: adapters on hand-made rows, proxies, loading and its errors (no network, no hub)."""

from __future__ import annotations

import json

import pytest

from nsneurons.tasks import (
    TASKS,
    Question,
    TaskDataError,
    build_task_proxies,
    chunking,
    commonsense,
    generic,
    get_task,
    load_task,
    loading,
    make_proxies,
    ner,
    pick_demonstration,
    prompt_prefix,
    sentiment,
    task_names,
    task_questions,
    task_spec,
)
from nsneurons.tasks.base import rules_text


@pytest.fixture(scope="session")
def hf_cache(tmp_path_factory):
    """A private `datasets` cache, and the one-off cost of importing `datasets` paid in setup."""
    import datasets  # noqa: F401

    return str(tmp_path_factory.mktemp("hf-cache"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- adapters on hand-made rows ------------------------------------------------------------------


def test_sentiment_collapses_sst5_to_three_classes_plus_not_sure():
    rows = [
        {"text": "A joyless, clumsy film.", "label": 1, "label_text": "negative"},
        {"text": "It runs two hours.", "label": 2, "label_text": "neutral"},
        {"text": "A triumph.", "label": 4, "label_text": "very positive"},
        {"text": "Awful.", "label": 0, "label_text": "very negative"},
    ]
    questions, skipped = sentiment.questions_from_rows(rows, split="test")
    assert skipped == []
    first = questions[0]
    assert first.example_id == "test-0"
    assert first.stem == 'What is the sentiment of this movie review? "A joyless, clumsy film."'
    assert first.options == ("positive", "negative", "neutral", "not sure")
    assert [q.options[q.answer] for q in questions] == ["negative", "neutral", "positive", "negative"]


def test_ner_one_question_per_span_with_type_word_options():
    row = {"id": "7", "tokens": ["Marie", "Curie", "was", "born", "in", "Warsaw", "."], "ner_tags": [7, 7, 0, 0, 0, 4, 0]}
    questions, skipped = ner.questions_from_rows([row], seed=3, split="test")
    assert skipped == []
    assert [q.example_id for q in questions] == ["test-7:0-2", "test-7:5-6"]
    assert questions[0].stem == 'In the sentence "Marie Curie was born in Warsaw.", what type of entity is "Marie Curie"?'
    assert questions[1].stem == 'In the sentence "Marie Curie was born in Warsaw.", what type of entity is "Warsaw"?'
    for question, correct in zip(questions, ["person", "location"]):
        assert question.options[question.answer] == correct
        assert list(question.options) == sorted(question.options)  # canonical order; proxies shuffle
        assert set(question.options) <= set(ner.COARSE_TYPES) and len(set(question.options)) == 4


def test_ner_spans_are_maximal_runs_of_one_tag_and_empty_sentences_are_skipped():
    assert ner.entity_spans([0, 7, 7, 0, 4, 4, 5, 0, 4]) == [(1, 3, 7), (4, 6, 4), (6, 7, 5), (8, 9, 4)]
    questions, skipped = ner.questions_from_rows([{"tokens": ["It", "rained", "."], "ner_tags": [0, 0, 0]}])
    assert questions == [] and skipped[0].reason == "no entity"


def test_ner_distractors_change_with_seed():
    row = {"tokens": ["Warsaw"], "ner_tags": [4]}
    options = {ner.questions_from_rows([row], seed=s).questions[0].options for s in range(10)}
    assert len(options) > 1


def test_chunking_gold_and_one_distractor_per_rule():
    row = {"id": "0", "tokens": ["The", "cat", "sat", "."], "pos_tags": [11, 19, 35, 6], "chunk_tags": [11, 12, 21, 0]}
    (question,), skipped = chunking.questions_from_rows([row], seed=0, split="test")
    assert skipped == []
    assert question.stem == 'How is the sentence "The cat sat ." divided into chunks?'
    assert question.answer == 0 and question.options[0] == "[NP The cat] [VP sat] ."
    # Worked by hand: every output each rule can give for this sentence.
    shifted = {"[NP The] [VP cat sat] ."}
    retyped = {f"[{t} The cat] [VP sat] ." for t in ("VP", "PP", "ADJP", "ADVP", "PRT", "SBAR")}
    retyped |= {f"[NP The cat] [{t} sat] ." for t in ("NP", "PP", "ADJP", "ADVP", "PRT", "SBAR")}
    merged_or_split = {"[NP The cat sat] .", "[NP The] [NP cat] [VP sat] ."}
    assert question.meta["distractor_rules"] == ("shift", "retype", "merge_split")
    assert question.options[1] in shifted
    assert question.options[2] in retyped
    assert question.options[3] in merged_or_split


def test_chunking_falls_back_to_another_rule_and_skips_what_it_cannot_use():
    one_chunk = {"tokens": ["Thanks", "."], "chunk_tags": [11, 0]}  # no shift, no merge/split possible
    (question,), _ = chunking.questions_from_rows([one_chunk])
    assert question.meta["distractor_rules"] == ("retype", "retype", "retype")
    assert len(set(question.options)) == 4
    no_chunks = {"tokens": ["Yes", "."], "chunk_tags": [0, 0]}
    too_long = {"tokens": ["word"] * 13, "chunk_tags": [11] + [12] * 12}
    questions, skipped = chunking.questions_from_rows([no_chunks, too_long])
    assert questions == []
    assert "distinct" in skipped[0].reason and "max_tokens=12" in skipped[1].reason


def test_chunking_reads_bio_leniently():
    segments = chunking.chunks_from_tags(["a", "b", "c", "d"], ["I-NP", "I-NP", "B-VP", "I-PP"])
    assert chunking.render_segmentation(segments) == "[NP a b] [VP c] [PP d]"


def csqa_row(texts, key):
    labels = list("ABCDE")[: len(texts)]
    return {"id": "q1", "question": "Where do fish live?", "question_concept": "fish",
            "choices": {"label": labels, "text": texts}, "answerKey": key}  # fmt: skip


def test_commonsense_four_choices_kept_as_they_are():
    (question,), _ = commonsense.questions_from_rows([csqa_row(["desert", "water", "tree", "cave"], "B")], split="validation")
    assert question.example_id == "validation-q1"
    assert question.stem == "Where do fish live?"
    assert question.options == ("desert", "water", "tree", "cave") and question.answer == 1


def test_commonsense_drops_one_wrong_choice_by_seed():
    texts = ["desert", "water", "tree", "cave", "attic"]
    kept = []
    for seed in range(12):
        (question,), _ = commonsense.questions_from_rows([csqa_row(texts, "B")], seed=seed)
        assert question.options[question.answer] == "water"
        assert list(question.options) == [t for t in texts if t in question.options]  # order kept
        kept.append(question.options)
    assert len(set(kept)) > 1


def test_generic_answer_as_index_letter_or_text_and_choice_columns():
    rows = [
        {"question": "2+2?", "choices": ["3", "4", "5", "6"], "answer": 1},
        {"question": "Red planet?", "choices": ["Venus", "Mars", "Jupiter", "Saturn"], "answer": "B"},
        {"question": "Largest ocean?", "choices": ["Atlantic", "Indian", "Arctic", "Pacific"], "answer": "Pacific"},
    ]
    questions, _ = generic.questions_from_rows(rows)
    assert [q.options[q.answer] for q in questions] == ["4", "Mars", "Pacific"]
    csv_like = {"q": "Capital of France?", "a": "Rome", "b": "Paris", "c": "Berlin", "d": "Madrid", "gold": "b"}
    (question,), _ = generic.questions_from_rows(
        [{**csv_like, "gold": "B"}], question_column="q", choices_column=["a", "b", "c", "d"], answer_column="gold"
    )
    assert question.stem == "Capital of France?" and question.options == ("Rome", "Paris", "Berlin", "Madrid")
    assert question.answer == 1


def test_generic_drops_extra_wrong_choices():
    row = {"id": "x", "question": "Q?", "choices": ["a", "b", "c", "d", "e", "f"], "answer": "e"}
    (question,), _ = generic.questions_from_rows([row], seed=1)
    assert len(question.options) == 4 and question.options[question.answer] == "e"


# ---- proxies -------------------------------------------------------------------------------------


def sample_questions(n=6, split="test"):
    rows = [{"text": f"{split.title()} review number {i}.", "label": i % 5} for i in range(n)]
    return sentiment.questions_from_rows(rows, split=split).questions


def test_three_proxies_have_distinct_correct_letters_and_right_text():
    demo = sample_questions(1, "train")[0]
    for question in sample_questions():
        proxies = make_proxies(question, demo, sentiment.SPEC, seed=0)
        assert [p.proxy for p in proxies] == [0, 1, 2]
        assert len({p.correct_letter for p in proxies}) == 3
        for p in proxies:
            assert p.options[p.correct] == question.options[question.answer]
            assert sorted(p.options) == sorted(question.options)
            assert p.example_id == question.example_id and p.task == "sentiment"


def test_proxies_are_deterministic_per_seed():
    demo = sample_questions(1, "train")[0]
    questions = sample_questions()
    first = [make_proxies(q, demo, sentiment.SPEC, seed=5) for q in questions]
    again = [make_proxies(q, demo, sentiment.SPEC, seed=5) for q in questions]
    other = [make_proxies(q, demo, sentiment.SPEC, seed=6) for q in questions]
    assert first == again
    assert [[p.options for p in ps] for ps in first] != [[p.options for p in ps] for ps in other]


def test_prompt_layout_role_rules_demo_question_and_answer_cue():
    demo = sample_questions(1, "train")[0]  # label 0 -> negative
    question = sample_questions(2)[1]
    for fmt in ("letters", "words"):
        proxy = make_proxies(question, demo, sentiment.SPEC, seed=0, answer_format=fmt)[0]
        prompt = proxy.prompt
        assert prompt.endswith("\nAnswer:") and not prompt.endswith(" ")
        assert prompt.startswith(f"{sentiment.SPEC.role} {sentiment.SPEC.instruction}\n{rules_text(fmt)}\n\n")
        assert prompt.count("Answer:") == 2 and demo.stem in prompt and question.stem in prompt
        assert prompt.index(demo.stem) < prompt.index(question.stem)
        block = prompt[prompt.index(question.stem) :]
        assert [line[:3] for line in block.splitlines()[2:6]] == ["A. ", "B. ", "C. ", "D. "]
        demo_answer = prompt[: prompt.index(question.stem)].split("Answer: ")[1].splitlines()[0]
        assert demo_answer in ({"A", "B", "C", "D"} if fmt == "letters" else {"negative"})
        assert prompt.startswith(prompt_prefix(demo, sentiment.SPEC, seed=0, answer_format=fmt))


def test_all_proxies_of_a_task_share_one_prefix_and_demo_is_never_scored():
    questions = sample_questions(6)
    pool = sample_questions(4, "train")
    proxies = build_task_proxies(questions, pool, sentiment.SPEC, seed=2)
    assert len(proxies) == 18
    demo = pick_demonstration(pool, 2)
    prefix = prompt_prefix(demo, sentiment.SPEC, seed=2)
    assert all(p.prompt.startswith(prefix) for p in proxies)
    scored_stems = {q.stem for q in questions}
    assert demo.stem not in scored_stems
    with pytest.raises(TaskDataError, match="test-0"):
        build_task_proxies(questions, pool + questions[:1], sentiment.SPEC, seed=2)
    with pytest.raises(TaskDataError, match="own demonstration"):
        make_proxies(questions[0], questions[0], sentiment.SPEC, seed=0)
    with pytest.raises(TaskDataError, match="empty"):
        build_task_proxies(questions, [], sentiment.SPEC, seed=2)


def test_word_answers_refused_for_chunking_and_unknown_format():
    (question,), _ = chunking.questions_from_rows([{"tokens": ["The", "cat", "sat"], "chunk_tags": [11, 12, 21]}])
    demo = Question("train-0", question.stem, question.options, 0, "chunking")
    with pytest.raises(TaskDataError, match="'words'"):
        make_proxies(question, demo, chunking.SPEC, seed=0, answer_format="words")
    with pytest.raises(TaskDataError, match="'tokens'"):
        make_proxies(question, demo, chunking.SPEC, seed=0, answer_format="tokens")


# ---- registry and loading ------------------------------------------------------------------------


def test_registry_names_aliases_and_unknown_task():
    assert task_names() == ["ner", "chunking", "sentiment", "commonsense", "generic"]
    assert get_task("few-nerd") is get_task("ner") and TASKS["sst3"] is get_task("sentiment")
    assert get_task("commonsense_qa").scored_split == "validation"
    with pytest.raises(TaskDataError, match=r"unknown task 'pos'.*ner, chunking, sentiment, commonsense, generic"):
        get_task("pos")
    assert task_spec("generic", role="You are a quiz master.").role == "You are a quiz master."


@pytest.mark.parametrize("name", ["ner", "chunking", "sentiment", "commonsense", "generic"])
def test_packaged_fixtures_give_disjoint_demo_pool_and_scored_questions(name, hf_cache):
    demo_pool, questions = task_questions(name, seed=0, cache_dir=hf_cache)
    adapter = get_task(name)
    assert 3 <= len(demo_pool) and len(questions) >= 6
    assert all(q.example_id.startswith(adapter.demo_split + "-") for q in demo_pool)
    assert all(q.example_id.startswith(adapter.scored_split + "-") for q in questions)
    assert not {q.stem for q in demo_pool} & {q.stem for q in questions}
    proxies = build_task_proxies(questions, demo_pool, adapter.spec, seed=0)
    assert len(proxies) == 3 * len(questions)


def test_fixture_rows_are_well_formed(hf_cache):
    sentiment_rows, _, _ = loading.load_rows("sentiment", split="test", cache_dir=hf_cache)
    classes = [sentiment.SST5_TO_SST3[r["label"]] for r in sentiment_rows]
    assert all(classes.count(c) >= 10 for c in ("positive", "negative", "neutral"))
    chunk_rows, _, _ = loading.load_rows("chunking", split="test", cache_dir=hf_cache)
    assert 30 <= len(chunk_rows) <= 60 and all(len(r["tokens"]) <= 12 for r in chunk_rows)
    assert len(load_task("chunking", split="test", seed=0, cache_dir=hf_cache)) == len(chunk_rows)  # none skipped
    ner_rows, _, _ = loading.load_rows("ner", split="test", cache_dir=hf_cache)
    for row in ner_rows:  # fine tags agree with coarse tags (fine names start with the coarse name)
        assert len(row["tokens"]) == len(row["ner_tags"]) == len(row["fine_ner_tags"])
        assert all((c == 0) == (f == 0) for c, f in zip(row["ner_tags"], row["fine_ner_tags"]))


def test_local_jsonl_with_split_column_and_file_without_one(tmp_path, hf_cache):
    rows = [{"split": "train" if i < 2 else "test", "text": f"Film {i}.", "label": i % 5} for i in range(8)]
    marked = write_jsonl(tmp_path / "sst.jsonl", rows)
    demo_pool, questions = task_questions("sentiment", marked, seed=0, cache_dir=hf_cache)
    assert [q.example_id for q in demo_pool] == ["train-0", "train-1"] and len(questions) == 6
    unmarked = write_jsonl(tmp_path / "plain.jsonl", [{k: v for k, v in r.items() if k != "split"} for r in rows])
    demo_pool, questions = task_questions("sentiment", unmarked, seed=0, demo_pool_size=3, cache_dir=hf_cache)
    assert len(demo_pool) == 3 and len(questions) == 5
    assert not {q.stem for q in demo_pool} & {q.stem for q in questions}


def test_one_file_per_split_and_csv_with_choice_columns(tmp_path, hf_cache):
    header = "question,a,b,c,d,answer\n"
    (tmp_path / "train.csv").write_text(header + "Sky colour?,red,blue,green,black,1\n")
    (tmp_path / "test.csv").write_text(header + "Snow colour?,white,blue,green,black,0\nGrass colour?,red,blue,green,black,2\n")
    files = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    demo_pool, questions = task_questions("generic", files, seed=0, choices_column=["a", "b", "c", "d"], cache_dir=hf_cache)
    assert [q.options[q.answer] for q in demo_pool] == ["blue"]
    assert [q.options[q.answer] for q in questions] == ["white", "green"]


def test_hub_ids_go_to_load_dataset_with_their_config(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs["split"]))
        return [{"id": "0", "tokens": ["Paris"], "ner_tags": [4], "text": "Fine.", "label": 3}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert len(load_task("ner", "DFKI-SLT/few-nerd", split="test", seed=0)) == 1
    assert len(load_task("sentiment", "SetFit/sst5", split="test", seed=0)) == 1
    assert calls == [("DFKI-SLT/few-nerd", "supervised", "test"), ("SetFit/sst5", None, "test")]


# ---- errors name the file, field or value --------------------------------------------------------


def test_error_missing_column_names_file_and_field(tmp_path, hf_cache):
    path = write_jsonl(tmp_path / "nolabel.jsonl", [{"split": "test", "text": "Good."}])
    with pytest.raises(TaskDataError, match=r"nolabel\.jsonl row 0.*missing field 'label'"):
        load_task("sentiment", path, split="test", seed=0, cache_dir=hf_cache)


def test_error_generic_fewer_than_four_choices_names_row_and_field():
    row = {"id": "short", "question": "Q?", "choices": ["a", "b", "c"], "answer": 0}
    with pytest.raises(TaskDataError, match=r"row 0 \(id 'short'\).*'choices'.*3 choices"):
        generic.questions_from_rows([row])


@pytest.mark.parametrize(
    "adapter, row, pattern",
    [
        (generic, {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": "z"}, r"field 'answer' is 'z'.*not among"),
        (generic, {"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 7}, r"field 'answer' is 7"),
        (commonsense, csqa_row(["a", "b", "c", "d", "e"], "F"), r"answerKey 'F' is not among the choice labels"),
        (sentiment, {"text": "Hm.", "label": 9}, r"field 'label' is 9; expected an SST-5 label 0..4"),
        (ner, {"tokens": ["x"], "ner_tags": [12]}, r"field 'ner_tags' has 12"),
        (chunking, {"tokens": ["x"], "chunk_tags": [40]}, r"field 'chunk_tags' has 40"),
    ],
)
def test_error_bad_answer_or_label_names_the_value(adapter, row, pattern):
    with pytest.raises(TaskDataError, match=pattern):
        adapter.questions_from_rows([row])


def test_error_nonexistent_unreadable_or_unsupported_file(tmp_path, hf_cache):
    with pytest.raises(TaskDataError, match=r"missing\.jsonl: file not found"):
        load_task("sentiment", tmp_path / "missing.jsonl", split="test", seed=0, cache_dir=hf_cache)
    bad = tmp_path / "broken.jsonl"
    bad.write_text('{"text": "ok", "label": 1}\n{not json\n')
    with pytest.raises(TaskDataError, match=r"broken\.jsonl: could not read it as json"):
        load_task("sentiment", bad, split="test", seed=0, cache_dir=hf_cache)
    odd = tmp_path / "rows.parquet"
    odd.write_bytes(b"")
    with pytest.raises(TaskDataError, match=r"rows\.parquet: unsupported file type"):
        load_task("sentiment", odd, split="test", seed=0, cache_dir=hf_cache)
    with pytest.raises(TaskDataError, match=r"no rows with split == 'validation'; splits present: test, train"):
        load_task("sentiment", split="validation", seed=0, cache_dir=hf_cache)
    with pytest.raises(TaskDataError, match=r"nonsense: not an existing file or folder"):
        load_task("sentiment", "nonsense", split="test", seed=0)


def test_a_hub_dataset_revision_is_passed_to_the_hub_and_recorded(monkeypatch):
    # No hub here: datasets.load_dataset is replaced by the packaged rows of the asked split, and the
    # revision it was called with is recorded.
    import json
    from pathlib import Path

    import datasets

    import nsneurons
    from nsneurons.tasks import task_questions

    rows = [
        json.loads(line)
        for line in (Path(nsneurons.__file__).parent / "tasks" / "data" / "sentiment.jsonl").read_text().splitlines()
    ]
    calls = []

    def fake_load_dataset(source, config=None, *, split, cache_dir=None, revision=None, **kw):
        calls.append((source, split, revision))
        return [r for r in rows if r["split"] == split]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    demos, questions = task_questions("sentiment", "someone/sst", 0, revision="abc123")
    assert questions and demos
    assert {c[2] for c in calls} == {"abc123"} and {c[0] for c in calls} == {"someone/sst"}
    from nsneurons.recipe import RecipeError, recipe_from_dict

    recipe = recipe_from_dict(
        {"name": "x", "model": "m", "tasks": [{"name": "sentiment", "source": "someone/sst", "revision": "abc123"}]}
    )
    assert recipe.tasks[0].revision == "abc123"
    with pytest.raises(RecipeError, match=r"tasks\[0\].revision"):
        recipe_from_dict({"name": "x", "model": "m", "tasks": [{"name": "sentiment", "revision": ""}]})


def test_domain_qa_is_a_registered_adapter_read_like_every_task():
    from nsneurons.tasks import domain_qa

    assert get_task("domain_qa") is domain_qa.ADAPTER and task_names("naica") == ["domain_qa"]
    # The shared loader and the NA-ICA loader give the same questions, in file order.
    by_domain = domain_qa.load_domain_qa(seed=0)
    assert [q.example_id for q in load_task("domain_qa", split="test", seed=0)] == [
        q.example_id for qs in by_domain.values() for q in qs
    ]
    # Its proxies come from the shared renderer with its own option orders (salted) and templates.
    question = by_domain["maths"][0]
    proxies = domain_qa.make_domain_proxies(question, seed=0, answer_format="words")
    assert [[p.options.index(o) for o in question.options] for p in proxies] == [
        [order.index(i) for i in range(4)] for order in domain_qa.proxy_orders(question, seed=0)
    ]
    assert all(p.answer_format == "words" for p in proxies)
    assert "answer with the text of the single correct option" in proxies[0].prompt


def test_proxies_carry_their_answer_format():
    demo_pool, questions = task_questions("sentiment", seed=0)
    for fmt in ("letters", "words"):
        proxies = build_task_proxies(questions[:2], demo_pool, task_spec("sentiment"), 0, fmt)
        assert {p.answer_format for p in proxies} == {fmt} and len(proxies) == 6
