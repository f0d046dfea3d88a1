"""The ``filter=`` of every retriever's ``search``: a bool mask or the allowed ids -> one bool mask.

Shared by the sparse and dense retrievers, so that the same filter means the same thing everywhere
(the rules are stated once, in :class:`ragcore.Retriever`'s docstring):

* a numpy bool array, or a list / tuple of bool, is a mask over the documents: its length must be the
  number of documents (the range of ``Hits.indices``; deleted rows of a dense index included);
* anything else iterable (list, tuple, set, numpy array of another dtype, generator) is the allowed ids:
  the caller's ids when the index has ids, document indices (int) when it has none. Their order and
  duplicates do not matter; an empty one allows nothing;
* an id the index has never held raises ``ValueError`` (a mistyped id must not silently filter every
  document out); the id of a deleted dense row is accepted and matches nothing;
* a mapping (Mongo-style ``{"year": {"$gte": 2020}}`` filters are a Collection's), a str or bytes (one
  id: wrap it in a list), a number or None inside a sequence of ids -> ``TypeError``.

Private: the public docstrings state the rules where ``filter`` is taken.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Dict, Optional

import numpy as np

__all__ = ["allowed_mask"]


def _is_bool(x: Any) -> bool:
    return isinstance(x, (bool, np.bool_))


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not _is_bool(x)


def _kind(x: Any) -> str:
    return f"{type(x).__name__} ({x!r:.60})"


def _mask_of_indices(items: Any, n: int) -> np.ndarray:
    """Document indices (an int array, or a list checked here) -> the mask; each in [0, n)."""
    if isinstance(items, np.ndarray):
        idx = items.astype(np.int64, copy=False)
    else:
        for x in items:
            if not _is_int(x):
                raise TypeError(f"filter ids must be document indices (int) when the index has no ids, "
                                f"got {_kind(x)}")
        idx = np.asarray(items, dtype=np.int64) if items else np.empty(0, np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise ValueError(f"filter names document {bad}, outside [0, {n})")
    mask = np.zeros(n, dtype=np.bool_)
    mask[idx] = True
    return mask


def allowed_mask(filter: Any, n: int, ids: Optional[np.ndarray],
                 id_pos: Callable[[], Dict[Any, int]]) -> np.ndarray:
    """The documents a search may return, as a C-contiguous bool array (n,).

    Parameters
    ----------
    filter : bool mask or iterable of ids
        As the retrievers take it (see the module docstring); not None.
    n : int
        Number of documents (the mask's length; the range of document indices).
    ids : numpy.ndarray or None
        The index's id table (int64 or object of str), or None when it has no ids.
    id_pos : callable
        Returns the id -> document index map (called only for ids on an index with ids); an index at
        or past ``n`` counts as unknown (a row added after the search's snapshot).
    """
    if isinstance(filter, Mapping):
        raise TypeError(f"filter must be a bool mask or a sequence of ids, got a {type(filter).__name__} "
                        "(operators such as {'year': {'$gte': 2020}} filter a Collection, not a retriever)")
    if isinstance(filter, (str, bytes)):
        raise TypeError(f"filter must be a bool mask or a sequence of ids, got a {type(filter).__name__} "
                        f"({filter!r:.60}); wrap a single id in a list")
    if isinstance(filter, np.ndarray):
        if filter.dtype == np.bool_:
            if filter.shape != (n,):
                raise ValueError(f"filter mask must have shape ({n},) (one bool per document), got {filter.shape}")
            return np.ascontiguousarray(filter)  # the one documented copy, for non-contiguous masks
        if filter.ndim != 1:
            raise ValueError(f"filter ids must be a 1-D array, got shape {filter.shape}")
        if ids is None and filter.dtype.kind in "iu":
            return _mask_of_indices(filter, n)
        if filter.dtype.kind not in "iuOU":
            raise TypeError(f"filter must be a bool mask or an array of ids, got an array of dtype {filter.dtype}")
        items = filter.tolist()
    elif not hasattr(filter, "__iter__"):
        raise TypeError(f"filter must be a bool mask or a sequence of ids, got {_kind(filter)}")
    else:
        items = list(filter)
    if items and _is_bool(items[0]):  # a list of bool is a mask, never ids (True == 1 as a dict key)
        if not all(_is_bool(x) for x in items):
            bad = next(x for x in items if not _is_bool(x))
            raise TypeError(f"filter mixes bools (a mask) with {_kind(bad)}: pass a mask or ids, not both")
        if len(items) != n:
            raise ValueError(f"filter mask must have {n} entries (one bool per document), got {len(items)}")
        return np.array(items, dtype=np.bool_)
    if ids is None:
        return _mask_of_indices(items, n)
    want_str = ids.dtype == object
    ok = (lambda x: isinstance(x, str)) if want_str else _is_int
    pos = id_pos() if items else {}
    mask = np.zeros(n, dtype=np.bool_)
    for x in items:
        if not ok(x):
            raise TypeError(f"filter ids must be {'str' if want_str else 'int'} like the index's ids, got {_kind(x)}")
        j = pos.get(x)
        if j is None or j >= n:
            raise ValueError(f"filter names unknown id {x!r} (no document of this index has it)")
        mask[j] = True
    return mask
