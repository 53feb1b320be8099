"""Writing and reading the zarr outputs so that a plain `xr.open_zarr(path)` opens them without a warning.

- Consolidated metadata on every write (xarray's default): `open_zarr` then reads one file and does
  not warn that it fell back to the per-array metadata.
- Strings are written variable-length: fixed-width numpy `<U` arrays have no zarr 3 specification
  (zarr warns they "may be unreadable by other Zarr libraries"). Read back they are numpy
  `StringDType` arrays, which select and compare like `<U` ones.
- `long_name` / `units` on the variables a user plots, so `da.plot()` labels itself (`LABELS`).
- Reads accept stores written before the `method` dim was renamed `selector` (renamed on open).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

# name -> (long_name, units) for the variables and coordinates of the outputs ("1" = a fraction).
LABELS = {
    "ig": ("integrated gradient (Eq. 1)", "target units"),
    "activation": ("MLP activation at the answer position", "activation units"),
    "option_prob": ("probability of the option (softmax over A-D)", "1"),
    "target_value": ("target function F at the answer position", "target units"),
    "completeness_gap": ("sum of a layer's IG minus its ablation effect", "target units"),
    "sweep": ("metric of the intervention at a good:bad ratio", "see the metric coordinate"),
    "ablation": ("metric of the good-only / bad-only intervention", "see the metric coordinate"),
    "sweep_ci": ("directed RAC / RCC with its bootstrap interval", "%"),
    "cell": ("table cell at the chosen ratio", "% (RAC, RCC) or points (acc_change, com_change)"),
    "average": ("table cell averaged over tasks", "% (RAC, RCC) or points (acc_change, com_change)"),
    "group_cell": ("good-only / bad-only / both cell", "% (RAC, RCC) or points (acc_change, com_change)"),
    "chosen_ratio": ("good:bad ratio a cell is reported at", "1"),
    "score": ("ranking score of the selected neuron", "selector's key"),
    "layer": ("layer index", "1"),
    "neuron": ("neuron index within the layer", "1"),
    "ratio": ("good:bad ratio (good neurons = round(ratio * K))", "1"),
    "prob": ("probability of the option (softmax over A-D)", "1"),
    "baseline": ("unmodified model on the evaluation set", "see the metric coordinate"),
    "effect": ("metric of the cross-task intervention", "see the metric coordinate"),
    "count": ("selected neurons in the layer", "neurons"),
    "change": ("task-specific minus original neurons in the layer", "neurons"),
}


def _plain(var: xr.Variable) -> xr.Variable:
    return var.astype(object) if var.dtype.kind in "US" or isinstance(var.dtype, np.dtypes.StringDType) else var


def prepared(ds: xr.Dataset) -> xr.Dataset:
    """`ds` with variable-length strings and `LABELS` attributes (existing attributes win)."""
    ds = ds.copy()
    for name in list(ds.variables):
        var = _plain(ds.variables[name])
        if name in LABELS and var.dtype.kind in "fiub":
            long_name, units = LABELS[name]
            var.attrs = {"long_name": long_name, "units": units, **var.attrs}
        if name in ds.coords:  # through coords, so an index follows and a coordinate stays one
            ds = ds.assign_coords({name: var})
        else:
            ds[name] = var
    return ds


def write(ds: xr.Dataset, path, *, prepare: bool = True, **kwargs) -> None:
    """`ds.to_zarr(path, **kwargs)` with consolidated metadata and (unless `prepare` is False, as for
    a region write into an existing store) variable-length strings and labels."""
    with warnings.catch_warnings():
        # zarr says consolidated metadata is not yet in the v3 spec; xarray and zarr-python read it,
        # and the per-array metadata is written too, so other readers still open the store.
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        (prepared(ds) if prepare else ds).to_zarr(path, **kwargs)


def open_store(path, group: str | None = None) -> xr.Dataset:
    """Open an output store lazily, new or old (no consolidated metadata, dim `method`)."""
    ds = xr.open_zarr(Path(path), group=group, consolidated=False)
    return ds.rename(method="selector") if "method" in ds.dims else ds
