"""nsneurons: good and bad neurons of a language model for a whole task (NeuronLLM, NA-ICA/QRNCA).

The public API is imported lazily so that `import nsneurons` (and the CLI's start-up) stays fast.
"""

from importlib import import_module

_EXPORTS = {
    # the user loop (nsneurons/api.py): task -> proxies -> score -> select -> intervene -> evaluate
    "proxies": "nsneurons.api",
    "score": "nsneurons.api",
    "select": "nsneurons.api",
    "enhance": "nsneurons.api",
    "degrade": "nsneurons.api",
    "evaluate": "nsneurons.api",
    "load_model": "nsneurons.models",
    "wrap": "nsneurons.models",
    "NeuronModel": "nsneurons.models",
    "AttributionConfig": "nsneurons.attribution",
    "attribute_proxy": "nsneurons.attribution",
    "attribute_proxies": "nsneurons.attribution",
    "score_proxies": "nsneurons.scoring",
    "open_scores": "nsneurons.store",
    "example_scores": "nsneurons.store",
    "METHODS": "nsneurons.selection",
    "TARGETS": "nsneurons.targets",
    "SITES": "nsneurons.architectures",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'nsneurons' has no attribute {name!r}")
