"""Prompt formats (qatt, chat, cloze): rendering worked by hand, refusals, and the plumbing (recipe, CLI, provenance)."""

import pytest
from fixtures_models import gpt2_style_tokenizer, llama_style_tokenizer

from nsneurons import cli
from nsneurons.tasks import build_task_proxies, proxy_orders, task_questions, task_spec
from nsneurons.tasks.base import Question, TaskDataError, TaskSpec
from nsneurons.tasks.formats import CLOZE_RULES, DEFAULT_SHOTS, adds_bos, as_chat, chat_prompt, cloze_demonstrations

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

OPTS = ("positive", "negative", "neutral", "not sure")
SPEC = TaskSpec(
    name="toy", role="You are a critic.", instruction="Say how the review feels.", stem_label="Review", labels=OPTS[:3]
)


def _q(i, text, label, split="train"):
    return Question(f"{split}-{i}", text, OPTS, OPTS.index(label), "toy")


POOL = [
    _q(1, "Loved it.", "positive"),
    _q(2, "Hated it.", "negative"),
    _q(3, "It exists.", "neutral"),
    _q(4, "Great fun.", "positive"),
    _q(5, "Meh.", "neutral"),
]
QUESTION = _q(1, "Wonderful.", "positive", "test")


def _chat_tokenizer(template=CHATML):
    tok = llama_style_tokenizer()  # a fresh one: the template is set on it (never on a shared fixture)
    tok.chat_template = template
    return tok


# ---- chat ------------------------------------------------------------------------------------


def test_chat_puts_the_prompt_without_its_cue_in_the_user_turn_and_opens_the_assistant_turn_with_it():
    tok = _chat_tokenizer()
    prompt = "You are an expert.\n\nQuestion: x?\nOptions:\nA. y\nAnswer:"
    assert chat_prompt(prompt, tok) == (
        "<|im_start|>user\nYou are an expert.\n\nQuestion: x?\nOptions:\nA. y<|im_end|>\n<|im_start|>assistant\nAnswer:"
    )
    # A task's proxies: the same options and answers, each QATT prompt wrapped the same way.
    demos, questions = task_questions("sentiment", seed=0)
    plain = build_task_proxies(questions[:1], demos, task_spec("sentiment"), 0, "words")
    chat = build_task_proxies(questions[:1], demos, task_spec("sentiment"), 0, "words", prompt_format="chat", tokenizer=tok)
    for p, c in zip(plain, chat, strict=True):
        assert p.prompt.endswith("\nAnswer:") and p.prompt_format == "qatt" and c.prompt_format == "chat"
        question = p.prompt.removesuffix("\nAnswer:")
        assert c.prompt == f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\nAnswer:"
        assert (c.options, c.correct, c.answer_format) == (p.options, p.correct, p.answer_format)
    assert as_chat(chat, tok) == chat  # already wrapped: kept


def test_chat_drops_a_textual_bos_only_where_tokenizing_adds_one():
    from tokenizers.processors import TemplateProcessing

    template = "{{ bos_token }}" + CHATML
    tok = _chat_tokenizer(template)
    assert not adds_bos(tok)
    assert chat_prompt("Q?\nAnswer:", tok) == "<s><|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nAnswer:"
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.bos_token_id)])
    assert adds_bos(tok) and tok("Q")["input_ids"][0] == tok.bos_token_id
    text = chat_prompt("Q?\nAnswer:", tok)
    assert text == "<|im_start|>user\nQ?<|im_end|>\n<|im_start|>assistant\nAnswer:"
    assert tok(text)["input_ids"].count(tok.bos_token_id) == 1


