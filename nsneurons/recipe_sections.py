"""Recipe sections that are the settings of one experiment or command: NA-ICA (`naica`) and the
cross-task analyses of `nsneurons crosstask` with Table 8's budgets (`crosstask`). nsneurons.recipe
re-exports them and builds and validates them with the rest of the recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from .recipe_checks import BUDGET
from .vocab import MethodName


@dataclass(frozen=True)
class Naica:
    """NA-ICA / QRNCA (seed 002): key neurons per query on multi-choice domain QA."""

    source: str | None = None  # None: the packaged domain QA fixture; or a local file or hub dataset id
    config: str | None = None  # hub dataset config
    domains: tuple[str, ...] | None = None  # domains to use (None: all in the data)
    max_per_domain: int | None = None  # seeded sample of questions per domain (None: all)
    t: float = 0.2  # keep neurons whose attribution exceeds t x the prompt's maximum
    v: int = 20  # key neurons per query
    u: float = 0.3  # common neurons: in more than floor(N x u) queries
    steps: int = 20  # IG steps (QRNCA's default); the IG path is attribution.path
    held_out_fraction: float = 0.3  # queries held out for neuron-based domain prediction
    remove_common: bool = True  # drop common neurons from the key neurons


@dataclass(frozen=True)
class Table8Budget:
    """One source task's Table 8 budget, counted for a model of `table8.reference_neurons` FFN neurons."""

    task: str  # a task name of the recipe whose task-specific neurons are enhanced
    good: int  # task-specific good neurons (the paper, LLaMA 2-7B: commonsense 100, sentiment 720)
    bad: int  # task-specific bad neurons (the paper: commonsense 400, sentiment 480)


@dataclass(frozen=True)
class Table8:
    """Table 8 (appendix C.5): each source task's task-specific neurons enhanced, evaluated on every source task."""

    # None: the paper's budgets (sentiment 720 + 480, commonsense 100 + 400), used when the recipe has both
    # tasks (else Table 8 is skipped); or a list of {task, good, bad}, at least two recipe tasks.
    budgets: tuple[Table8Budget, ...] | None = None
    reference_neurons: int = 352_256  # FFN neurons the budgets are counted for (LLaMA 2-7B: 32 layers x 11008)
    # Scale each count to the model: round(count x model's FFN neurons / reference_neurons), halves up,
    # at least 1 (0 stays 0); false: the counts as given.
    scale: bool = True


@dataclass(frozen=True)
class CrossTask:
    """Settings of `nsneurons crosstask` (appendix C analyses), run after `nsneurons run`."""

    methods: tuple[MethodName, ...] | None = None  # common/specific/matrix/layers (None: neuronllm if run, else the first)
    budget_methods: tuple[MethodName, ...] | None = None  # Table 7 (None: neuronllm, tn, qrnca among those run)
    # Table 7 budgets (counts, or shares of the model's FFN neurons such as "0.1%"), clamped to the model
    k_values: tuple[Annotated[int | str, BUDGET], ...] = (10, 25, 50, 100, 150, 200, 250, 500)
    ratio: float = 0.5  # good:bad ratio of the cross-task matrix
    table8: Table8 = Table8()  # Table 8's per-task budgets of task-specific neurons
