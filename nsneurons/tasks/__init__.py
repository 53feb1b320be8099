"""QATT: task adapters turn dataset rows into 4-option questions; `make_proxies` renders 3 proxies each.

demo_pool, questions = task_questions("sentiment", seed=0)        # packaged fixture
proxies = build_task_proxies(questions, demo_pool, task_spec("sentiment"), seed=0, answer_format="letters")
"""

from .adapter import Conversion, Skipped, TaskAdapter
from .base import (
    LETTERS,
    N_OPTIONS,
    N_PROXIES,
    PROMPT_TEMPLATE_VERSION,
    AnswerFormat,
    Proxy,
    Question,
    TaskDataError,
    TaskSpec,
)
from .loading import TASKS, get_task, load_rows, load_task, task_names, task_questions, task_spec
from .proxies import build_task_proxies, make_proxies, pick_demonstration, prompt_prefix, proxy_orders

__all__ = [
    "LETTERS",
    "N_OPTIONS",
    "N_PROXIES",
    "PROMPT_TEMPLATE_VERSION",
    "TASKS",
    "AnswerFormat",
    "Conversion",
    "Proxy",
    "Question",
    "Skipped",
    "TaskAdapter",
    "TaskDataError",
    "TaskSpec",
    "build_task_proxies",
    "get_task",
    "load_rows",
    "load_task",
    "make_proxies",
    "pick_demonstration",
    "prompt_prefix",
    "proxy_orders",
    "task_names",
    "task_questions",
    "task_spec",
]
