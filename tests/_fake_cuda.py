"""A numpy stand-in for ``ragcore._cuda``, for tests of the Python layer above it (``DenseIndex(device=
"cuda")``: ids, deletes, growth, save/load) on machines without a GPU. It is NOT the CUDA code: it
follows the store's documented contract (rows rounded to the store's dtype, float32 scores, ties to the
lower row, -1 / -inf padding, k <= 1024) so that bookkeeping bugs above the kernels show up in CI.
"""
from __future__ import annotations

import numpy as np
from reference import round_to

MAX_K = 1024


def device_count() -> int:
    return 1


def device_name(device: int) -> str:
    if device != 0:
        raise ValueError(f"device must be 0, got {device}")
    return "numpy stand-in"


class DenseStore:
    def __init__(self, dim: int, dtype: str = "float32", device: int = 0) -> None:
        if dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}")
        self.dim, self.dtype = dim, dtype
        self._x = np.zeros((0, dim), np.float32)
        self._dead = np.zeros(0, bool)

    @property
    def size(self) -> int:
        return self._x.shape[0]

    def add(self, v: np.ndarray) -> None:
        if not isinstance(v, np.ndarray) or v.dtype != np.float32 or v.ndim != 2 or v.shape[1] != self.dim \
                or not v.flags.c_contiguous:
            raise TypeError(f"vectors must be a C-contiguous float32 array (n, {self.dim})")
        self._x = np.concatenate([self._x, round_to(v, self.dtype)])
        self._dead = np.concatenate([self._dead, np.zeros(len(v), bool)])

    def set_deleted(self, rows: np.ndarray) -> None:
        if not isinstance(rows, np.ndarray) or rows.dtype != np.int64:
            raise TypeError("indices must be an int64 array")
        if len(rows) and (rows.min() < 0 or rows.max() >= self.size):
            raise IndexError(f"a row index is out of range [0, {self.size})")
        self._dead[rows] = True

    def search(self, q: np.ndarray, k: int, skip=None):
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be in [1, {MAX_K}], got {k}")
        if not isinstance(q, np.ndarray) or q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != self.dim:
            raise TypeError(f"queries must be a float32 array (nq, {self.dim})")
        dead = self._dead
        if skip is not None:  # rows left out of this search, besides the tombstoned ones
            if not isinstance(skip, np.ndarray) or skip.dtype not in (np.bool_, np.uint8) or skip.shape != (self.size,) \
                    or not skip.flags.c_contiguous:
                raise TypeError(f"skip must be a C-contiguous bool or uint8 array ({self.size},)")
            dead = dead | skip.astype(bool)
        idx = np.full((len(q), k), -1, np.int64)
        sc = np.full((len(q), k), -np.inf, np.float32)
        live = np.flatnonzero(~dead)
        kk = min(k, len(live))
        if kk:
            s = (q.astype(np.float64) @ self._x[live].astype(np.float64).T).astype(np.float32)
            for j in range(len(q)):
                order = np.argsort(-s[j], kind="stable")[:kk]  # ties: lower row first (live is sorted)
                idx[j, :kk], sc[j, :kk] = live[order], s[j, order]
        return idx, sc

    def search_device(self, *args, **kwargs):
        raise ValueError("the numpy stand-in has no device memory")

    def to_host(self) -> np.ndarray:
        return self._x.copy()

    def __repr__(self) -> str:
        return f"<numpy stand-in DenseStore dim={self.dim} dtype={self.dtype} n={self.size}>"


class DeviceArray:
    """An array that, like CuPy's, has ``__cuda_array_interface__`` and ``get()`` and refuses an implicit
    conversion to numpy."""

    def __init__(self, a: np.ndarray) -> None:
        self._a = np.asarray(a)
        self.shape, self.dtype = self._a.shape, self._a.dtype

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (0, True), "version": 3}

    def get(self) -> np.ndarray:
        return self._a.copy()

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()`")