def test_chat_without_a_template_or_a_tokenizer_is_refused():
    demos, questions = task_questions("sentiment", seed=0)
    args = (questions[:1], demos, task_spec("sentiment"), 0, "words")
    with pytest.raises(TaskDataError, match=r"has no chat template; use prompt_format 'qatt' or 'cloze'"):
        build_task_proxies(*args, prompt_format="chat", tokenizer=gpt2_style_tokenizer())
    with pytest.raises(TaskDataError, match=r"the tokenizer of 'my/model' has no chat template"):
        tok = llama_style_tokenizer()
        tok.name_or_path = "my/model"
        chat_prompt("Q?\nAnswer:", tok)
    with pytest.raises(TaskDataError, match="pass its tokenizer"):
        build_task_proxies(*args, prompt_format="chat")


# ---- cloze -----------------------------------------------------------------------------------


def test_cloze_one_demonstration_per_label_in_a_seeded_order_per_proxy():
    # One per label, in label order: positive from train-1 / train-4 and neutral from train-3 / train-5, by the seed.
    assert [d.example_id for d in cloze_demonstrations(POOL, SPEC, 0)] == ["train-1", "train-2", "train-5"]
    proxies = build_task_proxies([QUESTION], POOL, SPEC, 0, "words", prompt_format="cloze")
    assert proxies[0].prompt == (
        "You are a critic. Say how the review feels.\n"
        "Each question below is followed by its answer; answer the last question in the same way.\n\n"
        "Review: Meh.\nAnswer: neutral\n\n"
        "Review: Loved it.\nAnswer: positive\n\n"
        "Review: Hated it.\nAnswer: negative\n\n"
        "Review: Wonderful.\nAnswer:"
    )
    # Three distinct proxies: instruction i and their own order of the same three demonstrations; no options listed.
    assert len({p.prompt for p in proxies}) == 3 and all("Options:" not in p.prompt for p in proxies)
    assert [p.prompt.split("\n")[1] for p in proxies] == list(CLOZE_RULES)
    shown = [[line for line in p.prompt.split("\n") if line.startswith("Review: ")][:3] for p in proxies]
    assert len({tuple(s) for s in shown}) == 3 and all(sorted(s) == sorted(shown[0]) for s in shown)
    # Four option texts as the QATT proxies order them, `correct` on the right one; scored as words.
    for p, order in zip(proxies, proxy_orders(QUESTION, 0), strict=True):
        assert p.options == tuple(OPTS[i] for i in order) and p.options[p.correct] == "positive"
        assert (p.answer_format, p.prompt_format) == ("words", "cloze")


def test_cloze_is_deterministic_for_a_seed_and_changes_with_another():
    first = build_task_proxies([QUESTION], POOL, SPEC, 0, "words", prompt_format="cloze")
    assert build_task_proxies([QUESTION], list(reversed(POOL)), SPEC, 0, "words", prompt_format="cloze") == first
    other = build_task_proxies([QUESTION], POOL, SPEC, 1, "words", prompt_format="cloze")
    assert [p.prompt for p in other] != [p.prompt for p in first]
    assert [d.example_id for d in cloze_demonstrations(POOL, SPEC, 1)] == ["train-1", "train-2", "train-3"]


def test_cloze_shots_per_label_or_in_all_without_labels():
    assert len(cloze_demonstrations(POOL, SPEC, 0, shots=2)) == 2 + 1 + 2  # negative has one example only
    demos, questions = task_questions("commonsense", seed=0)
    spec = task_spec("commonsense")
    assert spec.labels == () and len(cloze_demonstrations(demos, spec, 0)) == DEFAULT_SHOTS == 4
    proxies = build_task_proxies(questions[:1], demos, spec, 0, "words", prompt_format="cloze", shots=2)
    assert proxies[0].prompt.count("\nAnswer: ") == 2 and proxies[0].prompt.endswith("\nAnswer:")
    q = questions[0]
    assert (
        proxies[0].prompt.endswith(f"Question: {q.stem}\nAnswer:")
        and proxies[0].options[proxies[0].correct] == q.options[q.answer]
    )
    # The packaged sentiment and NER tasks: one demonstration per class.
    for name, n in (("sentiment", 3), ("ner", 8)):
        demos, _ = task_questions(name, seed=0)
        assert len(cloze_demonstrations(demos, task_spec(name), 0)) == n


