"""The installed nsneurons version, for provenance and `nsneurons --version` (no heavy imports)."""

from __future__ import annotations


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nsneurons")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"
