"""Sparse multiplier tables: what an intervention trace carries instead of [conditions, layers, neurons].

A condition switches a few neurons (K of a model's hundreds of thousands), so a dense table of
multipliers is almost all ones, and on NDIF every trace uploads what it names. Per touched layer l,
the traces get U_l, the sorted union of the neurons any condition switches at l (int64), and a
[conditions, |U_l|] table of multipliers (1 where that condition leaves the neuron alone). Multiplying
only the columns U_l gives the dense numbers exactly: the other columns were multiplied by 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

SILENCE, EXCITE = 0.0, 2.0  # the multipliers of a silenced and an excited neuron


def switch_tables(conditions: Sequence, n_layers: int, n_neurons: int) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{layer: (U_l LongTensor [|U_l|], multipliers [len(conditions), |U_l|] float32)} for every layer a
    condition touches, ascending; a condition's `excite` wins over its `silence` for the same neuron
    (as in Condition.multipliers). A pair outside the model is refused, naming the condition."""
    touched: dict[int, set[int]] = {}
    for c in conditions:
        for layer, neuron in (*c.silence, *c.excite):
            if not (0 <= layer < n_layers and 0 <= neuron < n_neurons):
                raise ValueError(
                    f"condition {c.name!r}: neuron ({layer}, {neuron}) is outside {n_layers} layers x {n_neurons} neurons"
                )
            touched.setdefault(layer, set()).add(neuron)
    out = {}
    for layer in sorted(touched):
        columns = sorted(touched[layer])
        where = {neuron: j for j, neuron in enumerate(columns)}
        table = torch.ones(len(conditions), len(columns))
        for row, c in enumerate(conditions):
            for pairs, value in ((c.silence, SILENCE), (c.excite, EXCITE)):
                for pair_layer, neuron in pairs:
                    if pair_layer == layer:
                        table[row, where[neuron]] = value
        out[layer] = (torch.tensor(columns, dtype=torch.long), table)
    return out


def rows_of(tables: dict[int, tuple[torch.Tensor, torch.Tensor]], rows: torch.Tensor) -> dict:
    """The same tables for batch rows `rows` (each a condition's index): {layer: (U_l, [len(rows), |U_l|])}."""
    return {layer: (columns, table[rows]) for layer, (columns, table) in tables.items()}


def upload_bytes(distinct: int, rows: int) -> int:
    """Bytes a trace carries for `distinct` switched (layer, neuron) pairs over all layers and `rows` rows:
    the int64 columns and the float32 multipliers."""
    return distinct * (8 + 4 * rows)
