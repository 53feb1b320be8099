"""The recipe's reference is generated from recipe.py's own field comments; every field has one."""

import dataclasses
import inspect

from nsneurons import recipe, recipe_sections
from nsneurons.recipe_docs import field_comments, recipe_markdown


def test_every_recipe_field_has_a_comment():
    classes = [
        c
        for _, c in inspect.getmembers(recipe, dataclasses.is_dataclass)
        if c.__module__ in (recipe.__name__, recipe_sections.__name__)
    ]
    assert {c.__name__ for c in classes} >= {
        "Recipe",
        "TaskSource",
        "Attribution",
        "Selection",
        "Evaluation",
        "Naica",
        "CrossTask",
        "Table8",
        "Table8Budget",
    }
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c) if not field_comments(c).get(f.name)]
    assert missing == []


def test_comments_on_the_line_or_right_above():
    comments = field_comments(recipe.Attribution)
    assert comments["steps"] == "m in Eq. 1"
    assert comments["path"].startswith('"staircase": shared prefix') and comments["path"].endswith("(the reference).")


def test_reference_lists_every_key_with_type_default_and_comment():
    text = recipe_markdown()
    assert (
        "| `selection.k` | an int (a count) or a share with a percent sign, e.g. '0.028%' | `100` | K: neurons per role "
        '(good, bad) and the intervention budget; a count, or a share of the model\'s FFN neurons ("0.028%") |'
    ) in text
    assert "| `device` | one of 'cpu', 'cuda', 'auto' | `\"auto\"` | where a local model runs |" in text
    assert "| `name` | a string | required |" in text and "| `tasks[].name` | a string | required |" in text
    assert "## crosstask.table8.budgets[]\nOne source task's Table 8 budget" in text
    # One row per field of every section: 23 (prompt_format, device_map, max_memory) + 8 + 10 + 6 (attribution,
    # with gap_threshold) + 5 + 5 + 12 + 3 + 3, and selection.k_sweep and selection.distractor_check.
    assert text.count("\n| `") == 77
