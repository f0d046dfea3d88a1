"""Hits: what every retriever's ``search`` returns."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np


def _is_cuda_array(x: Any) -> bool:
    """A device array (CuPy and the like): it has ``__cuda_array_interface__`` and is not numpy's."""
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


class Hits:
    """Top-k results of a batch of queries.

    ``k`` here is the width of the result: the ``k`` asked for, capped by the retrievers at the size of
    their collection (a 3-document index searched with ``k=10`` gives 3 columns).

    Attributes
    ----------
    indices : numpy.ndarray of int64, shape (n_queries, k)
        Document indices, best first; ``-1`` where fewer than ``k`` documents match.
    scores : numpy.ndarray of float32, shape (n_queries, k)
        Their scores; ``-inf`` where ``indices == -1``. A GPU index searched with CuPy queries returns
        both as CuPy arrays, on the device (zero-copy).
    ids : numpy.ndarray of object, shape (n_queries, k), or None
        The caller's document ids (``None`` at padding) when ids were given at indexing, else None.

    Examples
    --------
    >>> import ragcore as rc
    >>> hits = rc.BM25().index(["red fox", "blue fox"], ids=["r", "b"]).search("blue fox", k=2)
    >>> hits.ids.tolist()
    [['b', 'r']]
    """

    __slots__ = ("indices", "scores", "_id_table")

    def __init__(self, indices: np.ndarray, scores: np.ndarray, id_table: Optional[np.ndarray] = None) -> None:
        self.indices = indices
        self.scores = scores
        self._id_table = id_table

    @property
    def ids(self) -> Optional[np.ndarray]:
        if self._id_table is None:
            return None
        ind = self.indices
        if _is_cuda_array(ind):
            ind = ind.get()  # a device array (CuPy) of a GPU search: the ids are host objects
        out = np.full(ind.shape, None, dtype=object)  # None at padding (-1)
        valid = ind >= 0
        out[valid] = self._id_table[ind[valid]]  # O(n_queries * k), not O(n_docs)
        return out

    def __len__(self) -> int:
        return self.indices.shape[0]

    def __repr__(self) -> str:
        return f"Hits(n_queries={self.indices.shape[0]}, k={self.indices.shape[1]})"
