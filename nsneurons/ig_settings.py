"""The IG settings shared by a recipe's `attribution:` section and the library's `AttributionConfig`.

Both subclass `IGSettings`, so each of these fields is declared, typed, defaulted and documented
once (the recipe reference and `--help` read the comments here). Imports nothing heavy: recipes
load before torch does.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .vocab import IGPath, Quadrature


@dataclass(frozen=True)
class IGSettings:
    steps: int = 16  # m in Eq. 1
    quadrature: Quadrature = "right"  # alpha_k = k/m (the paper), (k - 1/2)/m, or Gauss-Legendre nodes (docs/ig.md)
    # "staircase": shared prefix, each layer's rows join at that layer (fastest); "prefix": shared
    # prefix, every row from the embedding on; "full": per-layer full prompts (the reference).
    path: IGPath = "staircase"
    layers_per_pass: int | None = None  # None: chosen from the memory available

    def ig_settings(self) -> dict[str, Any]:
        """These fields only, e.g. `AttributionConfig(target="ace", **recipe.attribution.ig_settings())`."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(IGSettings)}