def test_cloze_refusals_letters_long_options_and_domain_qa():
    with pytest.raises(TaskDataError, match="no letters to answer with .*use answer_format 'words'"):
        build_task_proxies([QUESTION], POOL, SPEC, 0, "letters", prompt_format="cloze")
    with pytest.raises(TaskDataError, match="task 'chunking': prompt_format 'cloze' scores each option's text"):
        build_task_proxies([QUESTION], POOL, task_spec("chunking"), 0, "words", prompt_format="cloze")
    with pytest.raises(TaskDataError, match="prompt_format 'xml': expected one of qatt, chat, cloze"):
        build_task_proxies([QUESTION], POOL, SPEC, 0, "words", prompt_format="xml")
    from nsneurons.tasks import domain_qa

    question = domain_qa.load_domain_qa(seed=0)["maths"][0]
    with pytest.raises(TaskDataError, match="'cloze' does not apply to NA-ICA's domain QA"):
        domain_qa.make_domain_proxies(question, answer_format="words", prompt_format="cloze")
    plain = domain_qa.make_domain_proxies(question)
    chat = domain_qa.make_domain_proxies(question, prompt_format="chat", tokenizer=_chat_tokenizer())
    assert [c.prompt for c in chat] == [as_chat([p], _chat_tokenizer())[0].prompt for p in plain]
    assert chat[1].prompt.startswith("<|im_start|>user\nBelow is a multiple-choice question.")


# ---- plumbing --------------------------------------------------------------------------------


def test_recipe_key_is_validated_and_only_a_non_default_format_changes_the_fingerprint():
    from nsneurons.recipe import RecipeError, recipe_from_dict
    from nsneurons.runfolder import fingerprint

    base = {"name": "x", "model": "m", "tasks": ["sentiment"], "answer_format": "words"}
    with pytest.raises(RecipeError, match=r"^prompt_format: expected one of 'qatt', 'chat', 'cloze', got 'xml'$"):
        recipe_from_dict({**base, "prompt_format": "xml"})
    with pytest.raises(RecipeError, match=r"^prompt_format: 'cloze' .* needs answer_format: words, got 'letters'$"):
        recipe_from_dict({**base, "prompt_format": "cloze", "answer_format": "letters"})
    with pytest.raises(RecipeError, match=r"^prompt_format: 'cloze' does not apply to experiment naica"):
        recipe_from_dict({"name": "x", "model": "m", "experiment": "naica", "answer_format": "words", "prompt_format": "cloze"})
    prov = {"model": "m"}
    default, qatt = recipe_from_dict(base), recipe_from_dict({**base, "prompt_format": "qatt"})
    assert default.prompt_format == "qatt" and fingerprint(default, prov) == fingerprint(qatt, prov)
    cloze, chat = recipe_from_dict({**base, "prompt_format": "cloze"}), recipe_from_dict({**base, "prompt_format": "chat"})
    assert len({fingerprint(r, prov) for r in (default, cloze, chat)}) == 3


def test_recipe_proxies_chat_needs_the_tokenizer_and_cloze_renders_without_one():
    from nsneurons.recipe import recipe_from_dict
    from nsneurons.splits import task_proxies, unwrapped

    recipe = recipe_from_dict(
        {"name": "x", "model": "m", "tasks": ["sentiment"], "answer_format": "words", "prompt_format": "chat"}
    )
    with pytest.raises(TaskDataError, match="pass its tokenizer"):
        task_proxies(recipe, recipe.tasks[0])
    tok = _chat_tokenizer()
    ident, _ = task_proxies(recipe, recipe.tasks[0], tok)
    plain, _ = task_proxies(unwrapped(recipe), recipe.tasks[0])
    assert {p.prompt_format for p in plain} == {"qatt"} and as_chat(plain, tok) == ident
    cloze = recipe_from_dict(
        {"name": "x", "model": "m", "tasks": ["sentiment"], "answer_format": "words", "prompt_format": "cloze"}
    )
    assert {p.prompt_format for p in task_proxies(cloze, cloze.tasks[0])[0]} == {"cloze"}


