"""Validation shared by every layer: thread counts, k, ids, ints (one definition of each).

Private: the public API documents the rules where each argument is taken.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np

from . import _core


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: the most threads a call may ask for (the native core's bound, which its bindings check too)
MAX_THREADS = _core.MAX_THREADS
ALL_THREADS = min(_cpu_count(), MAX_THREADS)


def threads(threads: Optional[int]) -> int:
    """``threads=None`` -> every core this process may use; else an int in 1..MAX_THREADS."""
    if threads is None:
        return ALL_THREADS
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)):
        raise TypeError(f"threads must be an int or None, got {type(threads).__name__}")
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be between 1 and {MAX_THREADS}, got {threads}")
    return int(threads)


def check_k(k: Any) -> int:
    """``k``: an int >= 1 (not a bool)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(k)


def check_ids(ids: Any) -> Optional[np.ndarray]:
    """Validate the caller's ids (unique; all str or all int) -> an array (int64 or object)."""
    if ids is None:
        return None
    if isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__"):
        raise TypeError(f"ids must be a sequence of str or int, got {type(ids).__name__}")
    ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
    if all(isinstance(i, str) for i in ids):
        arr = np.empty(len(ids), dtype=object)
        arr[:] = ids
    elif all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        arr = np.asarray(ids, dtype=np.int64)
    else:
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, (str, int, np.integer)):
                raise TypeError(f"ids must be str or int, got {i!r} ({type(i).__name__})")
        raise TypeError("ids mix str and int: use one type for all of them")
    if len(set(ids)) != len(ids):
        seen = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise ValueError(f"duplicate id {dup!r} in ids")
    return arr


def check_int(name: str, value: Any, minimum: int) -> int:
    """An int (not a bool) >= minimum, else TypeError / ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
