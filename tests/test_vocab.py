"""One vocabulary: each Literal of nsneurons.vocab names exactly what its registry holds."""

from typing import get_args, get_type_hints

from nsneurons import cells, intervention, metrics, models, recipe, selection, targets, vocab
from nsneurons.vocab import ConditionKey, condition_name, parse_condition_name


def test_literals_match_their_registries():
    assert get_args(vocab.MethodName) == tuple(selection.METHODS) == selection.method_names()
    assert get_args(vocab.TargetName) == tuple(targets.TARGETS) == targets.target_names()
    # Every method's needs is a target, "activation" or None.
    assert {m.needs for m in selection.METHODS.values()} - {"activation", None} <= set(targets.TARGETS)
    assert selection.BASELINE_METHODS == ("tn", "qrnca", "kn", "act", "random")
    assert metrics.DIRECTIONS == ("degrade", "enhance") and selection.ROLES == ("good", "bad")
    assert cells.BEST_BY == ("mean", "rac", "rcc", "per_metric")


def test_recipe_and_library_share_the_choice_types():
    hints = {cls: get_type_hints(cls) for cls in (recipe.Recipe, recipe.Attribution, recipe.Evaluation, recipe.Selection)}
    assert hints[recipe.Recipe]["device"] is models.Device is vocab.Device
    assert hints[recipe.Recipe]["dtype"] is models.DType
    assert hints[recipe.Attribution]["quadrature"] is vocab.Quadrature
    assert hints[recipe.Attribution]["path"] is vocab.IGPath
    assert hints[recipe.Evaluation]["position"] is intervention.Position
    assert hints[recipe.Evaluation]["best_by"] is cells.BestBy
    assert get_args(hints[recipe.Selection]["methods"]) == (selection.MethodName, ...)


def test_condition_names_round_trip():
    keys = [
        ConditionKey("sweep", "neuronllm", "degrade", 0.5),
        ConditionKey("sweep", "random", "enhance", 1.0, 2),
        ConditionKey("ablation", "tn", "degrade", "good"),
        ConditionKey("sweep", "kn", "enhance", 0.0),
    ]
    names = [condition_name(k) for k in keys]
    assert names == ["neuronllm/degrade/0.5", "random#2/enhance/1", "tn/degrade/good", "kn/enhance/0"]
    assert [parse_condition_name(n) for n in names] == keys
    # intervention.degrader / enhancer's own names, and names of other shapes
    assert parse_condition_name("tn/degrader") == ConditionKey("sweep", "tn", "degrade", 1.0)
    assert [parse_condition_name(n) for n in ("none", "table8/tn/a/b/enhance", "x/sideways/1", "x/degrade/half")] == [None] * 4


def test_prompt_formats_are_one_vocabulary():
    from nsneurons.tasks.base import Proxy
    from nsneurons.tasks.formats import TEMPLATE_VERSIONS

    assert vocab.PROMPT_FORMATS == ("qatt", "chat", "cloze") == tuple(TEMPLATE_VERSIONS)
    assert get_type_hints(recipe.Recipe)["prompt_format"] is vocab.PromptFormat
    assert get_type_hints(Proxy)["prompt_format"] is vocab.PromptFormat