def test_scores_provenance_records_the_format_and_its_template_version():
    from types import SimpleNamespace

    from nsneurons.attribution import AttributionConfig
    from nsneurons.scoring import prompt_formats, score_provenance

    model = SimpleNamespace(provenance={"model": "m"})
    qatt = score_provenance(model, AttributionConfig(), answer_format="letters")
    assert (qatt["prompt_format"], qatt["prompt_template"]) == ("qatt", "qatt-v1")
    cloze = score_provenance(model, AttributionConfig(), answer_format="words", prompt_format="cloze")
    assert (cloze["prompt_format"], cloze["prompt_template"]) == ("cloze", "cloze-v1")
    proxies = build_task_proxies([QUESTION], POOL, SPEC, 0, "words", prompt_format="cloze")
    assert prompt_formats(proxies) == "cloze"
    with pytest.raises(ValueError, match="must share a prompt format, got cloze, qatt"):
        prompt_formats(proxies + build_task_proxies([QUESTION], POOL, SPEC, 0, "words"))


def test_api_proxies_take_the_prompt_format():
    import nsneurons as ns

    cloze = ns.proxies("sentiment", n=1, answer_format="words", prompt_format="cloze")
    assert len(cloze) == 3 and {p.prompt_format for p in cloze} == {"cloze"}
    chat = ns.proxies("sentiment", n=1, answer_format="words", prompt_format="chat", tokenizer=_chat_tokenizer())
    assert chat[0].prompt.startswith("<|im_start|>user\nYou are an expert in sentiment analysis")


def test_cli_qatt_prints_cloze_prompts_and_refuses_chat_without_a_model(capsys):
    assert cli.main(["qatt", "--task", "sentiment", "--n", "1", "--prompt-format", "cloze", "--answer-format", "words"]) == 0
    out = capsys.readouterr().out
    assert out.count("=== example ") == 3 and "Options:" not in out
    assert all(f"\nAnswer: {label}\n" in out for label in ("positive", "negative", "neutral"))
    assert all(rule in out for rule in CLOZE_RULES)
    assert cli.main(["qatt", "--task", "sentiment", "--n", "1", "--prompt-format", "cloze"]) != 0
    assert "use answer_format 'words'" in capsys.readouterr().err
    assert cli.main(["qatt", "--task", "sentiment", "--n", "1", "--prompt-format", "chat"]) != 0
    assert "give --model" in capsys.readouterr().err


@pytest.mark.slow  # loads a tiny model three times (~3 s each on 2 busy cores)
def test_cli_chat_uses_the_models_own_template_and_refuses_a_model_without_one(tmp_path, capsys):
    import json

    from fixtures_models import save_tiny_llama

    model = str(save_tiny_llama(tmp_path / "m"))
    args = ["--model", model, "--device", "cpu", "--task", "sentiment", "--n", "1", "--prompt-format", "chat"]
    assert cli.main(["eval", *args, "--json"]) != 0
    assert f"the tokenizer of {model!r} has no chat template; use prompt_format 'qatt' or 'cloze'" in capsys.readouterr().err
    (tmp_path / "m" / "chat_template.jinja").write_text(CHATML)  # the template file transformers reads beside the tokenizer
    assert cli.main(["qatt", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("=== example ") == 3 and out.count("<|im_start|>user\nYou are an expert") == 3
    # The options end the user turn (the fourth of proxy 0 is "positive", as the QATT proxies order them).
    assert out.count("<|im_end|>\n<|im_start|>assistant\nAnswer:\n") == 3 and "D. positive<|im_end|>" in out
    assert cli.main(["eval", *args, "--json", "--answer-format", "words"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["prompt_format"], result["answer_format"], result["proxies"]) == ("chat", "words", 3)
