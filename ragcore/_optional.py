"""Optional dependencies: import one with an error that names the extra to install; read a version."""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Optional


def require(module: str, what: str, hint: str):
    """``importlib.import_module(module)``; a missing module raises ImportError saying ``what`` needs it
    and how to install it (``hint``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"{what} needs the {module} package: {hint}") from e


def dist_version(dist: str) -> Optional[str]:
    """The installed version of the distribution ``dist``, or None."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
